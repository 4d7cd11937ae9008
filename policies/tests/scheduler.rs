//! The scheduler core (`mica_core::Scheduler`) driving real policies: partial batches,
//! queue delays, priorities, deadlines and drops.

use mica_core::profile::{Profile, ProfileOrigin, ProfilePoint};
use mica_core::unit::{UnitId, UnitKind};
use mica_core::*;
use mica_policies::least_loaded::LeastLoaded;
use mica_policies::round_robin::RoundRobin;
use std::sync::Arc;
use std::time::Duration;

fn unit(id: &str, latency_ms: f64, max_batch: u32) -> UnitSpec {
    UnitSpec {
        id: UnitId::new(id),
        kind: UnitKind::CudaFp32,
        device: Some(0),
        simulated: true,
        streams: 1,
        max_batch,
        profile: Some(profile(&[(1, latency_ms)])),
        run_sizes: Vec::new(),
        stagger_min_images: 0,
    }
}

/// A calibrated profile through these (batch, latency ms) points.
fn profile(points: &[(u32, f64)]) -> Arc<Profile> {
    Arc::new(Profile {
        model: "m".into(),
        origin: ProfileOrigin::Calibrated,
        source: String::new(),
        overhead_ms: 0.0,
        gpu_occupancy: 1.0,
        points: points
            .iter()
            .map(|&(batch, latency_ms)| ProfilePoint {
                batch,
                latency_ms,
                bandwidth_gbps: 0.0,
                source: String::new(),
            })
            .collect(),
    })
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn starts(actions: &[Action<u32>]) -> Vec<(usize, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { unit, images, .. } => Some((*unit, *images)),
            Action::Drop { .. } => None,
        })
        .collect()
}

#[test]
fn holds_a_partial_batch_until_the_queue_delay_passes() {
    let settings = SchedulerSettings {
        max_queue_delay: ms(2),
        ..Default::default()
    };
    let mut s = Scheduler::new(&[unit("a", 1.0, 4)], Box::new(RoundRobin::new()), settings);
    s.admit(ms(0), 1, 0, None, 1).unwrap();
    let mut actions = Vec::new();
    assert_eq!(s.poll(ms(0), &mut actions), Some(ms(2)));
    assert!(actions.is_empty());
    s.admit(ms(1), 1, 0, None, 2).unwrap();
    assert_eq!(s.poll(ms(2), &mut actions), None);
    assert_eq!(starts(&actions), vec![(0, 2)]);
}

/// A unit whose engine pads to powers of two (a GPU torch unit) gets 130 waiting images
/// as 128 now and 2 in the next batch, not as 256 with 126 rows of padding; 200 waiting
/// images go as they are (56 rows of padding waste less than 72 left waiting).
#[test]
fn a_released_batch_rounds_down_to_a_run_size_when_padding_would_waste_more() {
    let padded_unit = |id: &str| UnitSpec {
        streams: 2,
        run_sizes: vec![1, 2, 4, 8, 16, 32, 64, 128, 256],
        ..unit(id, 1.0, 256)
    };
    // The batches started once `waiting` one-image requests have waited out the delay.
    let released =
        |spec: UnitSpec, waiting: u32| poll_starts(&mut waiting_on(spec, waiting), ms(1));
    assert_eq!(released(padded_unit("gpu"), 130), vec![(0, 128), (0, 2)]);
    assert_eq!(released(padded_unit("gpu"), 200), vec![(0, 200)]);
    // A unit that runs every size as it is takes all 130.
    assert_eq!(released(unit("cpu", 1.0, 256), 130), vec![(0, 130)]);
}

/// A two-stream GPU-like unit that staggers from 64 images, with a profile of 8 ms at
/// 128 and 16 ms at 256 (so a share of 128 starts the next one 8 / 2 = 4 ms later).
fn staggering_unit(stagger_min_images: u32) -> UnitSpec {
    UnitSpec {
        streams: 2,
        run_sizes: vec![1, 2, 4, 8, 16, 32, 64, 128, 256],
        stagger_min_images,
        profile: Some(profile(&[(128, 8.0), (256, 16.0)])),
        ..unit("gpu", 1.0, 256)
    }
}

