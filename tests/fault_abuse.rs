//! The fault-and-abuse suite: `mica serve` as a child process on loopback, on simulated
//! units, under injected faults (a dispatcher panic, engines that fail, panic or hang)
//! and hostile clients. Every case checks that every accepted request is answered and
//! none lost, that readiness and metrics tell the truth, and that the process recovers
//! or exits as designed (docs/NOTES.md, "Supervision").
//!
//! Each case prints one row of the table in the issue-13 note (what was sent, what came
//! back, accepted / answered / lost, peak RSS against the budget, a good client's p99
//! with and without the abuse); with `MICA_ABUSE_REPORT=<file>` the rows are appended
//! there too. Every loop is bounded in count and in time.

mod serve_support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serve_support::{bytes_tensor, free_port, get, json_infer, ChildServer};

/// A server under test: its config, process and addresses.
struct Fixture {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    metrics: SocketAddr,
}

/// A sim unit's profile: `latency_ms` for one image, 4 × that for eight.
fn profile(dir: &Path, name: &str, latency_ms: f64) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "model = \"tiny\"\npoints = [{{ batch = 1, latency_ms = {latency_ms} }}, \
             {{ batch = 8, latency_ms = {} }}]\n",
            latency_ms * 4.0
        ),
    )
    .unwrap();
    path
}

/// One `[[units]]` entry for a sim unit (`faults`: a fault plan, or empty).
fn sim_unit(id: &str, profile: &Path, faults: &str) -> String {
    let faults = if faults.is_empty() {
        String::new()
    } else {
        format!(", faults = {faults}")
    };
    format!(
        "[[units]]\nid = \"{id}\"\nkind = \"cpu\"\n\
         engine = {{ type = \"sim\", jitter = 0.0{faults} }}\nstreams = 1\n\
         max_batch = 8\nprofile = \"{}\"\n\n",
        profile.display()
    )
}

impl Fixture {
    /// A config with the tiny model, `scheduler` and `server` lines added to their
    /// sections, and these units.
    fn new(scheduler: &str, server: &str, units: impl Fn(&Path) -> String) -> Self {
        Self::with_model("", scheduler, server, units)
    }

    /// Like `new`, with `model` lines added to the `[model]` section.
    fn with_model(
        model: &str,
        scheduler: &str,
        server: &str,
        units: impl Fn(&Path) -> String,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let metrics_port = free_port();
        let units = units(dir.path());
        let text = format!(
            "[platform]\nname = \"fault suite (simulated)\"\n\n\
             [scheduler]\npolicy = {{ type = \"least_loaded\" }}\nmax_queue_delay_us = 500\n\
             {scheduler}\n\n\
             [model]\nname = \"tiny\"\ninput_shape = [3, 4, 4]\noutput_shape = [5]\nmax_batch = 8\n{model}\n\n\
             [server]\naddress = \"127.0.0.1\"\nport = {port}\ngrpc_port = 0\n{server}\n\n\
             [metrics]\naddress = \"127.0.0.1\"\nport = {metrics_port}\n\n{units}"
        );
        std::fs::write(dir.path().join("mica.toml"), text).unwrap();
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            metrics: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
            dir,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("mica.toml")
    }

    /// Starts `mica serve` with extra environment variables.
    fn start(&self, env: &[(&str, &str)]) -> ChildServer {
        let log = self.dir.path().join("serve.log");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mica"));
        command
            .args(["serve", "--config"])
            .arg(self.config())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("mica serve starts");
        ChildServer { child, log }
    }

    /// The metric samples whose series name starts with `prefix`.
    fn metrics(&self, prefix: &str) -> BTreeMap<String, f64> {
        let response = get(self.metrics, "/metrics");
        assert_eq!(response.status, 200);
        String::from_utf8_lossy(&response.body)
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect()
    }
}

/// What a batch of clients got back: status code → count, and the latencies of 200s.
#[derive(Debug, Default)]
struct Outcome {
    statuses: BTreeMap<u16, usize>,
    /// Connections refused: the server was gone, nothing was accepted.
    refused: usize,
    /// Requests written on an accepted connection that got no complete HTTP answer.
    lost: usize,
    latencies: Vec<Duration>,
}

impl Outcome {
    fn accepted(&self) -> usize {
        self.statuses.values().sum::<usize>() + self.lost
    }

    fn answered(&self) -> usize {
        self.statuses.values().sum()
    }

    fn p99(&self) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted
            .get((sorted.len() * 99).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }

    fn median(&self) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted.get(sorted.len() / 2).copied().unwrap_or_default()
    }

    fn came_back(&self) -> String {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, count)| format!("{count}×{status}"))
            .collect();
        if self.refused > 0 {
            parts.push(format!("{} refused (process gone)", self.refused));
        }
        parts.join(", ")
    }

    fn add(&mut self, answer: Answer, latency: Duration) {
        match answer {
            Answer::Status(status) => {
                *self.statuses.entry(status).or_default() += 1;
                if status == 200 {
                    self.latencies.push(latency);
                }
            }
            Answer::Refused => self.refused += 1,
            Answer::Lost => self.lost += 1,
        }
    }
}

/// What one request got.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Status(u16),
    Refused,
    Lost,
}

/// POSTs `body` to the tiny model with `Connection: close`, reading at most 60 s.
fn infer(addr: SocketAddr, body: &[u8]) -> Answer {
    post_infer(addr, body, None).0
}

/// POSTs `body` (JSON, or with `header_length` its JSON header's length and binary
/// data after it) to the tiny model with `Connection: close`, reading at most 60 s;
/// the answer and its text.
fn post_infer(addr: SocketAddr, body: &[u8], header_length: Option<usize>) -> (Answer, String) {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return (Answer::Refused, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let binary = header_length.map_or(String::new(), |length| {
        format!("Inference-Header-Content-Length: {length}\r\n")
    });
    let head = format!(
        "POST /v2/models/tiny/infer HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\n{binary}Content-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let mut data = Vec::new();
    let _ = stream.read_to_end(&mut data);
    let text = String::from_utf8_lossy(&data).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    match status {
        Some(status) if text.contains("\r\n\r\n") => (Answer::Status(status), text),
        _ => (Answer::Lost, text),
    }
}

/// `clients` threads each sending up to `each` one-image JSON requests, one at a time;
/// with `back_off`, a client stops after its first 503 (as a real one would).
fn run_clients(addr: SocketAddr, clients: usize, each: usize, back_off: bool) -> Outcome {
    let body = json_infer(1).to_string().into_bytes();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut out = Vec::with_capacity(each);
                for _ in 0..each {
                    let started = Instant::now();
                    let answer = infer(addr, &body);
                    out.push((answer, started.elapsed()));
                    if back_off && answer == Answer::Status(503) {
                        break;
                    }
                }
                out
            })
        })
        .collect();
    let mut outcome = Outcome::default();
    for thread in threads {
        for (answer, latency) in thread.join().unwrap() {
            outcome.add(answer, latency);
        }
    }
    outcome
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// One row of the scenario table.
struct Row<'a> {
    scenario: &'a str,
    sent: String,
    outcome: &'a Outcome,
    rss: String,
    good_p99: String,
}

impl Row<'_> {
    fn print(&self) {
        let o = self.outcome;
        let line = format!(
            "| {} | {} | {} | {} / {} / {} | {} | {} |",
            self.scenario,
            self.sent,
            o.came_back(),
            o.accepted(),
            o.answered(),
            o.lost,
            self.rss,
            self.good_p99
        );
        println!("{line}");
        if let Some(path) = std::env::var_os("MICA_ABUSE_REPORT") {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            writeln!(file, "{line}").unwrap();
        }
    }
}

/// Waits (bounded) until the process exits; its status and how long it took.
fn wait_exit(server: &mut ChildServer, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "still running after {limit:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_dispatcher_panic_ends_the_process_and_no_request_is_lost() {
    let fixture = Fixture::new("", "drain_time = \"2s\"", |dir| {
        sim_unit("sim0", &profile(dir, "p", 1.0), "")
    });
    let mut server = fixture.start(&[("MICA_TEST_PANIC_DISPATCHER_AFTER", "40")]);
    server.wait_ready(fixture.addr);
    let outcome = run_clients(fixture.addr, 4, 25, true);
    // Every accepted request was answered: 200 before the panic, 503 for those the
    // dead dispatcher held and for those after it (a connection refused once the
    // process had gone was not accepted).
    let log = server.log();
    assert_eq!(outcome.lost, 0, "{outcome:?}\n{log}");
    let ok = outcome.statuses.get(&200).copied().unwrap_or(0);
    assert!((1..=40).contains(&ok), "{outcome:?}");
    assert!(
        outcome.statuses.keys().all(|s| [200, 503].contains(s)),
        "{outcome:?}"
    );
    // It says it is not ready (until it is gone), and exits non-zero by itself.
    let (status, _) = wait_exit(&mut server, Duration::from_secs(20));
    assert!(!status.success(), "exits non-zero so systemd restarts it");
    let log = server.log();
    assert!(log.contains("the dispatcher actor stopped"), "{log}");
    Row {
        scenario: "dispatcher panics at request 40",
        sent: "4 clients, up to 25 JSON infers each, each stops at its first 503".into(),
        outcome: &outcome,
        rss: "-".into(),
        good_p99: format!("p99 of the 200s {:.1} ms", ms(outcome.p99())),
    }
    .print();
}

