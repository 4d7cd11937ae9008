//! `mica serve` and `mica bench` on real onnx units (ONNX Runtime's CPU provider, the
//! tiny model, config/tiny-onnx-cpu.toml): tritonclient gets ONNX Runtime's own answers,
//! and a DLA unit on a host without TensorRT fails to load, named with its cause, while
//! the other units serve (or, by default, keep the server not ready, saying why).
//!
//! Needs the ONNX Runtime library (`scripts/fetch-onnxruntime.sh`, or `ORT_DYLIB_PATH`)
//! and, for the tritonclient part, Python with tritonclient: skipped without them,
//! unless `MICA_REQUIRE_ONNXRUNTIME` / `MICA_REQUIRE_TRITONCLIENT=1` (CI) make that a
//! failure.

mod serve_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serve_support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("engines/tests/fixtures")
}

/// Whether the ONNX Runtime library is where mica looks for it.
fn onnxruntime_here() -> bool {
    let found = std::env::var_os("ORT_DYLIB_PATH").is_some_and(|p| Path::new(&p).is_file())
        || std::fs::read_dir(root().join(".cache/onnxruntime")).is_ok_and(|entries| {
            entries.filter_map(Result::ok).any(|e| {
                let version = e.file_name().to_string_lossy().into_owned();
                e.path()
                    .join(format!("libonnxruntime.so.{version}"))
                    .is_file()
            })
        });
    if !found {
        assert!(
            std::env::var_os("MICA_REQUIRE_ONNXRUNTIME").is_none(),
            "MICA_REQUIRE_ONNXRUNTIME is set but no ONNX Runtime library was found \
             (run scripts/fetch-onnxruntime.sh)"
        );
        eprintln!("skipped: no ONNX Runtime library (scripts/fetch-onnxruntime.sh)");
    }
    found
}

/// config/tiny-onnx-cpu.toml in `dir`, with `scheduler_extra` under `[scheduler]` and
/// `units_extra` appended.
fn config(dir: &Path, port: u16, scheduler_extra: &str, units_extra: &str) -> PathBuf {
    let path = shipped_config("tiny-onnx-cpu.toml", dir, port, "", free_port());
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[scheduler]\n",
        &format!("[scheduler]\n{scheduler_extra}\n"),
    );
    std::fs::write(&path, text + units_extra).unwrap();
    path
}

/// A DLA unit on TensorRT, which the CPU build of ONNX Runtime does not have.
fn dla_unit(cache: &Path) -> String {
    format!(
        "\n[[units]]\nid = \"dla0\"\nkind = \"dla\"\ncore = 0\nmax_batch = 4\n\
         engine = {{ type = \"onnx\", model = \"{}\", provider = \"tensorrt\", \
         engine_cache = \"{}\" }}\n",
        fixtures().join("tiny_resnet_b4.onnx").display(),
        cache.display()
    )
}

fn one_image_request() -> serde_json::Value {
    serde_json::json!({
        "inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                    "data": vec![0.5f32; 3 * 32 * 32]}]
    })
}

/// Polls `/v2/health/ready` until `done` says its answer is the one awaited (60 s at
/// most): the child server has no event to wait on from here.
fn wait_for_readiness(
    server: &mut ChildServer,
    addr: SocketAddr,
    done: impl Fn(&Response) -> bool,
) -> Response {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("mica serve exited early: {status}\n{}", server.log());
        }
        if std::net::TcpStream::connect(addr).is_ok() {
            let response = get(addr, "/v2/health/ready");
            if done(&response) {
                return response;
            }
        }
        assert!(
            Instant::now() < deadline,
            "readiness never settled\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_dla_unit_without_tensorrt_is_named_and_the_other_units_serve() {
    if !onnxruntime_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let path = config(
        dir.path(),
        port,
        "require_all_units = false",
        &dla_unit(&dir.path().join("trt-dla0")),
    );
    let mut server = ChildServer::start(&path, dir.path());
    let ready = wait_for_readiness(&mut server, addr, |r| r.status == 200);
    let body = ready.json();
    let missing = body["missing"].as_array().expect("names the missing units");
    assert_eq!(missing.len(), 1, "{body}");
    let why = missing[0].as_str().unwrap();
    assert!(why.contains("dla0") && why.contains("TensorRT"), "{why}");
    // The two CPU units serve.
    for _ in 0..8 {
        let answer = post_json(addr, "/v2/models/tiny/infer", &one_image_request());
        assert_eq!(answer.status, 200, "{}", answer.error());
        let outputs = answer.json()["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(outputs, 10);
    }
    let log = server.log();
    assert!(
        log.contains("engine failed to load") && log.contains("dla0"),
        "{log}"
    );
    assert!(server.terminate().success(), "{}", server.log());
}

#[test]
fn by_default_a_unit_that_cannot_load_keeps_the_server_not_ready_saying_which() {
    if !onnxruntime_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let path = config(
        dir.path(),
        port,
        "",
        &dla_unit(&dir.path().join("trt-dla0")),
    );
    let mut server = ChildServer::start(&path, dir.path());
    let not_ready = wait_for_readiness(&mut server, addr, |r| {
        r.status == 503 && r.error().contains("dla0")
    });
    assert!(
        not_ready.error().contains("TensorRT"),
        "{}",
        not_ready.error()
    );
    assert!(server.terminate().success(), "{}", server.log());
}

#[test]
fn tritonclient_gets_onnx_runtimes_answers_from_mica_serve() {
    if !onnxruntime_here() {
        return;
    }
    let required = std::env::var("MICA_REQUIRE_TRITONCLIENT").is_ok_and(|v| v == "1");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let available = Command::new(&python)
        .args(["-c", "import tritonclient.http, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        available || !required,
        "tritonclient is not installed for {python}"
    );
    if !available {
        eprintln!("skipped: tritonclient is not installed for {python}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let path = config(dir.path(), port, "", "");
    let mut server = ChildServer::start(&path, dir.path());
    server.wait_ready(addr);
    let output = Command::new(&python)
        .arg(root().join("scripts/tritonclient_onnx_check.py"))
        .args(["--url", &addr.to_string()])
        .arg("--fixtures")
        .arg(fixtures())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(server.terminate().success(), "{}", server.log());
}

#[test]
fn mica_bench_runs_the_onnx_units_for_real() {
    if !onnxruntime_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), free_port(), "", "");
    let output = Command::new(env!("CARGO_BIN_EXE_mica"))
        .args([
            "bench",
            "--requests",
            "200",
            "--concurrency",
            "4",
            "--json",
            "--no-progress",
        ])
        .args(["--warmup", "0s", "--config"])
        .arg(&path)
        .output()
        .expect("mica bench runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["simulated"], false, "{report}");
    assert_eq!(report["failed_requests"], 0, "{report}");
    assert!(
        report["total"]["images"].as_u64().unwrap() >= 200,
        "{report}"
    );
    for unit in ["cpu", "cpu_fixed"] {
        assert_eq!(report["units"][unit]["engine"], "onnx", "{report}");
    }
}
