//! The running actors with scripted engines: every accepted request is answered, whatever
//! the engines do (fail, panic, hang, fail to load), and the service keeps serving.
//!
//! The service runs on a `ManualClock`: time stands still unless a test advances it, so
//! batches never wait for a partial batch to fill (`max_queue_delay` is zero) and
//! deadlines, timeouts and drain times fire exactly when a test moves the clock past
//! them. Tests synchronise on events (an engine call blocked at the `Gate`, a status
//! round trip through the dispatcher), never on sleeps or wall-clock tolerances.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use mica_actors::{BatchDeadline, InferError, InferRequest, Service, ServiceSetup, UnitSetup};
use mica_core::contention::NoContention;
use mica_core::{
    HealthRules, ManualClock, SchedulerSettings, SearchProgress, UnitHealth, UnitId, UnitKind,
    UnitSpec,
};
use mica_engines::{
    check_input, BatchInput, BatchOutput, ContentionHub, Engine, EngineError, EngineInfo,
    EngineSettings, EngineSpec,
};
use mica_policies::PolicyConfig;
use tokio::sync::watch;

/// What a scripted engine does with batch number `n` (counted per engine).
#[derive(Clone, Copy, Debug)]
enum Script {
    /// Answers every batch: output = input + 1.
    Works,
    /// Fails every `n`-th batch with an error.
    FailsEvery(u64),
    /// Panics on every `n`-th batch.
    PanicsEvery(u64),
    /// Blocks on the first `n` batches the unit gets (counted over all its engines,
    /// replacements included) until the test opens the `Gate`.
    HangsFirst(u64),
    /// Fails to load.
    NeverLoads,
}

/// Where hung scripted engines wait; opened by the test so that their threads return
/// (and the late-answer path runs). Counts the calls that reached it, for the test to
/// wait on. A safety bound of `GATE_LIMIT` lets a failing test's threads end.
struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
    arrived: watch::Sender<usize>,
    /// Images of the batches blocked here.
    held_images: AtomicU64,
}

const GATE_LIMIT: Duration = Duration::from_secs(60);

impl Default for Gate {
    fn default() -> Self {
        Self {
            open: Mutex::new(false),
            changed: Condvar::new(),
            arrived: watch::Sender::new(0),
            held_images: AtomicU64::new(0),
        }
    }
}

impl Gate {
    fn wait(&self, images: u32) {
        let open = self.open.lock().unwrap();
        self.held_images
            .fetch_add(u64::from(images), Ordering::AcqRel);
        self.arrived.send_modify(|n| *n += 1);
        let _ = self
            .changed
            .wait_timeout_while(open, GATE_LIMIT, |open| !*open)
            .unwrap();
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }

    /// Resolves once `calls` engine calls have blocked here.
    async fn reached_by(&self, calls: usize) {
        self.arrived
            .subscribe()
            .wait_for(|n| *n >= calls)
            .await
            .expect("the gate lives as long as the test");
    }
}

struct Scripted {
    script: Script,
    batches: AtomicU64,
    /// Batches the whole unit got (`HangsFirst`).
    unit_batches: Arc<AtomicU64>,
    info: EngineInfo,
    gate: Arc<Gate>,
}

impl Engine for Scripted {
    fn info(&self) -> EngineInfo {
        self.info.clone()
    }

    fn infer(&mut self, input: BatchInput<'_>) -> Result<BatchOutput, EngineError> {
        check_input(&self.info, &input)?;
        let n = self.batches.fetch_add(1, Ordering::Relaxed) + 1;
        let of_unit = self.unit_batches.fetch_add(1, Ordering::Relaxed) + 1;
        match self.script {
            Script::FailsEvery(k) if n.is_multiple_of(k) => {
                return Err(EngineError::Inference(format!("scripted failure {n}")))
            }
            Script::PanicsEvery(k) if n.is_multiple_of(k) => panic!("scripted panic {n}"),
            Script::HangsFirst(k) if of_unit <= k => self.gate.wait(input.images),
            _ => {}
        }
        let data = input
            .data
            .map(|d| d.iter().map(|v| v + 1.0).collect())
            .unwrap_or_default();
        Ok(BatchOutput {
            images: input.images,
            per_image: self.info.output_len,
            data,
        })
    }
}

/// A service to start, the clock it runs on and the gate its hung engines wait at.
struct Fixture {
    setup: ServiceSetup,
    clock: ManualClock,
    gate: Arc<Gate>,
}

