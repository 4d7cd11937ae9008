//! Fault injection for the sim engine: test tooling, never for service.
//!
//! `engine = { type = "sim", faults = { ... } }` makes a simulated unit fail, panic or
//! hang on every N-th batch, or with a seeded probability per batch, so that the
//! service's answers to broken engines (every request answered, quarantine, hung-batch
//! deadlines, truthful metrics) can be tested end to end without broken hardware
//! (`tests/fault_abuse.rs`). Batches are counted per engine instance (per stream
//! worker); a replaced worker starts counting again.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::engine::EngineError;

/// Which faults to inject, and when. Every key defaults to "never".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// Fail every n-th batch with an engine error (0: never).
    #[serde(default)]
    pub fail_every: u64,
    /// Panic on every n-th batch (0: never).
    #[serde(default)]
    pub panic_every: u64,
    /// Hang on every n-th batch for `hang_ms` (0: never).
    #[serde(default)]
    pub hang_every: u64,
    /// Probability that a batch fails (0..=1), drawn from `seed`.
    #[serde(default)]
    pub fail_probability: f64,
    /// Probability that a batch panics (0..=1).
    #[serde(default)]
    pub panic_probability: f64,
    /// Probability that a batch hangs (0..=1).
    #[serde(default)]
    pub hang_probability: f64,
    /// How long a hang blocks the engine call, ms; it then finishes the batch late.
    #[serde(default = "default_hang_ms")]
    pub hang_ms: u64,
    /// Seed of the probability draws (mixed with the unit and stream).
    #[serde(default)]
    pub seed: u64,
}

fn default_hang_ms() -> u64 {
    3_600_000
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self {
            fail_every: 0,
            panic_every: 0,
            hang_every: 0,
            fail_probability: 0.0,
            panic_probability: 0.0,
            hang_probability: 0.0,
            hang_ms: default_hang_ms(),
            seed: 0,
        }
    }
}

impl FaultPlan {
    /// Checks the plan; the error names the key (under `prefix`, e.g.
    /// `engine.faults`).
    pub fn validate(&self, prefix: &str) -> Result<(), (String, String)> {
        for (key, value) in [
            ("fail_probability", self.fail_probability),
            ("panic_probability", self.panic_probability),
            ("hang_probability", self.hang_probability),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err((
                    format!("{prefix}.{key}"),
                    format!("must be a probability in [0, 1], got {value}"),
                ));
            }
        }
        if self.hang_ms == 0 || self.hang_ms > 86_400_000 {
            return Err((
                format!("{prefix}.hang_ms"),
                format!(
                    "must be between 1 and 86400000 (a day), got {}",
                    self.hang_ms
                ),
            ));
        }
        Ok(())
    }
}

/// What the injector decided for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Run the batch normally.
    None,
    /// Fail it.
    Fail,
    /// Panic.
    Panic,
    /// Block for the plan's hang time, then run it.
    Hang,
}

/// Applies a `FaultPlan` to one engine instance's batches.
#[derive(Debug)]
pub struct FaultInjector {
    plan: FaultPlan,
    batches: u64,
    rng: ChaCha8Rng,
}

impl FaultInjector {
    /// An injector for one engine instance; `stream_seed` tells instances apart.
    pub fn new(plan: FaultPlan, stream_seed: u64) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(plan.seed ^ stream_seed);
        Self {
            plan,
            batches: 0,
            rng,
        }
    }

    /// Decides the fault of the next batch (panic before hang before fail).
    pub fn decide(&mut self) -> Fault {
        self.batches += 1;
        let n = self.batches;
        let every = |k: u64| k > 0 && n.is_multiple_of(k);
        // Draw all three every batch, so that one probability's draws do not depend on
        // another's setting.
        let draws: [f64; 3] = [self.rng.random(), self.rng.random(), self.rng.random()];
        let plan = &self.plan;
        if every(plan.panic_every) || draws[0] < plan.panic_probability {
            Fault::Panic
        } else if every(plan.hang_every) || draws[1] < plan.hang_probability {
            Fault::Hang
        } else if every(plan.fail_every) || draws[2] < plan.fail_probability {
            Fault::Fail
        } else {
            Fault::None
        }
    }

    /// Carries out the next batch's fault: returns an error, panics, blocks, or does
    /// nothing.
    pub fn inject(&mut self) -> Result<(), EngineError> {
        let n = self.batches + 1;
        match self.decide() {
            Fault::None => Ok(()),
            Fault::Fail => Err(EngineError::Inference(format!(
                "injected fault (test tooling): batch {n} fails"
            ))),
            Fault::Panic => panic!("injected fault (test tooling): batch {n} panics"),
            Fault::Hang => {
                std::thread::sleep(Duration::from_millis(self.plan.hang_ms));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nth_batch_and_seeded_probabilities() {
        let plan = FaultPlan {
            fail_every: 3,
            panic_every: 5,
            ..FaultPlan::default()
        };
        let mut injector = FaultInjector::new(plan, 0);
        let faults: Vec<Fault> = (0..6).map(|_| injector.decide()).collect();
        use Fault::*;
        assert_eq!(faults, vec![None, None, Fail, None, Panic, Fail]);

        let plan = FaultPlan {
            hang_probability: 0.25,
            seed: 9,
            ..FaultPlan::default()
        };
        let draw = |plan: &FaultPlan| {
            let mut injector = FaultInjector::new(plan.clone(), 1);
            (0..400).map(|_| injector.decide()).collect::<Vec<_>>()
        };
        let first = draw(&plan);
        assert_eq!(first, draw(&plan), "the same seed gives the same faults");
        let hangs = first.iter().filter(|f| **f == Hang).count();
        assert!(
            (60..=140).contains(&hangs),
            "{hangs} hangs in 400 at p = 0.25"
        );
        assert!(first.iter().all(|f| matches!(f, None | Hang)));
    }

    #[test]
    fn bad_plans_name_the_key() {
        let plan = FaultPlan {
            fail_probability: 1.5,
            ..FaultPlan::default()
        };
        assert_eq!(
            plan.validate("engine.faults").unwrap_err().0,
            "engine.faults.fail_probability"
        );
        let plan = FaultPlan {
            hang_ms: 0,
            ..FaultPlan::default()
        };
        assert_eq!(
            plan.validate("engine.faults").unwrap_err().0,
            "engine.faults.hang_ms"
        );
    }
}
