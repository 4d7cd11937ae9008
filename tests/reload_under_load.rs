//! Hot policy swap under load: requests keep running while the config file changes
//! (round_robin → contention_aware), none fails, and an invalid file is counted and
//! changes nothing. Also: SIGHUP triggers a reload.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mica::config::ResolvedConfig;
use mica::reload::{self, PolicyControl, PolicySource, ReloadOptions, ReloadResult};
use mica::wiring::{self, RunOverrides};
use mica_actors::{InferRequest, Service};

/// Writes the simulated Orin config with `policy`, as editors save: a temporary file
/// renamed over the old one.
fn write_config(dir: &Path, policy: &str) -> PathBuf {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let text = std::fs::read_to_string(base.join("orin-agx-sim.toml")).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let line = if line.starts_with("policy = ") {
            format!("policy = {policy}")
        } else if let Some(rest) = line
            .strip_prefix("profile = \"")
            .or_else(|| line.strip_prefix("contention_file = \""))
        {
            let key = line.split(' ').next().unwrap();
            format!(
                "{key} = \"{}\"",
                base.join(rest.trim_end_matches('"')).display()
            )
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    let path = dir.join("mica.toml");
    let tmp = dir.join(".mica.toml.swp");
    std::fs::write(&tmp, out).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Load {
    ok: Rc<Cell<u64>>,
    failed: Rc<Cell<u64>>,
    stop: Rc<Cell<bool>>,
}

fn start_load(service: &Service, clients: usize) -> Load {
    let load = Load {
        ok: Rc::default(),
        failed: Rc::default(),
        stop: Rc::default(),
    };
    for _ in 0..clients {
        let (service, ok, failed, stop) = (
            service.clone(),
            load.ok.clone(),
            load.failed.clone(),
            load.stop.clone(),
        );
        actix_rt::spawn(async move {
            while !stop.get() {
                let request = InferRequest {
                    images: 1,
                    ..InferRequest::default()
                };
                match service.submit(request).await {
                    Ok(_) => ok.set(ok.get() + 1),
                    Err(error) => {
                        eprintln!("request failed: {error}");
                        failed.set(failed.get() + 1);
                    }
                }
            }
        });
    }
    load
}

fn start(path: &Path) -> (ResolvedConfig, mica_actors::ServiceSetup) {
    let loaded = ResolvedConfig::load(path).unwrap();
    let setup = wiring::service_setup(&loaded, &RunOverrides::default()).unwrap();
    (loaded, setup)
}

#[test]
fn policy_swaps_under_load_without_failed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "{ type = \"round_robin\" }");
    let (loaded, setup) = start(&path);
    actix::System::new().block_on(async move {
        let written = loaded.config.scheduler.policy.clone();
        let service = Service::start(setup.clone()).unwrap();
        service.wait_ready().await.unwrap();
        let control = Arc::new(PolicyControl::new(
            service.clone(),
            &loaded,
            written,
            setup.policy.clone(),
            PolicySource::Config,
        ));
        let options = ReloadOptions {
            on_sighup: false,
            on_file_change: true,
        };
        let reloader = reload::spawn(&path, control.clone(), options).unwrap();
        let load = start_load(&service, 32);

        let phase = Duration::from_millis(1500);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (start, before) = (Instant::now(), load.ok.get());
        tokio::time::sleep(phase).await;
        let round_robin = (load.ok.get() - before) as f64 / start.elapsed().as_secs_f64();

        write_config(dir.path(), "{ type = \"contention_aware\" }");
        wait_until("the swap", async || {
            control.current().await.name == "contention_aware"
        })
        .await;
        assert_eq!(reloader.stats().count(ReloadResult::Applied), 1);
        let (start, before) = (Instant::now(), load.ok.get());
        tokio::time::sleep(phase).await;
        let contention_aware = (load.ok.get() - before) as f64 / start.elapsed().as_secs_f64();

        write_config(dir.path(), "{ type = \"no_such_policy\" }");
        wait_until("the invalid reload", async || {
            reloader.stats().count(ReloadResult::Invalid) == 1
        })
        .await;
        assert_eq!(control.current().await.name, "contention_aware");
        let (before, after_invalid) = (load.ok.get(), Instant::now());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            load.ok.get() > before,
            "requests stalled after the invalid config ({:?})",
            after_invalid.elapsed()
        );

        load.stop.set(true);
        service.shutdown(Duration::from_secs(5)).await;
        eprintln!(
            "throughput: round_robin {round_robin:.0} req/s, contention_aware \
             {contention_aware:.0} req/s; answered {}, failed {}",
            load.ok.get(),
            load.failed.get()
        );
        assert_eq!(load.failed.get(), 0, "requests failed during the swap");
        assert!(round_robin > 0.0 && contention_aware > 0.0);
    });
}

#[test]
fn sighup_reloads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "{ type = \"round_robin\" }");
    let (loaded, setup) = start(&path);
    actix::System::new().block_on(async move {
        let service = Service::start(setup.clone()).unwrap();
        let control = Arc::new(PolicyControl::new(
            service.clone(),
            &loaded,
            loaded.config.scheduler.policy.clone(),
            setup.policy.clone(),
            PolicySource::Config,
        ));
        let options = ReloadOptions {
            on_sighup: true,
            on_file_change: false,
        };
        let reloader = reload::spawn(&path, control.clone(), options).unwrap();
        write_config(dir.path(), "{ type = \"weighted\" }");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            control.current().await.name,
            "round_robin",
            "no watcher: no reload yet"
        );
        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_until("the SIGHUP reload", async || {
            control.current().await.name == "weighted"
        })
        .await;
        assert_eq!(reloader.stats().count(ReloadResult::Applied), 1);
        service.shutdown(Duration::from_secs(1)).await;
    });
}
