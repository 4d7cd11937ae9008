//! The property every policy must pass (quickwit's `proptest_merge_policy` pattern):
//! on random cluster views (some units unhealthy or without a free stream, random
//! profiles or none) and random queues, a policy with random parameters (within the
//! ranges its `validate` accepts) or its defaults never dispatches to a unit that cannot
//! take a batch, asks for 1..=max_batch images, sheds only ids present in the head, and
//! decides the same way when the same sequence is replayed. And it is live: on an idle
//! cluster (nothing in flight, a healthy unit) with requests waiting, it dispatches
//! within `LIVENESS_CALLS` decisions, shedding on the way at most, and never waits with
//! no time to be asked again (nothing would wake it: no batch is in flight to complete).

use std::sync::Arc;
use std::time::Duration;

use mica_core::{
    ClusterView, Completion, ContentionConfig, Decision, PccsParams, Policy, Profile,
    ProfileOrigin, ProfilePoint, QueueView, UnitId, UnitKind, UnitView, WaitingRequest,
};
use mica_policies::{
    build_policy, AdaptiveSettings, ContentionAwareSettings, PolicyConfig, SloSettings,
};
use proptest::prelude::*;

/// Decisions an idle cluster with waiting requests may take before one is a dispatch.
const LIVENESS_CALLS: usize = 16;

fn contention_strategy() -> impl Strategy<Value = Option<ContentionConfig>> {
    prop_oneof![
        Just(None),
        Just(Some(ContentionConfig::None)),
        (1.0f64..400.0).prop_map(
            |memory_bandwidth_gbps| Some(ContentionConfig::BandwidthShare {
                memory_bandwidth_gbps
            })
        ),
        Just(Some(ContentionConfig::Pccs(PccsParams::xavier_agx()))),
    ]
}

fn adaptive_strategy() -> impl Strategy<Value = AdaptiveSettings> {
    (
        (1u32..100, 0u32..8, 0.0f64..0.5, 1u64..100_000),
        (0.01f64..=1.0, 0.01f64..0.99, 0u32..20),
        (0.001f64..5.0, 0.0f64..60.0, 0.0f64..=1.0),
    )
        .prop_map(
            |(
                (epoch_batches, min_unit_batches, hysteresis, reexplore_batches),
                (ewma_weight, reject_margin, reject_after_batches),
                (epoch_seconds, search_extra_seconds, min_epoch_share),
            )| AdaptiveSettings {
                epoch_batches,
                min_unit_batches,
                hysteresis,
                reexplore_batches,
                ewma_weight,
                reject_margin,
                reject_after_batches,
                epoch_seconds,
                search_seconds: epoch_seconds + search_extra_seconds,
                min_epoch_seconds: epoch_seconds * min_epoch_share,
            },
        )
}

/// The policy of that name with its defaults or with random parameters. The match is
/// exhaustive, so a new policy with parameters does not compile here until it has a
/// strategy for them.
fn config_strategy(name: &str) -> BoxedStrategy<PolicyConfig> {
    let default = PolicyConfig::from_name(name).unwrap();
    let parameters = match default {
        PolicyConfig::RoundRobin | PolicyConfig::LeastLoaded | PolicyConfig::Weighted => {
            return Just(default).boxed()
        }
        PolicyConfig::ContentionAware(_) => contention_strategy()
            .prop_map(|contention| {
                PolicyConfig::ContentionAware(ContentionAwareSettings { contention })
            })
            .boxed(),
        PolicyConfig::Adaptive(_) => adaptive_strategy().prop_map(PolicyConfig::Adaptive).boxed(),
        PolicyConfig::Slo(_) => (1.0f64..3.0, 1usize..100, contention_strategy())
            .prop_map(|(latency_margin, max_scan, contention)| {
                PolicyConfig::Slo(SloSettings {
                    latency_margin,
                    max_scan,
                    contention,
                })
            })
            .boxed(),
    };
    prop_oneof![Just(default), parameters].boxed()
}

