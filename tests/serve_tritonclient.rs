//! Triton's own Python clients against the front ends: `tritonclient.http` through
//! `scripts/tritonclient_check.py`, `tritonclient.grpc` through
//! `scripts/tritonclient_grpc_check.py` (which also compares the HTTP and gRPC answers
//! to the same requests: equal outputs, equal error text). Skipped when Python or
//! tritonclient is missing, unless `MICA_REQUIRE_TRITONCLIENT=1` (CI) makes that a
//! failure.

mod serve_support;

use std::process::Command;

use mica::serve::ServerSettings;
use serve_support::*;

/// The Python to run the checks with, if it has `module` (the test is skipped when it
/// has not, unless `MICA_REQUIRE_TRITONCLIENT=1`).
fn python(module: &str) -> Option<String> {
    let required = std::env::var("MICA_REQUIRE_TRITONCLIENT").is_ok_and(|v| v == "1");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let available = Command::new(&python)
        .args(["-c", &format!("import {module}, numpy")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        available || !required,
        "{module} is not installed for {python}"
    );
    if !available {
        eprintln!("skipped: {module} is not installed for {python}");
        return None;
    }
    Some(python)
}

#[test]
fn tritonclient_works_unmodified() {
    let Some(python) = python("tritonclient.http") else {
        return;
    };
    let labels = label_file();
    let server = TestServer::start(
        test_settings(labels.path()),
        test_model(),
        FakeBackend::ready(),
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/tritonclient_check.py");
    let output = Command::new(&python)
        .arg(script)
        .args(["--url", &server.addr.to_string(), "--deterministic"])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn tritonclient_grpc_works_unmodified_and_agrees_with_http() {
    let Some(python) = python("tritonclient.grpc, tritonclient.http") else {
        return;
    };
    let labels = label_file();
    let grpc_port = free_port();
    let settings = ServerSettings {
        grpc_port,
        ..test_settings(labels.path())
    };
    let server = TestServer::start(settings, test_model(), FakeBackend::ready());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/tritonclient_grpc_check.py"
    );
    let output = Command::new(&python)
        .arg(script)
        .args(["--grpc-url", &format!("127.0.0.1:{grpc_port}")])
        .args(["--http-url", &server.addr.to_string(), "--deterministic"])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