fn fixture(scripts: &[Script], policy: PolicyConfig, capacity: usize) -> Fixture {
    let clock = ManualClock::new();
    let gate = Arc::new(Gate::default());
    let units: Vec<UnitSetup> = scripts
        .iter()
        .enumerate()
        .map(|(index, _)| {
            let engine = EngineSpec::new(EngineSettings::Null, UnitKind::Cpu, 4, vec![2], 2)
                .with_unit(index, None, None)
                .with_seed(1);
            UnitSetup {
                spec: UnitSpec {
                    id: UnitId::new(&format!("u{index}")),
                    kind: UnitKind::Cpu,
                    device: None,
                    simulated: false,
                    streams: 2,
                    max_batch: 4,
                    profile: None,
                    run_sizes: Vec::new(),
                    stagger_min_images: 0,
                },
                engine,
            }
        })
        .collect();
    let scripts = scripts.to_vec();
    let unit_batches: Vec<Arc<AtomicU64>> = scripts.iter().map(|_| Arc::default()).collect();
    let engine_gate = gate.clone();
    let setup = ServiceSetup {
        units,
        policy,
        scheduler: SchedulerSettings {
            // Time stands still: a partial batch goes at once rather than wait for a
            // clock that nobody advances.
            max_queue_delay: Duration::ZERO,
            fixed_batch: None,
            queue_capacity: capacity,
            priority_levels: 2,
            health: HealthRules {
                failures_to_quarantine: 3,
                quarantine: Duration::from_millis(50),
            },
        },
        require_all_units: true,
        batch_deadline: BatchDeadline {
            factor: 0.0,
            floor: Duration::from_secs(5),
        },
        hub: Arc::new(ContentionHub::with_clock(
            Box::new(NoContention),
            clock.clock(),
        )),
        clock: clock.clock(),
        custom_engines: Some(Arc::new(move |spec: &EngineSpec| {
            let script = scripts[spec.unit];
            if let Script::NeverLoads = script {
                return Err(EngineError::Load("scripted load failure".into()));
            }
            Ok(Box::new(Scripted {
                script,
                batches: AtomicU64::new(0),
                unit_batches: unit_batches[spec.unit].clone(),
                info: EngineInfo {
                    engine: "scripted",
                    max_batch: spec.max_batch,
                    input_len: spec.input_len(),
                    output_len: spec.output_len,
                },
                gate: engine_gate.clone(),
            }) as Box<dyn Engine>)
        })),
        dispatcher_panic_after: None,
    };
    Fixture { setup, clock, gate }
}

fn setup(scripts: &[Script], policy: PolicyConfig, capacity: usize) -> ServiceSetup {
    fixture(scripts, policy, capacity).setup
}

/// Sends `count` one-image requests at once and sorts the answers.
async fn flood(service: &Service, count: usize) -> (usize, Vec<InferError>) {
    counted_flood(service, count, &watch::Sender::new(0)).await
}

/// `count` requests, each sent once the one before is answered: every stream is free
/// at each, so round_robin rotates them over the serving units. The errors.
async fn one_at_a_time(service: &Service, count: usize) -> Vec<InferError> {
    let mut errors = Vec::new();
    for i in 0..count {
        let answer = service
            .submit(InferRequest {
                images: 1,
                data: Some(vec![i as f32, 0.0]),
                priority: 0,
                timeout: None,
            })
            .await;
        errors.extend(answer.err());
    }
    errors
}

/// `flood`, counting the answers in `answered` as they come.
async fn counted_flood(
    service: &Service,
    count: usize,
    answered: &watch::Sender<usize>,
) -> (usize, Vec<InferError>) {
    let answers = futures::future::join_all((0..count).map(|i| async move {
        let answer = service
            .submit(InferRequest {
                images: 1,
                data: Some(vec![i as f32, -(i as f32)]),
                priority: (i % 2) as u8,
                timeout: None,
            })
            .await;
        answered.send_modify(|n| *n += 1);
        answer
    }))
    .await;
    let mut ok = 0;
    let mut errors = Vec::new();
    for (i, answer) in answers.into_iter().enumerate() {
        match answer {
            Ok(response) => {
                assert_eq!(
                    response.data,
                    vec![i as f32 + 1.0, 1.0 - i as f32],
                    "request {i} got another request's output"
                );
                ok += 1;
            }
            Err(error) => errors.push(error),
        }
    }
    (ok, errors)
}