/// A scheduler over `spec` (dynamic batching, 1 ms queue delay) holding `waiting`
/// one-image requests that arrived at 0.
fn waiting_on(spec: UnitSpec, waiting: u32) -> Scheduler<u32> {
    let settings = SchedulerSettings {
        max_queue_delay: ms(1),
        ..Default::default()
    };
    let mut s = Scheduler::new(&[spec], Box::new(RoundRobin::new()), settings);
    for i in 0..waiting {
        s.admit(ms(0), 1, 0, None, i).unwrap();
    }
    s
}

/// The batches (unit, images) a poll at `now` starts.
fn poll_starts(s: &mut Scheduler<u32>, now: Duration) -> Vec<(usize, u32)> {
    let mut actions = Vec::new();
    s.poll(now, &mut actions);
    starts(&actions)
}

/// 256 one-image clients that each wait for their answer fill one batch of 256 and
/// leave the unit's second stream idle; staggered, the batch goes as two shares of
/// 128, the second 4 ms (a share's 8 ms over two streams) after the first.
#[test]
fn a_batch_that_would_empty_the_queue_goes_as_staggered_shares() {
    let mut s = waiting_on(staggering_unit(64), 256);
    let mut actions = Vec::new();
    assert_eq!(s.poll(ms(0), &mut actions), Some(ms(4)));
    assert_eq!(starts(&actions), vec![(0, 128)]);
    actions.clear();
    assert_eq!(
        s.poll(ms(3), &mut actions),
        Some(ms(4)),
        "held until the lag"
    );
    assert!(actions.is_empty());
    s.poll(ms(4), &mut actions);
    assert_eq!(starts(&actions), vec![(0, 128)]);
    assert_eq!(s.queued_images(), 0);
    assert_eq!(s.running_batches(), 2);
}

#[test]
fn a_unit_that_does_not_stagger_takes_the_whole_batch() {
    for spec in [staggering_unit(0), staggering_unit(257)] {
        assert_eq!(
            poll_starts(&mut waiting_on(spec, 256), ms(0)),
            vec![(0, 256)]
        );
    }
    // Fewer waiting than stagger_min_images: one batch, once the delay has passed.
    let mut s = waiting_on(staggering_unit(64), 32);
    assert_eq!(poll_starts(&mut s, ms(1)), vec![(0, 32)]);
}

/// Staggering is for a unit short of work: with more waiting than one batch, the unit
/// gets ordinary batches, and what is left after them is staggered only when it is at
/// least `stagger_min_images`.
#[test]
fn a_saturated_unit_is_not_staggered() {
    let mut s = waiting_on(staggering_unit(64), 600);
    assert_eq!(poll_starts(&mut s, ms(0)), vec![(0, 256), (0, 256)]);

    // 320 waiting: a full batch, then the 64 left go whole once the delay has passed.
    let mut s = waiting_on(staggering_unit(192), 320);
    assert_eq!(poll_starts(&mut s, ms(0)), vec![(0, 256)]);
    assert_eq!(poll_starts(&mut s, ms(1)), vec![(0, 64)]);
}

/// The stream workers answer the clients before the scheduler hears of the completion,
/// so the clients' next requests can arrive while the unit's last batch still counts
/// as running: the stagger does not wait for the unit to look idle.
#[test]
fn a_batch_still_counted_as_running_does_not_stop_the_stagger() {
    let mut s = waiting_on(staggering_unit(192), 500);
    let mut actions = Vec::new();
    s.poll(ms(0), &mut actions);
    // 256 at once (more waiting than a batch); the 244 left would all go in one batch
    // once the delay has passed: two shares of 122, the first then.
    s.poll(ms(1), &mut actions);
    assert_eq!(starts(&actions), vec![(0, 256), (0, 122)]);
    let Action::Start { batch: first, .. } = &actions[0] else {
        unreachable!()
    };
    let first = *first;
    actions.clear();
    // Both streams busy: the second share waits for the lag and for a free stream.
    s.poll(ms(10), &mut actions);
    assert!(actions.is_empty());
    s.complete(ms(10), first, None, true).unwrap();
    s.poll(ms(10), &mut actions);
    assert_eq!(starts(&actions), vec![(0, 122)]);
}

