//! The property every policy must pass (quickwit's `proptest_merge_policy` pattern):
//! on random cluster views (some units unhealthy or without a free stream, random
//! profiles or none) and random queues, a policy never dispatches to a unit that cannot
//! take a batch, asks for 1..=max_batch images, sheds only ids present in the head, and
//! decides the same way when the same sequence is replayed.

use std::sync::Arc;
use std::time::Duration;

use mica_policies::{
    build_policy, ClusterView, Completion, Decision, PolicyConfig, Profile, ProfileOrigin,
    ProfilePoint, QueueView, UnitId, UnitKind, UnitView, WaitingRequest,
};
use proptest::prelude::*;

fn profile_strategy() -> impl Strategy<Value = Option<Profile>> {
    proptest::option::of(
        (
            0.0f64..5.0,
            0.0f64..1.0,
            proptest::collection::vec((1u32..8, 0.1f64..50.0, 0.0f64..150.0), 1..5),
        )
            .prop_map(|(overhead_ms, gpu_occupancy, steps)| {
                let mut batch = 0;
                let mut latency = 0.0;
                let points = steps
                    .into_iter()
                    .map(|(step, ms, bandwidth_gbps)| {
                        batch += step;
                        latency += ms;
                        ProfilePoint {
                            batch,
                            latency_ms: latency,
                            bandwidth_gbps,
                            source: String::new(),
                        }
                    })
                    .collect();
                Profile {
                    model: "p".into(),
                    origin: ProfileOrigin::Calibrated,
                    source: String::new(),
                    overhead_ms,
                    gpu_occupancy,
                    points,
                }
            }),
    )
}

fn unit_strategy() -> impl Strategy<Value = UnitView> {
    (
        0usize..UnitKind::ALL.len(),
        1u32..4,
        0u32..4,
        1u32..65,
        any::<bool>(),
        0u64..3,
        0.0f64..500.0,
        0u64..50,
        profile_strategy(),
    )
        .prop_map(
            |(kind, streams, busy, max_batch, healthy, completed, rate, free_ms, profile)| {
                let kind = UnitKind::ALL[kind];
                let busy = busy.min(streams);
                UnitView {
                    id: UnitId::new("u"),
                    kind,
                    device: (kind != UnitKind::Cpu).then_some(0),
                    simulated: true,
                    streams,
                    free_streams: streams - busy,
                    in_flight_batches: busy,
                    in_flight_images: busy * max_batch.min(4),
                    max_batch,
                    next_free_at: Duration::from_millis(free_ms),
                    busy_until: Duration::from_millis(free_ms * 2),
                    recent_throughput_img_s: if completed > 0 { rate } else { 0.0 },
                    recent_latency_ms: if completed > 0 { 10.0 } else { 0.0 },
                    completed_batches: completed,
                    healthy,
                    profile: profile.map(Arc::new),
                }
            },
        )
}

fn request_strategy() -> impl Strategy<Value = WaitingRequest> {
    (
        0u64..1_000,
        1u32..9,
        0u64..20,
        proptest::option::of(0u64..400),
    )
        .prop_map(|(id, images, arrival, deadline)| WaitingRequest {
            id,
            images,
            arrival: Duration::from_millis(arrival),
            deadline: deadline.map(Duration::from_millis),
            priority: 0,
        })
}

/// One step: a view, a queue head, a fixed batch or not, and a completion to feed.
type Step = (Vec<UnitView>, Vec<WaitingRequest>, Option<u32>, u32, u64);

fn step_strategy() -> impl Strategy<Value = Step> {
    (
        proptest::collection::vec(unit_strategy(), 1..7),
        proptest::collection::vec(request_strategy(), 0..12),
        proptest::option::of(1u32..9),
        1u32..64,
        0u64..100,
    )
}

/// Runs a policy over the steps; checks every decision; returns them.
fn drive(name: &str, seed: u64, steps: &[Step]) -> Vec<Decision> {
    let config = PolicyConfig::from_name(name).unwrap();
    let mut policy = build_policy(&config, seed);
    let mut decisions = Vec::new();
    for (index, (units, head, fixed, extra_images, now_ms)) in steps.iter().enumerate() {
        let mut head = head.clone();
        // Ids are unique within a queue.
        for (i, r) in head.iter_mut().enumerate() {
            r.id = r.id * 16 + i as u64;
        }
        let head = if let Some(n) = fixed {
            head.iter()
                .map(|r| WaitingRequest { images: *n, ..*r })
                .collect()
        } else {
            head
        };
        let images: u64 = head.iter().map(|r| u64::from(r.images)).sum::<u64>()
            + if head.is_empty() {
                0
            } else {
                u64::from(*extra_images)
            };
        let view = ClusterView {
            now: Duration::from_millis(*now_ms + index as u64 * 10),
            units: units.clone(),
        };
        let queue = QueueView {
            requests: head.len() + usize::from(!head.is_empty()),
            images,
            head: &head,
            fixed_batch: *fixed,
        };
        let decision = policy.decide(&view, &queue);
        match &decision {
            Decision::Dispatch { unit, images } => {
                let target = view.units.get(*unit).expect("unit index in range");
                assert!(
                    target.can_take_batch(),
                    "{name}: dispatched to unit {unit} that cannot take a batch"
                );
                assert!(
                    (1..=target.max_batch).contains(images),
                    "{name}: {images} images for max_batch {}",
                    target.max_batch
                );
                assert!(queue.requests > 0, "{name}: dispatched from an empty queue");
            }
            Decision::Shed { requests } => {
                assert!(!requests.is_empty(), "{name}: empty shed");
                for id in requests {
                    assert!(
                        head.iter().any(|r| r.id == *id),
                        "{name}: shed unknown id {id}"
                    );
                }
            }
            Decision::Wait { .. } => {}
        }
        // Feed a completion from some unit so that learning policies move.
        let unit = (*extra_images as usize) % view.units.len();
        policy.on_completion(
            &view,
            &Completion {
                unit,
                images: 1 + extra_images % 8,
                started: view
                    .now
                    .saturating_sub(Duration::from_millis(5 + *now_ms % 20)),
                finished: view.now,
                ok: now_ms % 7 != 0,
            },
        );
        let _ = policy.predicted_slowdowns(&view);
        decisions.push(decision);
    }
    decisions
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_policy_respects_the_contract(
        steps in proptest::collection::vec(step_strategy(), 1..12),
        seed in any::<u64>(),
    ) {
        for name in PolicyConfig::NAMES {
            let first = drive(name, seed, &steps);
            let again = drive(name, seed, &steps);
            prop_assert_eq!(first, again, "{} is not deterministic", name);
        }
    }
}