#[actix_rt::test]
async fn healthy_units_answer_every_request_with_its_own_output() {
    let service = Service::start(setup(
        &[Script::Works, Script::Works],
        PolicyConfig::RoundRobin,
        1024,
    ))
    .unwrap();
    service.wait_ready().await.unwrap();
    let (ok, errors) = flood(&service, 500).await;
    assert_eq!((ok, errors.len()), (500, 0), "{errors:?}");
}

#[actix_rt::test]
async fn failing_and_panicking_engines_fail_only_their_batches() {
    for policy in [PolicyConfig::RoundRobin, PolicyConfig::LeastLoaded] {
        let least_loaded = matches!(policy, PolicyConfig::LeastLoaded);
        let service = Service::start(setup(
            &[Script::FailsEvery(3), Script::PanicsEvery(4), Script::Works],
            policy,
            1024,
        ))
        .unwrap();
        service.wait_ready().await.unwrap();
        let (ok, mut errors) = flood(&service, 600).await;
        assert_eq!(ok + errors.len(), 600, "every request answered");
        assert!(ok > 300, "the healthy unit keeps serving: {ok} ok");
        if !least_loaded {
            // Under load the panicking unit's workers can lag the others' through a
            // whole flood and reach no fourth batch. Requests one at a time rotate over
            // the three units (round_robin, every stream free at each), so 24 more give
            // it 8 batches: a fourth on some stream, whichever streams take them.
            errors.extend(one_at_a_time(&service, 24).await);
        }
        assert!(
            errors.iter().all(|e| matches!(e, InferError::Engine(_))),
            "only engine errors: {errors:?}"
        );
        // Round robin gives the panicking unit a third of the batches; least loaded
        // may give it too few (it avoids failing units) to reach a panic.
        assert!(
            least_loaded || errors.iter().any(|e| e.to_string().contains("panicked")),
            "panics are reported as such: {errors:?}"
        );
        // The workers survived their panics: another round still gets answers.
        let (ok_again, errors_again) = flood(&service, 100).await;
        assert_eq!(ok_again + errors_again.len(), 100);
        assert!(ok_again > 0);
    }
}

#[actix_rt::test]
async fn a_unit_that_never_loads_is_reported_and_requests_are_not_lost() {
    let service = Service::start(setup(
        &[Script::NeverLoads, Script::Works],
        PolicyConfig::RoundRobin,
        1024,
    ))
    .unwrap();
    let error = service.wait_ready().await.unwrap_err();
    assert!(error.to_string().contains("u0"), "{error}");
    assert!(!service.is_ready());
    let (ok, errors) = flood(&service, 200).await;
    assert_eq!(ok + errors.len(), 200, "every request answered");
    assert_eq!(
        ok, 200,
        "the unit that never loaded gets no batches: {errors:?}"
    );
}

#[actix_rt::test]
async fn a_full_queue_answers_overloaded_and_the_rest_are_served() {
    let service = Service::start(setup(&[Script::Works], PolicyConfig::LeastLoaded, 8)).unwrap();
    service.wait_ready().await.unwrap();
    let (ok, errors) = flood(&service, 300).await;
    assert_eq!(ok + errors.len(), 300);
    assert!(
        !errors.is_empty(),
        "a queue of 8 per level cannot take 300 at once"
    );
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, InferError::Overloaded { .. })),
        "{errors:?}"
    );
    assert!(ok >= 16);
}

#[actix_rt::test]
async fn oversized_requests_are_invalid_and_timeouts_expire_in_the_queue() {
    // The unit's two streams hang on their first batches; everything else queues.
    let Fixture { setup, clock, gate } =
        fixture(&[Script::HangsFirst(2)], PolicyConfig::LeastLoaded, 1024);
    let service = Service::start(setup).unwrap();
    service.wait_ready().await.unwrap();
    let too_big = service
        .submit(InferRequest {
            images: 5,
            data: None,
            priority: 0,
            timeout: None,
        })
        .await;
    assert!(
        matches!(too_big, Err(InferError::Invalid(_))),
        "{too_big:?}"
    );
    let burst = futures::future::join_all((0..400).map(|_| {
        service.submit(InferRequest {
            images: 1,
            data: None,
            priority: 0,
            timeout: Some(Duration::from_millis(1)),
        })
    }));
    let (answers, ()) = futures::join!(burst, async {
        gate.reached_by(2).await;
        // A status round trip: the dispatcher has admitted the whole burst.
        service.status().await.unwrap();
        clock.advance(Duration::from_millis(2));
    });
    // Nothing could finish: the queued requests expired in the queue, the two running
    // batches' requests timed out while their batches ran.
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Err(InferError::TimedOut))),
        "{answers:?}"
    );
    // The hung calls return; their late answers are dropped, and the unit serves.
    gate.open();
    let (ok, errors) = flood(&service, 50).await;
    assert_eq!((ok, errors.len()), (50, 0), "{errors:?}");
}

