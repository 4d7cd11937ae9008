//! `ByteBudget`: admission by bytes, for every front end.
//!
//! Request bodies being read and the tensors decoded from them (until their request is
//! answered) draw on one budget, `[server] memory_budget_bytes`. A reader grows its
//! `BytePermit` as data arrives, never by what a client announces, so a client that
//! announces 59 MiB and sends nothing holds nothing; when a permit cannot grow, the
//! request is refused (503 with `Retry-After`) instead of the process growing. Permits
//! release on `Drop`, so no error path leaks budget. Nothing here knows HTTP: the gRPC
//! front end draws on the same budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The budget is spent: `wanted` more bytes do not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server's memory budget for request data ({limit} bytes) is in use; {wanted} more bytes do not fit")]
pub struct OverBudget {
    /// Bytes asked for.
    pub wanted: usize,
    /// The whole budget.
    pub limit: usize,
}

/// A shared count of bytes held by requests, with a ceiling.
#[derive(Debug)]
pub struct ByteBudget {
    limit: usize,
    used: AtomicUsize,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// The ceiling.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// An empty permit that grows on this budget.
    pub fn permit(self: &Arc<Self>) -> BytePermit {
        BytePermit {
            budget: self.clone(),
            held: 0,
        }
    }

    fn take(&self, bytes: usize) -> Result<(), OverBudget> {
        let refused = OverBudget {
            wanted: bytes,
            limit: self.limit,
        };
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .map(|_| ())
            .map_err(|_| refused)
    }

    fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Bytes one request holds on a `ByteBudget`; released when dropped.
#[derive(Debug)]
pub struct BytePermit {
    budget: Arc<ByteBudget>,
    held: usize,
}

impl BytePermit {
    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Holds exactly `bytes` from now on: grows (refused if the budget cannot take the
    /// difference; the permit keeps what it held) or shrinks.
    pub fn hold(&mut self, bytes: usize) -> Result<(), OverBudget> {
        if bytes > self.held {
            self.budget.take(bytes - self.held)?;
        } else {
            self.budget.give(self.held - bytes);
        }
        self.held = bytes;
        Ok(())
    }
}

impl Drop for BytePermit {
    fn drop(&mut self) {
        self.budget.give(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_grow_within_the_ceiling_and_release_on_drop() {
        let budget = ByteBudget::new(100);
        let mut a = budget.permit();
        let mut b = budget.permit();
        a.hold(60).unwrap();
        assert_eq!(
            b.hold(50),
            Err(OverBudget {
                wanted: 50,
                limit: 100
            })
        );
        assert_eq!(b.held(), 0, "a refused permit keeps what it held");
        b.hold(40).unwrap();
        assert_eq!(budget.used(), 100);
        a.hold(10).unwrap();
        assert_eq!(budget.used(), 50);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(budget.permit().hold(usize::MAX).is_err());
    }
}