#[test]
fn a_stop_drains_once_within_drain_time() {
    // A unit whose batches take 30 s: what runs at SIGTERM outlives the drain.
    let fixture = Fixture::new(
        "batch_deadline_floor_ms = 120000",
        "drain_time = \"3s\"",
        |dir| sim_unit("slow", &profile(dir, "slow", 30_000.0), ""),
    );
    let mut server = fixture.start(&[]);
    server.wait_ready(fixture.addr);
    let addr = fixture.addr;
    let client = std::thread::spawn(move || run_clients(addr, 2, 1, false));
    // Wait (bounded) until both requests are in flight.
    let started = Instant::now();
    while fixture
        .metrics("mica_running_batches")
        .values()
        .sum::<f64>()
        < 1.0
    {
        assert!(started.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop = Instant::now();
    let status = server.terminate();
    let took = stop.elapsed();
    let outcome = client.join().unwrap();
    assert!(status.success(), "{}", server.log());
    assert_eq!(outcome.lost, 0, "{outcome:?}");
    assert_eq!(outcome.statuses.get(&503), Some(&2), "{outcome:?}");
    // One drain budget: about drain_time (3 s) plus the 2 s answer grace, not twice
    // the drain time.
    assert!(took < Duration::from_millis(5900), "stop took {took:?}");
    Row {
        scenario: "SIGTERM with 2 requests in 30 s batches, drain_time 3 s",
        sent: "2 JSON infers, then SIGTERM".into(),
        outcome: &outcome,
        rss: "-".into(),
        good_p99: format!("exit after {:.1} s", took.as_secs_f64()),
    }
    .print();
}

/// How an abusive client sends its body.
#[derive(Debug, Clone, Copy)]
enum Abuse {
    /// Announces `announced` bytes, sends `sent` of them at once, then nothing.
    Unfinished { announced: usize, sent: usize },
    /// Announces `announced` bytes and sends one every `every`.
    Trickle { announced: usize, every: Duration },
}

/// One abusive client: connects, sends its head and what its `abuse` says, reports
/// (through `started`) once its body has begun, and reads the answer (bounded).
fn abuser(addr: SocketAddr, abuse: Abuse, started: std::sync::mpsc::Sender<()>) -> Answer {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        let _ = started.send(());
        return Answer::Refused;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let announced = match abuse {
        Abuse::Unfinished { announced, .. } | Abuse::Trickle { announced, .. } => announced,
    };
    let head = format!(
        "POST /v2/models/tiny/infer HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nInference-Header-Content-Length: 0\r\n\
         Content-Length: {announced}\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes());
    let mut answer = Vec::new();
    match abuse {
        Abuse::Unfinished { sent, .. } => {
            // In pieces, stopping as soon as the server has answered (a refusal
            // mid-body): writing on would only meet a closed socket.
            let piece = vec![b'x'; 256 * 1024];
            let mut left = sent;
            let _ = stream.set_nonblocking(false);
            while left > 0 {
                let n = left.min(piece.len());
                if stream.write_all(&piece[..n]).is_err() {
                    break;
                }
                left -= n;
                stream.set_nonblocking(true).unwrap();
                let mut peek = [0u8; 1];
                let answered = matches!(stream.peek(&mut peek), Ok(n) if n > 0);
                stream.set_nonblocking(false).unwrap();
                if answered {
                    break;
                }
            }
            let _ = started.send(());
        }
        Abuse::Trickle { every, .. } => {
            let _ = started.send(());
            // One byte at a time until the server answers or closes (bounded: the
            // body timeout ends it long before `announced` bytes).
            stream.set_read_timeout(Some(every)).unwrap();
            for _ in 0..announced {
                if stream.write_all(b"x").is_err() {
                    break;
                }
                let mut buffer = [0u8; 4096];
                match stream.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => {
                        answer.extend_from_slice(&buffer[..n]);
                        break;
                    }
                    Err(_) => {}
                }
            }
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
        }
    }
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    match text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
    {
        Some(status) => Answer::Status(status),
        None => Answer::Lost,
    }
}

/// Starts `count` abusers and waits (bounded) until each has begun its body.
fn start_abusers(
    addr: SocketAddr,
    count: usize,
    abuse: impl Fn(usize) -> Abuse,
) -> Vec<std::thread::JoinHandle<Answer>> {
    let (started, begun) = std::sync::mpsc::channel();
    let threads: Vec<_> = (0..count)
        .map(|i| {
            let started = started.clone();
            let abuse = abuse(i);
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || abuser(addr, abuse, started))
                .unwrap()
        })
        .collect();
    for _ in 0..count {
        begun
            .recv_timeout(Duration::from_secs(60))
            .expect("every abuser starts its body within 60 s");
    }
    threads
}

fn collect(threads: Vec<std::thread::JoinHandle<Answer>>) -> Outcome {
    let mut outcome = Outcome::default();
    for thread in threads {
        outcome.add(thread.join().unwrap(), Duration::ZERO);
    }
    outcome
}

/// The process's resident set now and at its peak, bytes (`/proc/<pid>/status`).
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

const MIB: f64 = 1024.0 * 1024.0;

#[test]
fn hundreds_of_slow_and_unfinished_bodies_leave_a_good_client_served() {
    let fixture = Fixture::new("", "body_timeout = \"3s\"\nmax_connections = 2048", |dir| {
        sim_unit("sim0", &profile(dir, "p", 0.5), "")
    });
    let mut server = fixture.start(&[]);
    server.wait_ready(fixture.addr);
    let calm = run_clients(fixture.addr, 1, 100, false);
    assert_eq!(calm.statuses.get(&200), Some(&100), "{calm:?}");
    let abusers = start_abusers(fixture.addr, 300, |i| {
        if i % 2 == 0 {
            Abuse::Unfinished {
                announced: 100_000,
                sent: 1_000,
            }
        } else {
            Abuse::Trickle {
                announced: 100_000,
                every: Duration::from_millis(200),
            }
        }
    });
    let during = run_clients(fixture.addr, 1, 100, false);
    let abused = collect(abusers);
    assert_eq!(during.statuses.get(&200), Some(&100), "{during:?}");
    assert_eq!(abused.lost, 0, "{abused:?}");
    assert_eq!(abused.refused, 0, "{abused:?}");
    assert_eq!(abused.statuses.get(&408), Some(&300), "{abused:?}");
    // The good client's latency stays bounded: its requests were never queued behind
    // the abusers (generous bound for a shared 2-core machine).
    assert!(during.p99() < Duration::from_secs(2), "{:?}", during.p99());
    let ready = get(fixture.addr, "/v2/health/ready");
    assert_eq!(ready.status, 200);
    let status = server.terminate();
    assert!(status.success(), "{}", server.log());
    Row {
        scenario: "300 slow bodies (150 unfinished, 150 trickling 1 B/200 ms), body_timeout 3 s",
        sent: "300 × POST announcing 100 kB + a good client's 100 infers".into(),
        outcome: &abused,
        rss: "-".into(),
        good_p99: format!(
            "{:.1} ms (without abuse {:.1} ms)",
            ms(during.p99()),
            ms(calm.p99())
        ),
    }
    .print();
}

#[test]
fn many_large_unfinished_bodies_stay_within_the_memory_budget() {
    let budget = 96usize << 20;
    let fixture = Fixture::new(
        "",
        &format!(
            "body_timeout = \"4s\"\nmax_body_bytes = {}\nmemory_budget_bytes = {budget}",
            32usize << 20
        ),
        |dir| sim_unit("sim0", &profile(dir, "p", 0.5), ""),
    );
    let mut server = fixture.start(&[]);
    server.wait_ready(fixture.addr);
    let pid = server.child.id();
    let calm = run_clients(fixture.addr, 1, 50, false);
    let (before, _) = rss(pid);
    // 16 clients announce 32 MiB each and send 30 MiB: 480 MiB if all were held.
    let abusers = start_abusers(fixture.addr, 16, |_| Abuse::Unfinished {
        announced: 32 << 20,
        sent: 30 << 20,
    });
    let during = run_clients(fixture.addr, 1, 50, false);
    let abused = collect(abusers);
    let (_, peak) = rss(pid);
    assert_eq!(abused.lost, 0, "{abused:?}");
    assert_eq!(abused.answered(), 16, "{abused:?}");
    assert!(
        abused.statuses.get(&503).copied().unwrap_or(0) > 0,
        "some are refused for the budget: {abused:?}"
    );
    assert!(
        abused.statuses.keys().all(|s| [408, 503].contains(s)),
        "{abused:?}"
    );
    // While the abusers hold the whole budget a good request is refused too (503 with
    // Retry-After, the budget's answer); how many get through depends on when the
    // abusers' bytes arrive. What must hold: every good request is answered, none lost,
    // with 200 or the budget's 503.
    assert_eq!(during.lost, 0, "{during:?}");
    assert_eq!(during.answered(), 50, "{during:?}");
    assert!(
        during.statuses.keys().all(|s| [200, 503].contains(s)),
        "{during:?}"
    );
    // The peak stays within the budget (plus what the process held before and the
    // kernel-to-user buffers in flight).
    let grown = peak.saturating_sub(before);
    assert!(
        grown < budget as u64 + (32 << 20),
        "RSS grew by {:.0} MiB, budget {:.0} MiB",
        grown as f64 / MIB,
        budget as f64 / MIB
    );
    // Refusals that clients cause are not warnings: they cannot flood the log.
    let log = server.log();
    assert!(
        !log.lines()
            .any(|line| line.contains("WARN") || line.contains("ERROR")),
        "{log}"
    );
    let status = server.terminate();
    assert!(status.success(), "{}", server.log());
    Row {
        scenario: "16 unfinished 32 MiB bodies (30 MiB sent each), budget 96 MiB",
        sent: "16 × POST announcing 32 MiB + a good client's 50 infers".into(),
        outcome: &abused,
        rss: format!(
            "{:.0} MiB before, peak {:.0} MiB (budget {:.0} MiB)",
            before as f64 / MIB,
            peak as f64 / MIB,
            budget as f64 / MIB
        ),
        good_p99: format!(
            "{:.1} ms (without abuse {:.1} ms)",
            ms(during.p99()),
            ms(calm.p99())
        ),
    }
    .print();
}

/// A faulty sim unit beside a good one, 4 clients × 40 requests: every accepted request
/// answered (200, or one of the `allowed` errors), the service still ready,
/// and the faulty unit's failures in the metrics.
fn engine_fault_case(
    scenario: &str,
    plan: &str,
    scheduler: &str,
    allowed: &[u16],
    check: impl Fn(&Fixture, &Outcome),
) {
    let fixture = Fixture::new(scheduler, "", |dir| {
        sim_unit("faulty", &profile(dir, "faulty", 0.5), plan)
            + &sim_unit("good", &profile(dir, "good", 1.0), "")
    });
    let mut server = fixture.start(&[]);
    server.wait_ready(fixture.addr);
    let outcome = run_clients(fixture.addr, 4, 40, false);
    assert_eq!(outcome.lost + outcome.refused, 0, "{outcome:?}");
    assert_eq!(outcome.answered(), 160, "{outcome:?}");
    assert!(
        outcome.statuses.keys().all(|s| allowed.contains(s)),
        "{outcome:?}"
    );
    assert!(
        outcome.statuses.get(&200).copied().unwrap_or(0) >= 80,
        "{outcome:?}"
    );
    assert_eq!(get(fixture.addr, "/v2/health/ready").status, 200);
    let failures = fixture.metrics("mica_batch_failures_total");
    let failed: f64 = failures
        .iter()
        .filter(|(series, _)| series.contains("unit=\"faulty\""))
        .map(|(_, v)| v)
        .sum();
    assert!(failed > 0.0, "{failures:?}");
    check(&fixture, &outcome);
    let status = server.terminate();
    assert!(status.success(), "{}", server.log());
    Row {
        scenario,
        sent: "4 clients × 40 JSON infers, a faulty and a good sim unit".into(),
        outcome: &outcome,
        rss: "-".into(),
        good_p99: format!("p99 of the 200s {:.1} ms", ms(outcome.p99())),
    }
    .print();
}

#[test]
fn an_engine_that_panics_fails_only_its_batches() {
    engine_fault_case(
        "sim engine panics every 5th batch",
        "{ panic_every = 5 }",
        "",
        &[200, 500],
        |_, _| {},
    );
}

#[test]
fn an_engine_that_fails_at_random_fails_only_its_batches() {
    engine_fault_case(
        "sim engine fails with p = 0.3 (seeded)",
        "{ fail_probability = 0.3, seed = 7 }",
        "",
        &[200, 500],
        |_, _| {},
    );
}

#[test]
fn a_hung_engine_is_caught_by_the_batch_deadline() {
    engine_fault_case(
        "sim engine hangs 3 s every 4th batch, batch deadline 300 ms",
        "{ hang_every = 4, hang_ms = 3000 }",
        "batch_deadline_factor = 10.0\nbatch_deadline_floor_ms = 300",
        // 500 for a hung batch; 503 once more than two threads of its one stream are
        // stuck and the unit is taken out of service (for the batches it held then).
        &[200, 500, 503],
        |fixture, outcome| {
            let timeouts: f64 = fixture
                .metrics("mica_batch_timeouts_total")
                .iter()
                .filter(|(series, _)| series.contains("unit=\"faulty\""))
                .map(|(_, v)| v)
                .sum();
            assert!(timeouts > 0.0, "the hang shows in the metrics");
            assert!(
                outcome.statuses.get(&500).copied().unwrap_or(0) > 0,
                "{outcome:?}"
            );
            let healthy = fixture.metrics("mica_unit_healthy");
            assert!(
                healthy
                    .iter()
                    .any(|(series, v)| series.contains("unit=\"good\"") && *v == 1.0),
                "{healthy:?}"
            );
        },
    );
}

/// The tiny model taking raw images too (input `image`, 4x4 crops).
const IMAGE_MODEL: &str = "image_input = \"image\"\npreprocessing = { resize_shorter = 4 }";

/// An infer body carrying `images` as the binary BYTES input `image`, and the length
/// of its JSON header.
fn image_body(images: &[&[u8]]) -> (Vec<u8>, usize) {
    let tensor = bytes_tensor(images);
    let header = serde_json::json!({"inputs": [{
        "name": "image", "shape": [images.len()], "datatype": "BYTES",
        "parameters": {"binary_data_size": tensor.len()}
    }]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&tensor);
    (body, header.len())
}

/// Sends one image request; its answer and text.
fn infer_image(addr: SocketAddr, image: &[u8]) -> (Answer, String) {
    let (body, header_length) = image_body(&[image]);
    post_infer(addr, &body, Some(header_length))
}

/// A `w`×`h` PNG with texture in every channel (costly to decode).
fn png(w: u32, h: u32) -> Vec<u8> {
    use image::ImageEncoder;
    let pixels: Vec<u8> = (0..w * h * 3)
        .map(|i| ((i * 7 + (i / 3 / w) * 13 + (i % 11) * 29) % 256) as u8)
        .collect();
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&pixels, w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    use image::ImageEncoder;
    let pixels = vec![128u8; (w * h * 3) as usize];
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .write_image(&pixels, w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

/// CRC-32 (ISO-HDLC), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A decompression bomb: a PNG of a few hundred bytes whose header declares
/// `side`×`side` pixels (CRC fixed, so only the size is wrong).
fn png_bomb(side: u32) -> Vec<u8> {
    let mut out = png(8, 8);
    // Signature (8), IHDR length (4), "IHDR" (4), width, height, ..., CRC at 29.
    out[16..20].copy_from_slice(&side.to_be_bytes());
    out[20..24].copy_from_slice(&side.to_be_bytes());
    let crc = crc32(&out[12..29]);
    out[29..33].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The same as a JPEG: a small file whose frame header declares `side`×`side`.
fn jpeg_bomb(side: u16) -> Vec<u8> {
    let mut out = jpeg(8, 8);
    let sof = out
        .windows(2)
        .position(|m| m == [0xFF, 0xC0])
        .expect("a baseline JPEG");
    // FF C0, length (2), precision (1), height (2), width (2).
    out[sof + 5..sof + 7].copy_from_slice(&side.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&side.to_be_bytes());
    out
}

#[test]
fn decompression_bombs_are_refused_by_their_header_and_memory_stays_low() {
    let fixture = Fixture::with_model(IMAGE_MODEL, "", "", |dir| {
        sim_unit("sim0", &profile(dir, "p", 0.5), "")
    });
    let mut server = fixture.start(&[]);
    server.wait_ready(fixture.addr);
    let pid = server.child.id();
    let good = png(64, 48);
    assert_eq!(infer_image(fixture.addr, &good).0, Answer::Status(200));
    let (before, _) = rss(pid);
    let bombs = [png_bomb(8000), jpeg_bomb(8000)];
    let mut outcome = Outcome::default();
    for round in 0..20 {
        let bomb = &bombs[round % 2];
        let (answer, text) = infer_image(fixture.addr, bomb);
        assert_eq!(answer, Answer::Status(400), "{text}");
        assert!(
            text.contains(r#"{"error":"input \"image\": image 0 is 8000x8000 = 64000000 pixels, more than server.max_image_pixels (16777216)"}"#),
            "{text}"
        );
        outcome.add(answer, Duration::ZERO);
    }
    let (_, peak) = rss(pid);
    // Decoding one of them would take 8000 x 8000 x 3 bytes (183 MiB).
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 16 << 20,
        "RSS grew by {:.0} MiB",
        grown as f64 / MIB
    );
    // The service goes on serving.
    assert_eq!(infer_image(fixture.addr, &good).0, Answer::Status(200));
    assert_eq!(
        infer(fixture.addr, &json_infer(1).to_string().into_bytes()),
        Answer::Status(200)
    );
    let status = server.terminate();
    assert!(status.success(), "{}", server.log());
    Row {
        scenario: "decompression bombs: PNG and JPEG of < 1 kB declaring 8000x8000",
        sent: format!(
            "20 image infers ({} B PNG, {} B JPEG), then a good image and a JSON infer",
            bombs[0].len(),
            bombs[1].len()
        ),
        outcome: &outcome,
        rss: format!(
            "{:.0} MiB before, peak {:.0} MiB (one decode: 183 MiB; max_image_pixels 16 Mpx)",
            before as f64 / MIB,
            peak as f64 / MIB
        ),
        good_p99: "good image and JSON infer after: 200".into(),
    }
    .print();
}

#[test]
fn truncated_images_are_bad_requests_and_the_service_goes_on() {
    let fixture = Fixture::with_model(IMAGE_MODEL, "", "", |dir| {
        sim_unit("sim0", &profile(dir, "p", 0.5), "")
    });
    let mut server = fixture.start(&[]);
    server.wait_ready(fixture.addr);
    let whole_jpeg = jpeg(256, 256);
    let whole_png = png(256, 256);
    let cut = [
        ("JPEG", whole_jpeg[..whole_jpeg.len() / 2].to_vec()),
        ("JPEG", whole_jpeg[..whole_jpeg.len() - 2].to_vec()),
        ("PNG", whole_png[..whole_png.len() / 2].to_vec()),
        ("PNG", whole_png[..whole_png.len() - 12].to_vec()),
    ];
    let mut outcome = Outcome::default();
    for (kind, image) in &cut {
        let (answer, text) = infer_image(fixture.addr, image);
        assert_eq!(answer, Answer::Status(400), "{kind}: {text}");
        assert!(
            text.contains(r#"{"error":"input \"image\": image 0 "#),
            "{text}"
        );
        outcome.add(answer, Duration::ZERO);
    }
    assert!(outcome.statuses.get(&400) == Some(&4), "{outcome:?}");
    for image in [&whole_jpeg, &whole_png] {
        assert_eq!(infer_image(fixture.addr, image).0, Answer::Status(200));
    }
    let status = server.terminate();
    assert!(status.success(), "{}", server.log());
    Row {
        scenario: "truncated images (256x256 JPEG and PNG cut at half and before their end marker)",
        sent: "4 image infers, then the whole JPEG and PNG".into(),
        outcome: &outcome,
        rss: "-".into(),
        good_p99: "whole JPEG and PNG after: 200".into(),
    }
    .print();
}

#[test]
fn an_image_flood_does_not_stall_tensor_requests() {
    // One thread and two waiting slots for images; one thread parses large bodies.
    let fixture = Fixture::with_model(
        IMAGE_MODEL,
        "",
        "image_threads = 1\nimage_queue = 2\npreprocess_threads = 1",
        |dir| sim_unit("sim0", &profile(dir, "p", 0.5), ""),
    );
    let mut server = fixture.start(&[]);
    server.wait_ready(fixture.addr);
    let addr = fixture.addr;
    // A JSON body past the inline limit (16 KiB), so it is parsed on the
    // preprocessing pool, as large tensor bodies are.
    let mut tensor_body = json_infer(8).to_string().into_bytes();
    tensor_body.resize(tensor_body.len() + 20 * 1024, b' ');
    let tensors = |count: usize| {
        let mut outcome = Outcome::default();
        for _ in 0..count {
            let started = Instant::now();
            outcome.add(infer(addr, &tensor_body), started.elapsed());
        }
        outcome
    };
    let calm = tensors(30);
    assert_eq!(calm.statuses.get(&200), Some(&30), "{calm:?}");
    // Four clients send 1024x1024 PNGs back to back until told to stop (bounded).
    let image = std::sync::Arc::new(png(1024, 1024));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (decoding, first_decoded) = std::sync::mpsc::channel();
    let flood: Vec<_> = (0..4)
        .map(|_| {
            let (image, stop, decoding) = (image.clone(), stop.clone(), decoding.clone());
            std::thread::spawn(move || {
                let mut outcome = Outcome::default();
                let started = Instant::now();
                for _ in 0..2000 {
                    if stop.load(std::sync::atomic::Ordering::SeqCst)
                        || started.elapsed() > Duration::from_secs(120)
                    {
                        break;
                    }
                    let sent = Instant::now();
                    let (answer, _) = infer_image(addr, &image);
                    if answer == Answer::Status(200) {
                        let _ = decoding.send(());
                    }
                    outcome.add(answer, sent.elapsed());
                }
                outcome
            })
        })
        .collect();
    // The flood is under way once an image has come back.
    first_decoded
        .recv_timeout(Duration::from_secs(60))
        .expect("an image is decoded within 60 s");
    let during = tensors(30);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut images = Outcome::default();
    for thread in flood {
        let outcome = thread.join().unwrap();
        for (status, count) in outcome.statuses {
            *images.statuses.entry(status).or_default() += count;
        }
        images.lost += outcome.lost;
        images.refused += outcome.refused;
        images.latencies.extend(outcome.latencies);
    }
    assert_eq!(during.statuses.get(&200), Some(&30), "{during:?}");
    assert_eq!(images.lost + images.refused, 0, "{images:?}");
    assert!(
        images.statuses.keys().all(|s| [200, 429].contains(s)),
        "images get 200 or the full pool's 429: {images:?}"
    );
    // A tensor request never waits for an image: beside the flood its typical answer
    // is well below the time an image takes, which a tensor request sharing the
    // images' full queue would wait every time (the queue and the thread stay busy, so
    // its median would be at least an image's). The median, not the p99: on a shared
    // 2-core host the decoding threads can starve a few tensor requests of CPU, which
    // is scheduling by the kernel, not queueing behind an image.
    let image_median = images.median();
    assert!(
        during.median() * 2 < image_median,
        "tensor median {:?} (p99 {:?}) beside an image median of {image_median:?}",
        during.median(),
        during.p99()
    );
    let status = server.terminate();
    assert!(status.success(), "{}", server.log());
    Row {
        scenario: "image flood: 4 clients sending 1024x1024 PNGs back to back, image_threads 1, image_queue 2",
        sent: format!(
            "{} image infers beside a good client's 30 JSON FP32 infers of 24 kB",
            images.accepted()
        ),
        outcome: &images,
        rss: "-".into(),
        good_p99: format!(
            "{:.1} ms (without the flood {:.1} ms; image median {:.1} ms)",
            ms(during.p99()),
            ms(calm.p99()),
            ms(image_median)
        ),
    }
    .print();
}

/// Writes `bytes` on a fresh connection and reads the answer (bounded); its status.
fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Answer {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return Answer::Refused;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut data = Vec::new();
    let _ = stream.read_to_end(&mut data);
    let text = String::from_utf8_lossy(&data);
    match text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
    {
        Some(status) => Answer::Status(status),
        None => Answer::Lost,
    }
}

#[test]
fn malformed_requests_do_not_flood_the_log() {
    let fixture = Fixture::new("", "", |dir| sim_unit("sim0", &profile(dir, "p", 0.5), ""));
    let mut server = fixture.start(&[]);
    server.wait_ready(fixture.addr);
    let addr = fixture.addr;
    let huge_header = format!(
        "GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(256 * 1024)
    );
    let mut outcome = Outcome::default();
    for round in 0..60 {
        let answer = match round % 3 {
            0 => send_raw(addr, b"NOT A REQUEST LINE\r\n\r\n"),
            1 => send_raw(addr, huge_header.as_bytes()),
            _ => infer(addr, b"{\"inputs\": [nope"),
        };
        outcome.add(answer, Duration::ZERO);
    }
    assert_eq!(outcome.lost + outcome.refused, 0, "{outcome:?}");
    assert_eq!(outcome.statuses.get(&400), Some(&40), "{outcome:?}");
    assert_eq!(outcome.statuses.get(&431), Some(&20), "{outcome:?}");
    assert_eq!(
        infer(addr, &json_infer(1).to_string().into_bytes()),
        Answer::Status(200)
    );
    let log = server.log();
    let loud: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .collect();
    assert!(loud.is_empty(), "{loud:?}");
    let status = server.terminate();
    assert!(status.success(), "{}", server.log());
    Row {
        scenario: "malformed requests: bad request lines, 256 kB headers, broken JSON",
        sent: "60 requests (20 of each), then a good JSON infer".into(),
        outcome: &outcome,
        rss: "-".into(),
        good_p99: format!(
            "good infer after: 200; WARN/ERROR log lines: {}",
            loud.len()
        ),
    }
    .print();
}