#[actix_rt::test]
async fn shutdown_answers_everything_accepted_and_refuses_new_work() {
    let service = Service::start(setup(&[Script::Works], PolicyConfig::RoundRobin, 4096)).unwrap();
    service.wait_ready().await.unwrap();
    let pending: Vec<_> = (0..300)
        .map(|i| {
            service.submit(InferRequest {
                images: 1,
                data: Some(vec![i as f32, 0.0]),
                priority: 0,
                timeout: None,
            })
        })
        .collect();
    let left = service.shutdown(Duration::from_secs(10)).await;
    assert_eq!(left, 0, "the drain time was long enough for all");
    let answers = futures::future::join_all(pending).await;
    assert!(answers.iter().all(|a| a.is_ok()), "accepted work finished");
    let after = service
        .submit(InferRequest {
            images: 1,
            data: None,
            priority: 0,
            timeout: None,
        })
        .await;
    assert!(matches!(after, Err(InferError::ShuttingDown)));
}

#[actix_rt::test]
async fn a_drain_time_over_answers_what_is_queued_and_lets_running_batches_finish() {
    let Fixture { setup, clock, gate } =
        fixture(&[Script::HangsFirst(2)], PolicyConfig::RoundRobin, 1024);
    let service = Service::start(setup).unwrap();
    service.wait_ready().await.unwrap();
    let pending: Vec<_> = (0..10)
        .map(|i| {
            service.submit(InferRequest {
                images: 1,
                data: Some(vec![i as f32, 0.0]),
                priority: 0,
                timeout: None,
            })
        })
        .collect();
    gate.reached_by(2).await;
    let (left, ()) = futures::join!(service.shutdown(Duration::from_secs(1)), async {
        service.status().await.unwrap();
        clock.advance(Duration::from_secs(1));
    });
    // Two requests run (one per stream, hung); the other eight were still queued.
    assert_eq!(
        left, 8,
        "the queued requests are answered at the drain time"
    );
    gate.open();
    let answers = futures::future::join_all(pending).await;
    let ok = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(ok, 2, "the running batches finished: {answers:?}");
    assert!(answers
        .iter()
        .all(|a| a.is_ok() || matches!(a, Err(InferError::ShuttingDown))));
}

#[actix_rt::test]
async fn swapping_the_policy_keeps_serving() {
    let service = Service::start(setup(
        &[Script::Works, Script::Works],
        PolicyConfig::RoundRobin,
        1024,
    ))
    .unwrap();
    service.wait_ready().await.unwrap();
    let first = flood(&service, 100);
    let old = service.set_policy(PolicyConfig::LeastLoaded).await.unwrap();
    assert_eq!(old, "round_robin");
    let (ok, errors) = first.await;
    assert_eq!((ok, errors.len()), (100, 0));
    let (ok, errors) = flood(&service, 100).await;
    assert_eq!((ok, errors.len()), (100, 0));
}

#[actix_rt::test]
async fn a_hung_engine_gets_its_batch_answered_and_its_worker_replaced() {
    // u0's two streams hang on their first batches; u1 serves.
    let Fixture {
        mut setup,
        clock,
        gate,
    } = fixture(
        &[Script::HangsFirst(2), Script::Works],
        PolicyConfig::RoundRobin,
        1024,
    );
    setup.batch_deadline.floor = Duration::from_millis(200);
    let service = Service::start(setup).unwrap();
    service.wait_ready().await.unwrap();
    let answered = watch::Sender::new(0usize);
    let ((ok, errors), ()) = futures::join!(counted_flood(&service, 300, &answered), async {
        gate.reached_by(2).await;
        // Everything but the two hung batches goes to u1 and is answered before time
        // moves: a batch of u1's still running when the clock jumps would pass its
        // deadline as well (seen under load).
        let held = gate.held_images.load(Ordering::Acquire) as usize;
        answered
            .subscribe()
            .wait_for(|n| *n == 300 - held)
            .await
            .unwrap();
        service.status().await.unwrap();
        // Just short of the deadline nothing is given up; at it, both batches are.
        clock.advance(Duration::from_millis(199));
        let status = service.status().await.unwrap();
        assert!(!status.units[0].replacing_worker, "{:?}", status.units[0]);
        clock.advance(Duration::from_millis(1));
    });
    assert_eq!(ok + errors.len(), 300, "every request answered");
    assert!(
        (2..=8).contains(&errors.len()),
        "the two hung batches' requests: {errors:?}"
    );
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, InferError::Engine(m) if m.contains("deadline"))),
        "hung batches are answered as such: {errors:?}"
    );
    assert!(service.alive().is_ok());
    // Let the hung calls return: their late answers are ignored, nothing is answered
    // twice, and the service still serves (the replacement workers do not hang).
    gate.open();
    let (ok_again, errors_again) = flood(&service, 100).await;
    assert_eq!((ok_again, errors_again.len()), (100, 0), "{errors_again:?}");
    assert!(service.is_ready());
}