/// One config per policy, in `PolicyConfig::names()` order.
fn configs_strategy() -> impl Strategy<Value = Vec<PolicyConfig>> {
    PolicyConfig::names()
        .iter()
        .map(|name| config_strategy(name))
        .collect::<Vec<_>>()
}

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

/// Checks one decision against the contract.
fn check(name: &str, view: &ClusterView, queue: &QueueView<'_>, decision: &Decision) {
    match decision {
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
                    queue.head.iter().any(|r| r.id == *id),
                    "{name}: shed unknown id {id}"
                );
            }
        }
        Decision::Wait { .. } => {}
    }
}

/// Runs a policy over the steps; checks every decision; then checks it is live on the
/// last step's cluster made idle. Returns the decisions.
fn drive(config: &PolicyConfig, steps: &[Step]) -> Vec<Decision> {
    let name = config.name();
    assert_eq!(config.validate(), Ok(()), "{name}: generated {config:?}");
    let mut policy = build_policy(config);
    let mut decisions = Vec::new();
    let mut last = None;
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
        check(name, &view, &queue, &decision);
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
        last = Some((view, head, *fixed));
    }
    if let Some((view, head, fixed)) = last {
        decisions.extend(live(name, policy.as_mut(), view, head, fixed));
    }
    decisions
}

/// Asks the policy about `view` made idle (every stream free, nothing in flight, the
/// first unit healthy) with `head` waiting (one request if it is empty), advancing the
/// clock to each `Wait`'s `until`: the policy must dispatch within `LIVENESS_CALLS`
/// decisions (or shed the whole queue). Returns its decisions.
fn live(
    name: &str,
    policy: &mut dyn Policy,
    mut view: ClusterView,
    mut head: Vec<WaitingRequest>,
    fixed: Option<u32>,
) -> Vec<Decision> {
    for unit in &mut view.units {
        unit.free_streams = unit.streams;
        unit.in_flight_batches = 0;
        unit.in_flight_images = 0;
        unit.next_free_at = unit.next_free_at.min(view.now);
        unit.busy_until = unit.busy_until.min(view.now);
    }
    view.units[0].healthy = true;
    if head.is_empty() {
        head.push(WaitingRequest {
            id: 1,
            images: fixed.unwrap_or(1),
            arrival: view.now,
            deadline: None,
            priority: 0,
        });
    }
    let mut decisions = Vec::new();
    for _ in 0..LIVENESS_CALLS {
        let queue = QueueView {
            requests: head.len(),
            images: head.iter().map(|r| u64::from(r.images)).sum(),
            head: &head,
            fixed_batch: fixed,
        };
        let decision = policy.decide(&view, &queue);
        check(name, &view, &queue, &decision);
        decisions.push(decision.clone());
        match decision {
            Decision::Dispatch { .. } => return decisions,
            Decision::Shed { requests } => {
                head.retain(|r| !requests.contains(&r.id));
                if head.is_empty() {
                    return decisions;
                }
            }
            Decision::Wait { until: Some(until) } => view.now = view.now.max(until),
            Decision::Wait { until: None } => panic!(
                "{name}: waits with nothing in flight and no time to be asked again \
                 ({} requests waiting, units {:?})",
                head.len(),
                view.units
            ),
        }
    }
    panic!("{name}: no dispatch in {LIVENESS_CALLS} decisions on an idle cluster: {decisions:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_policy_respects_the_contract(
        steps in proptest::collection::vec(step_strategy(), 1..12),
        configs in configs_strategy(),
    ) {
        prop_assert_eq!(configs.len(), PolicyConfig::names().len());
        for config in &configs {
            let first = drive(config, &steps);
            let again = drive(config, &steps);
            prop_assert_eq!(first, again, "{:?} is not deterministic", config);
        }
    }
}
