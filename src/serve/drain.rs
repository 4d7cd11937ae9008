//! Shutdown progress, shared by every front end: once a drain begins, readiness says
//! no and connections close after their answer; once the drain time is over, requests
//! still running are answered "server is shutting down".

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Shutdown progress, shared with the handlers of every protocol.
#[derive(Debug)]
pub struct Drain {
    draining: AtomicBool,
    begun: watch::Sender<bool>,
    deadline: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            draining: AtomicBool::new(false),
            begun: watch::channel(false).0,
            deadline: watch::channel(false).0,
        }
    }
}

impl Drain {
    /// Whether a shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// A shutdown begins.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::Release);
        self.begun.send_replace(true);
    }

    /// Resolves once a shutdown has begun (never, if none does): long-lived calls
    /// (gRPC streams) take no new request from then on.
    pub async fn begun(&self) {
        wait_true(&self.begun).await;
    }

    /// The drain time is over.
    pub fn deadline_reached(&self) {
        self.deadline.send_replace(true);
    }

    /// Resolves once the drain time is over (never, if no shutdown begins).
    pub async fn deadline_passed(&self) {
        wait_true(&self.deadline).await;
    }
}

async fn wait_true(flag: &watch::Sender<bool>) {
    let mut flag = flag.subscribe();
    if flag.wait_for(|set| *set).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_wakes_waiters_once_reached() {
        let drain = Drain::default();
        assert!(!drain.is_draining());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let waiting = drain.deadline_passed();
            tokio::pin!(waiting);
            let begun = drain.begun();
            tokio::pin!(begun);
            assert!(futures::poll!(&mut waiting).is_pending());
            assert!(futures::poll!(&mut begun).is_pending());
            drain.begin();
            begun.await;
            assert!(drain.is_draining());
            assert!(futures::poll!(&mut waiting).is_pending());
            drain.deadline_reached();
            waiting.await;
            drain.deadline_passed().await;
        });
    }
}
