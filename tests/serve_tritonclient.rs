//! Triton's own Python client (`tritonclient.http`) against the HTTP layer, through
//! `scripts/tritonclient_check.py`. Skipped when Python or tritonclient is missing,
//! unless `MICA_REQUIRE_TRITONCLIENT=1` (CI) makes that a failure.

mod serve_support;

use std::process::Command;

use serve_support::*;

#[test]
fn tritonclient_works_unmodified() {
    let required = std::env::var("MICA_REQUIRE_TRITONCLIENT").is_ok_and(|v| v == "1");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let available = Command::new(&python)
        .args(["-c", "import tritonclient.http, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            !required,
            "tritonclient[http] is not installed for {python}"
        );
        eprintln!("skipped: tritonclient[http] is not installed for {python}");
        return;
    }
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
