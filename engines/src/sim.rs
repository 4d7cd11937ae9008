//! The `sim` engine: emulates a unit in real time from its profile.
//!
//! A batch takes the profile's service time for its size, stretched by a deterministic
//! seeded jitter and by contention with the other simulated units of the platform (the
//! shared `ContentionHub`). Outputs are a cheap deterministic function of the input, so
//! that serving paths have real tensors to return. Every figure it produces is labelled
//! `engine="sim"`: it emulates hardware, it never measures it.

use std::sync::Arc;
use std::time::Duration;

use mica_core::{Load, Profile, UnitKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::contention_hub::ContentionHub;
use crate::engine::{check_input, BatchInput, BatchOutput, Engine, EngineError, EngineInfo};
use crate::faults::FaultInjector;

/// Settings of one simulated engine instance.
#[derive(Debug, Clone)]
pub struct SimSettings {
    /// Index of the unit (its position in the config), for the contention model.
    pub unit: usize,
    /// The unit's kind.
    pub kind: UnitKind,
    /// GPU it uses or falls back to.
    pub device: Option<u32>,
    /// Largest batch accepted.
    pub max_batch: u32,
    /// Input elements per image.
    pub input_len: usize,
    /// Output elements per image.
    pub output_len: usize,
    /// Relative jitter of service times: each batch is scaled by a uniform factor in
    /// `1 ± jitter`.
    pub jitter: f64,
    /// Seed of the jitter sequence.
    pub seed: u64,
    /// Test tooling: faults to inject (`None` in service).
    pub faults: Option<crate::faults::FaultPlan>,
}

/// A simulated unit.
#[derive(Debug)]
pub struct SimEngine {
    settings: SimSettings,
    profile: Arc<Profile>,
    hub: Arc<ContentionHub>,
    rng: ChaCha8Rng,
    faults: Option<FaultInjector>,
}

impl SimEngine {
    /// An engine emulating `profile`, coupled to the others through `hub`.
    pub fn new(settings: SimSettings, profile: Arc<Profile>, hub: Arc<ContentionHub>) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(settings.seed);
        let faults = settings
            .faults
            .clone()
            .map(|plan| FaultInjector::new(plan, settings.seed));
        Self {
            faults,
            settings,
            profile,
            hub,
            rng,
        }
    }

    /// The isolated service time of a batch, jitter included.
    fn service_time(&mut self, images: u32) -> Duration {
        let base = self.profile.latency(images).as_secs_f64();
        let jitter = self.settings.jitter;
        let factor = if jitter > 0.0 {
            1.0 + self.rng.random_range(-jitter..=jitter)
        } else {
            1.0
        };
        mica_core::time::secs(base * factor)
    }
}

impl Engine for SimEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            engine: "sim",
            max_batch: self.settings.max_batch,
            input_len: self.settings.input_len,
            output_len: self.settings.output_len,
        }
    }

    fn infer(&mut self, input: BatchInput<'_>) -> Result<BatchOutput, EngineError> {
        check_input(&self.info(), &input)?;
        if let Some(faults) = &mut self.faults {
            faults.inject()?;
        }
        let work = self.service_time(input.images);
        let load = Load {
            unit: self.settings.unit,
            kind: self.settings.kind,
            device: self.settings.device,
            gpu_occupancy: self.profile.gpu_occupancy,
            bandwidth_gbps: self.profile.bandwidth_gbps(input.images),
            images: input.images,
        };
        self.hub.run(load, work);
        let data = match input.data {
            Some(data) => fake_logits(data, input.images as usize, self.settings.output_len),
            None => Vec::new(),
        };
        Ok(BatchOutput {
            images: input.images,
            per_image: self.settings.output_len,
            data,
        })
    }
}

/// A deterministic stand-in for a model's output: output `k` of an image is the mean of
/// the k-th of `output_len` equal slices of its input. Depends on the input, costs one
/// pass over it, and means nothing.
fn fake_logits(data: &[f32], images: usize, output_len: usize) -> Vec<f32> {
    let mut out = vec![0.0; images * output_len];
    if images == 0 || output_len == 0 {
        return out;
    }
    let per_image = data.len() / images;
    for (image, chunk) in data.chunks(per_image.max(1)).enumerate().take(images) {
        for (k, value) in out[image * output_len..(image + 1) * output_len]
            .iter_mut()
            .enumerate()
        {
            let start = k * chunk.len() / output_len;
            let end = ((k + 1) * chunk.len() / output_len)
                .max(start + 1)
                .min(chunk.len());
            if start < end {
                *value = chunk[start..end].iter().sum::<f32>() / (end - start) as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mica_core::contention::NoContention;
    use mica_core::{Clock, ManualClock, ProfileOrigin, ProfilePoint};

    fn engine(latency_ms: f64, jitter: f64) -> SimEngine {
        engine_on(latency_ms, jitter, Clock::system())
    }

    fn engine_on(latency_ms: f64, jitter: f64, clock: Clock) -> SimEngine {
        let profile = Profile {
            model: "m".into(),
            origin: ProfileOrigin::Calibrated,
            source: String::new(),
            overhead_ms: 0.0,
            gpu_occupancy: 0.0,
            points: vec![ProfilePoint {
                batch: 1,
                latency_ms,
                bandwidth_gbps: 0.0,
                source: String::new(),
            }],
        };
        SimEngine::new(
            SimSettings {
                unit: 0,
                kind: UnitKind::Cpu,
                device: None,
                max_batch: 4,
                input_len: 8,
                output_len: 2,
                jitter,
                seed: 7,
                faults: None,
            },
            Arc::new(profile),
            Arc::new(ContentionHub::with_clock(Box::new(NoContention), clock)),
        )
    }

    #[test]
    fn takes_the_profiled_time_of_its_clock() {
        let clock = ManualClock::new();
        let mut e = engine_on(20.0, 0.0, clock.clock());
        let work = e.profile.latency(2);
        let hub = e.hub.clone();
        let batch = std::thread::spawn(move || {
            e.infer(BatchInput {
                images: 2,
                data: None,
            })
            .unwrap()
        });
        hub.wait_for_batches(1);
        clock.advance(work - Duration::from_micros(1));
        assert!(!batch.is_finished(), "a microsecond of work is left");
        clock.advance(Duration::from_micros(1));
        assert_eq!(batch.join().unwrap().images, 2);
        assert_eq!(clock.elapsed(), work);
    }

    #[test]
    fn jitter_is_deterministic_for_a_seed() {
        let mut a = engine(10.0, 0.1);
        let mut b = engine(10.0, 0.1);
        let xs: Vec<_> = (0..5).map(|_| a.service_time(1)).collect();
        let ys: Vec<_> = (0..5).map(|_| b.service_time(1)).collect();
        assert_eq!(xs, ys);
        assert!(xs
            .iter()
            .all(|d| (9.0..=11.0).contains(&(d.as_secs_f64() * 1e3))));
    }

    #[test]
    fn outputs_depend_on_inputs_and_bad_inputs_are_refused() {
        let mut e = engine(0.01, 0.0);
        let input: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let out = e
            .infer(BatchInput {
                images: 2,
                data: Some(&input),
            })
            .unwrap();
        assert_eq!(out.data, vec![1.5, 5.5, 9.5, 13.5]);
        assert!(matches!(
            e.infer(BatchInput {
                images: 2,
                data: Some(&input[..3])
            }),
            Err(EngineError::BadInput { .. })
        ));
        assert!(matches!(
            e.infer(BatchInput {
                images: 5,
                data: None
            }),
            Err(EngineError::BatchTooLarge { .. })
        ));
    }
}