/// Without a profile the lag comes from what the unit measured; before its first batch
/// is measured nothing is staggered.
#[test]
fn without_a_profile_the_stagger_waits_for_a_measured_batch() {
    let spec = UnitSpec {
        profile: None,
        ..staggering_unit(64)
    };
    let mut s = waiting_on(spec, 256);
    let mut actions = Vec::new();
    s.poll(ms(0), &mut actions);
    assert_eq!(
        starts(&actions),
        vec![(0, 256)],
        "no service time known yet"
    );
    let Action::Start { batch, .. } = &actions[0] else {
        unreachable!()
    };
    // 256 images in 16 ms on one of two streams: a share of 128 takes 8 ms.
    s.complete(ms(16), *batch, Some(ms(16)), true).unwrap();
    for i in 0..256 {
        s.admit(ms(16), 1, 0, None, i).unwrap();
    }
    actions.clear();
    assert_eq!(s.poll(ms(16), &mut actions), Some(ms(20)));
    assert_eq!(starts(&actions), vec![(0, 128)]);
}

/// New requests arriving while the later share is held mean the unit is no longer
/// short of work: the rest goes at once as an ordinary batch.
#[test]
fn new_work_during_a_stagger_ends_it() {
    let mut s = waiting_on(staggering_unit(64), 256);
    assert_eq!(poll_starts(&mut s, ms(0)), vec![(0, 128)]);
    for i in 0..200 {
        s.admit(ms(1), 1, 0, None, i).unwrap();
    }
    assert_eq!(
        poll_starts(&mut s, ms(1)),
        vec![(0, 256)],
        "not held until 4 ms"
    );
}

/// A plan whose rest went away (here: expired) does not linger: requests arriving much
/// later are batched by the ordinary rules, held for the queue delay.
#[test]
fn a_stale_stagger_does_not_outlive_its_rest() {
    let mut s = waiting_on(staggering_unit(192), 128);
    for i in 128..256 {
        s.admit(ms(0), 1, 0, Some(ms(2)), i).unwrap();
    }
    assert_eq!(poll_starts(&mut s, ms(0)), vec![(0, 128)]);
    assert!(poll_starts(&mut s, ms(3)).is_empty());
    assert_eq!(s.queued_images(), 0, "the rest expired");
    let mut actions = Vec::new();
    for i in 0..10 {
        s.admit(ms(20), 1, 0, None, i).unwrap();
    }
    assert_eq!(s.poll(ms(20), &mut actions), Some(ms(21)));
    assert!(starts(&actions).is_empty(), "held for the queue delay");
}

#[test]
fn fixed_batches_are_never_staggered() {
    let settings = SchedulerSettings {
        fixed_batch: Some(256),
        ..Default::default()
    };
    let mut s = Scheduler::new(
        &[staggering_unit(64)],
        Box::new(RoundRobin::new()),
        settings,
    );
    s.admit(ms(0), 256, 0, None, 0).unwrap();
    let mut actions = Vec::new();
    s.poll(ms(0), &mut actions);
    assert_eq!(starts(&actions), vec![(0, 256)]);
}

#[test]
fn a_full_batch_goes_at_once_and_completion_frees_the_unit() {
    let mut s = Scheduler::new(
        &[unit("a", 1.0, 2)],
        Box::new(RoundRobin::new()),
        SchedulerSettings::default(),
    );
    for i in 0..5 {
        s.admit(ms(0), 1, 0, None, i).unwrap();
    }
    let mut actions = Vec::new();
    s.poll(ms(0), &mut actions);
    assert_eq!(starts(&actions), vec![(0, 2)]);
    assert_eq!(s.queued_requests(), 3);
    let batch = match &actions[0] {
        Action::Start {
            batch, requests, ..
        } => {
            assert_eq!(
                requests.iter().map(|r| r.payload).collect::<Vec<_>>(),
                vec![0, 1]
            );
            *batch
        }
        Action::Drop { .. } => unreachable!(),
    };
    let done = s.complete(ms(2), batch, None, true).unwrap();
    assert_eq!(done.images, 2);
    assert!(
        s.complete(ms(2), batch, None, true).is_none(),
        "completed twice"
    );
    actions.clear();
    s.poll(ms(2), &mut actions);
    assert_eq!(starts(&actions), vec![(0, 2)]);
}

