//! `Responder`: the one answer a request gets, shareable between the stream worker that
//! runs its batch and the unit actor that watches the batch's deadline.
//!
//! Whoever answers first wins; later answers are dropped. This is what lets a unit
//! answer the requests of a hung batch with an error while the hung engine call still
//! holds them, and ignore the late output if the call ever returns.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::service::{InferError, InferResponse};

/// What a request's caller receives.
pub type Answer = Result<InferResponse, InferError>;

type Slot = Option<oneshot::Sender<Answer>>;

/// A request's answer channel, answered at most once. Clones share the channel.
#[derive(Debug, Clone)]
pub struct Responder(Arc<Mutex<Slot>>);

impl Responder {
    /// A responder sending into `sender`.
    pub fn new(sender: oneshot::Sender<Answer>) -> Self {
        Self(Arc::new(Mutex::new(Some(sender))))
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        // The guarded value is a plain `Option`, valid whatever a panicking holder did.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends `answer` if nobody answered yet; returns whether this call answered. (The
    /// caller may have gone away: the answer is then dropped, which still counts.)
    pub fn answer(&self, answer: Answer) -> bool {
        match self.slot().take() {
            Some(sender) => {
                let _ = sender.send(answer);
                true
            }
            None => false,
        }
    }

    /// Answers with an error if nobody answered yet.
    pub fn fail(&self, error: InferError) -> bool {
        self.answer(Err(error))
    }

    /// Whether the request has been answered.
    pub fn is_answered(&self) -> bool {
        self.slot().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_answer_wins() {
        let (sender, mut receiver) = oneshot::channel();
        let responder = Responder::new(sender);
        let watcher = responder.clone();
        assert!(!watcher.is_answered());
        assert!(watcher.fail(InferError::TimedOut));
        assert!(!responder.fail(InferError::ShuttingDown));
        assert!(responder.is_answered());
        assert!(matches!(receiver.try_recv(), Ok(Err(InferError::TimedOut))));
    }
}
