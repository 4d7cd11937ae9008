//! The preprocessing pool: a fixed number of OS threads behind a bounded queue, for the
//! CPU-heavy part of a request (parsing large JSON tensors, decoding and resizing
//! images) — the pipelining paper's parallel pre-processing threads. Blocking work never
//! runs on the async executor; a full queue is an explicit overload.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender, TrySendError};
use tokio::sync::oneshot;
use tracing::warn;

use super::error::ServeError;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Retry advice when the pool's queue is full.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A bounded pool of preprocessing threads.
#[derive(Debug)]
pub struct PreprocessPool {
    queue: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl PreprocessPool {
    /// Starts `threads` threads (`mica-preprocess-<i>`) sharing a queue of `capacity`
    /// waiting jobs.
    pub fn new(threads: usize, capacity: usize) -> std::io::Result<Self> {
        Self::named("preprocess", threads, capacity)
    }

    /// Starts `threads` threads named `mica-<name>-<i>` sharing a queue of `capacity`
    /// waiting jobs.
    pub fn named(name: &str, threads: usize, capacity: usize) -> std::io::Result<Self> {
        let (queue, jobs) = bounded::<Job>(capacity);
        let threads = (0..threads.max(1))
            .map(|index| {
                let jobs = jobs.clone();
                std::thread::Builder::new()
                    .name(format!("mica-{name}-{index}"))
                    .spawn(move || {
                        for job in jobs {
                            job();
                        }
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            queue: Some(queue),
            threads,
        })
    }

    /// Queues `work`; resolves to its result. Fails at once with `Overloaded` when
    /// the queue is full. Work whose caller has gone away is skipped.
    pub fn spawn<T, F>(
        &self,
        work: F,
    ) -> Result<impl std::future::Future<Output = Result<T, ServeError>>, ServeError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ServeError> + Send + 'static,
    {
        let (respond, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            if respond.is_closed() {
                return;
            }
            let result = catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
                warn!("preprocessing panicked");
                Err(ServeError::Internal("preprocessing panicked".to_string()))
            });
            let _ = respond.send(result);
        });
        let queue = self.queue.as_ref().ok_or(ServeError::ShuttingDown)?;
        queue.try_send(job).map_err(|error| match error {
            TrySendError::Full(_) => ServeError::Overloaded {
                retry_after: RETRY_AFTER,
            },
            TrySendError::Disconnected(_) => ServeError::ShuttingDown,
        })?;
        Ok(async move {
            answer.await.unwrap_or_else(|_| {
                Err(ServeError::Internal(
                    "preprocessing thread stopped".to_string(),
                ))
            })
        })
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Jobs waiting for a thread now (taken ones not counted); for tests that wait
    /// for the pool to take a job.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queue.as_ref().map_or(0, Sender::len)
    }

    /// Jobs that may wait for a thread.
    pub fn capacity(&self) -> usize {
        self.queue
            .as_ref()
            .and_then(Sender::capacity)
            .unwrap_or_default()
    }
}

impl Drop for PreprocessPool {
    fn drop(&mut self) {
        self.queue.take();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                warn!("a preprocessing thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;

    #[test]
    fn runs_work_on_its_threads() {
        let pool = PreprocessPool::new(2, 4).unwrap();
        assert_eq!(pool.threads(), 2);
        let answer = pool
            .spawn(|| Ok(std::thread::current().name().map(str::to_owned)))
            .unwrap();
        let name = futures::executor::block_on(answer).unwrap().unwrap();
        assert!(name.starts_with("mica-preprocess-"), "{name}");
    }

    #[test]
    fn full_queue_is_overload() {
        let pool = PreprocessPool::new(1, 1).unwrap();
        let gate = Arc::new(Barrier::new(2));
        let held = gate.clone();
        let first = pool
            .spawn(move || {
                held.wait();
                Ok(1)
            })
            .unwrap();
        // The thread may or may not have taken the first job yet: fill the queue.
        let mut rejected = None;
        let mut queued = Vec::new();
        for _ in 0..3 {
            match pool.spawn(|| Ok(2)) {
                Ok(answer) => queued.push(answer),
                Err(error) => rejected = Some(error),
            }
        }
        let error = rejected.expect("a full queue rejects");
        assert_eq!(error.kind(), crate::serve::ErrorKind::Overloaded);
        gate.wait();
        assert_eq!(futures::executor::block_on(first).unwrap(), 1);
        for answer in queued {
            assert_eq!(futures::executor::block_on(answer).unwrap(), 2);
        }
    }

    #[test]
    fn a_panic_is_an_internal_error_and_the_thread_survives() {
        let pool = PreprocessPool::new(1, 2).unwrap();
        let answer = pool.spawn(|| -> Result<(), ServeError> { panic!("boom") });
        let error = futures::executor::block_on(answer.unwrap()).unwrap_err();
        assert_eq!(error.kind(), crate::serve::ErrorKind::Internal);
        let answer = pool.spawn(|| Ok(3)).unwrap();
        assert_eq!(futures::executor::block_on(answer).unwrap(), 3);
    }
}