#[test]
fn urgent_requests_go_first_and_full_levels_are_refused() {
    let settings = SchedulerSettings {
        queue_capacity: 2,
        fixed_batch: Some(1),
        ..Default::default()
    };
    let mut s = Scheduler::new(&[unit("a", 1.0, 1)], Box::new(RoundRobin::new()), settings);
    s.admit(ms(0), 1, 1, None, 10).unwrap();
    s.admit(ms(0), 1, 1, None, 11).unwrap();
    assert!(s.admit(ms(0), 1, 1, None, 12).is_err());
    s.admit(ms(0), 1, 0, None, 0).unwrap();
    let mut actions = Vec::new();
    s.poll(ms(0), &mut actions);
    match &actions[0] {
        Action::Start { requests, .. } => assert_eq!(requests[0].payload, 0),
        Action::Drop { .. } => panic!("nothing expires here"),
    }
    assert_eq!(
        s.check(2),
        Err(InvalidRequest::WrongBatch {
            images: 2,
            fixed: 1
        })
    );
}

#[test]
fn requests_with_deadlines_are_served_earliest_deadline_first() {
    let settings = SchedulerSettings {
        fixed_batch: Some(1),
        ..Default::default()
    };
    let mut s = Scheduler::new(&[unit("a", 1.0, 1)], Box::new(RoundRobin::new()), settings);
    s.admit(ms(0), 1, 0, None, 0).unwrap();
    s.admit(ms(0), 1, 0, Some(ms(50)), 1).unwrap();
    s.admit(ms(0), 1, 0, Some(ms(10)), 2).unwrap();
    s.admit(ms(0), 1, 0, Some(ms(30)), 3).unwrap();
    let mut order = Vec::new();
    let mut now = ms(0);
    while s.queued_requests() > 0 {
        let mut actions = Vec::new();
        s.poll(now, &mut actions);
        for action in actions {
            if let Action::Start {
                batch, requests, ..
            } = action
            {
                order.extend(requests.iter().map(|r| r.payload));
                s.complete(now, batch, None, true);
            }
        }
        now += ms(1);
    }
    assert_eq!(order, vec![0, 2, 3, 1]);
}

#[test]
fn expired_requests_are_dropped_not_run() {
    let mut s = Scheduler::new(
        &[unit("a", 10.0, 1)],
        Box::new(LeastLoaded::new()),
        SchedulerSettings::default(),
    );
    s.admit(ms(0), 1, 0, None, 0).unwrap();
    s.admit(ms(0), 1, 0, Some(ms(5)), 1).unwrap();
    let mut actions = Vec::new();
    assert_eq!(s.poll(ms(0), &mut actions), Some(ms(5)));
    assert_eq!(starts(&actions), vec![(0, 1)]);
    actions.clear();
    s.poll(ms(6), &mut actions);
    assert!(matches!(
        &actions[..],
        [Action::Drop { reason: DropReason::Expired, request }] if request.payload == 1
    ));
    assert_eq!(s.queued_requests(), 0);
}

#[test]
fn least_loaded_waits_for_the_fast_unit_rather_than_use_the_slow_one() {
    let mut s = Scheduler::new(
        &[unit("fast", 1.0, 1), unit("slow", 100.0, 1)],
        Box::new(LeastLoaded::new()),
        SchedulerSettings {
            fixed_batch: Some(1),
            ..Default::default()
        },
    );
    for i in 0..3 {
        s.admit(ms(0), 1, 0, None, i).unwrap();
    }
    let mut actions = Vec::new();
    s.poll(ms(0), &mut actions);
    // The fast unit takes one; the next would finish at 2 ms there vs 100 ms on the
    // slow unit, so the policy waits.
    assert_eq!(starts(&actions), vec![(0, 1)]);
}
