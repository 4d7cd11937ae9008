//! `mica serve`'s start as a new user sees it: once ready it prints the URLs it serves
//! and one `curl` line, and that line, pasted into a shell, runs an inference (on the
//! shipped simulated Orin: the answer is emulated, and says so nowhere else than in the
//! banner's label and the unit it names).

mod serve_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serve_support::{free_port, shipped_config};

#[test]
fn the_ready_banner_lists_the_urls_and_its_curl_line_works() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let config = shipped_config("orin-agx-sim.toml", dir.path(), port, "", metrics_port);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mica"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
        .spawn()
        .expect("mica serve starts");
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // Everything up to the curl line (the banner's last line).
    let mut banner = Vec::new();
    let curl = loop {
        let line = received
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "no banner from mica serve; it printed {banner:?}\n{}",
                    std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
                )
            });
        if line.trim_start().starts_with("(printf") {
            break line.trim().to_string();
        }
        banner.push(line);
    };
    let text = banner.join("\n");
    assert!(
        text.starts_with("mica is ready: model resnet50 on 5 units (cpu, cuda, amp, dla0, dla1)"),
        "{text}"
    );
    assert!(text.contains("[SIMULATED units"), "{text}");
    let infer = format!("http://127.0.0.1:{port}/v2/models/resnet50/infer");
    assert!(text.contains(&infer), "{text}");
    assert!(
        text.contains(&format!("http://127.0.0.1:{port}/v2/health/ready")),
        "{text}"
    );
    assert!(
        text.contains(&format!("http://127.0.0.1:{metrics_port}/metrics")),
        "{text}"
    );
    assert!(text.contains("off (no [admin] token)"), "{text}");
    assert!(curl.ends_with(&infer), "{curl}");

    // The line works as pasted.
    let output = Command::new("bash")
        .args(["-c", &curl])
        .output()
        .expect("bash runs (curl must be installed)");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        output.status.success(),
        "the curl line failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the curl line printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    assert_eq!(answer["model_name"], "resnet50", "{answer}");
    let out = &answer["outputs"][0];
    assert_eq!(out["datatype"], "BYTES", "top-1 class: {answer}");
    assert_eq!(out["shape"], serde_json::json!([1, 1]), "{answer}");
    assert!(answer["parameters"]["mica_unit"].is_string(), "{answer}");
}