#[actix_rt::test]
async fn a_request_timeout_is_honoured_while_its_batch_runs() {
    let Fixture {
        mut setup,
        clock,
        gate,
    } = fixture(&[Script::HangsFirst(1)], PolicyConfig::LeastLoaded, 1024);
    // A deadline far beyond the request's timeout: the timeout must answer first.
    setup.batch_deadline.floor = Duration::from_secs(20);
    let service = Service::start(setup).unwrap();
    service.wait_ready().await.unwrap();
    let (answer, ()) = futures::join!(
        service.submit(InferRequest {
            images: 1,
            data: Some(vec![1.0, 2.0]),
            priority: 0,
            timeout: Some(Duration::from_millis(100)),
        }),
        async {
            gate.reached_by(1).await;
            clock.advance(Duration::from_millis(100));
        }
    );
    // 100 ms of the batch's 20 s deadline have passed: only the timeout can answer.
    assert!(matches!(answer, Err(InferError::TimedOut)), "{answer:?}");
    assert_eq!(clock.elapsed(), Duration::from_millis(100));
    gate.open();
}

#[actix_rt::test]
async fn a_dead_dispatcher_is_reported_and_no_request_hangs() {
    let mut setup = setup(&[Script::Works], PolicyConfig::RoundRobin, 1024);
    setup.dispatcher_panic_after = Some(50);
    let service = Service::start(setup).unwrap();
    service.wait_ready().await.unwrap();
    assert!(service.alive().is_ok() && service.is_ready());
    let (ok, errors) = flood(&service, 200).await;
    assert_eq!(ok + errors.len(), 200, "every request answered");
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, InferError::Unavailable(_))),
        "{errors:?}"
    );
    assert!(!errors.is_empty());
    assert!(service.alive().is_err(), "the dead dispatcher is seen");
    assert!(!service.is_ready(), "a dead service is not ready");
}

#[actix_rt::test]
async fn status_names_the_offline_and_the_quarantined_units_and_the_search() {
    let service = Service::start(setup(
        &[Script::NeverLoads, Script::FailsEvery(1), Script::Works],
        PolicyConfig::RoundRobin,
        1024,
    ))
    .unwrap();
    // Settles once every unit has loaded or failed: the failure is reported, the rest
    // are warm.
    let error = service.wait_settled().await.unwrap_err();
    assert!(error.to_string().contains("u0"), "{error}");
    let (ok, errors) = flood(&service, 200).await;
    assert_eq!(ok + errors.len(), 200, "every request answered");
    // Under load the failing unit's worker threads can lag the other unit's through a
    // whole flood and get fewer than three batches of it. Requests one at a time
    // alternate between the two serving units (round_robin, every stream free at each),
    // so six more give it three failures in a row, whatever the flood left.
    one_at_a_time(&service, 6).await;
    let status = service.status().await.unwrap();
    assert_eq!(status.policy, "round_robin");
    assert_eq!(status.search, None, "round_robin does not search");
    assert!(status.units[0].offline, "{:?}", status.units[0]);
    assert!(
        !status.units[1].offline && status.units[1].quarantines > 0,
        "a unit failing every batch is quarantined: {:?}",
        status.units[1]
    );
    assert_eq!(status.units[2], UnitHealth::default());

    let service = Service::start(setup(
        &[Script::Works, Script::Works],
        PolicyConfig::from_name("adaptive").unwrap(),
        1024,
    ))
    .unwrap();
    service.wait_settled().await.unwrap();
    let (ok, _) = flood(&service, 100).await;
    assert_eq!(ok, 100);
    let status = service.status().await.unwrap();
    assert!(
        matches!(status.search, Some(SearchProgress::Searching { batches }) if batches > 0)
            || matches!(status.search, Some(SearchProgress::Converged { .. })),
        "adaptive reports its search: {:?}",
        status.search
    );
}
