//! Graceful shutdown of the HTTP layer: accepted requests are all answered, new
//! connections are refused, and the drain time bounds how long it takes.

mod serve_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serve_support::*;

const INFER: &str = "/v2/models/tiny/infer";

#[test]
fn accepted_requests_finish_during_a_graceful_shutdown() {
    let labels = label_file();
    let backend = FakeBackend::ready();
    backend.delay_ms.store(800, Ordering::SeqCst);
    let server = TestServer::start(test_settings(labels.path()), test_model(), backend);
    let addr = server.addr;
    let clients: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || post_json(addr, INFER, &json_infer(1))))
        .collect();
    // Let every request reach the backend, then stop.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let stopper = std::thread::spawn(move || server.stop());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "a stopping server accepts no new connections"
    );
    for client in clients {
        let response = client.join().unwrap();
        assert_eq!(
            response.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(response.json()["outputs"][0]["shape"][0], 1);
    }
    stopper.join().unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn requests_still_running_at_the_drain_deadline_get_503() {
    let labels = label_file();
    let backend = FakeBackend::ready();
    backend.delay_ms.store(20_000, Ordering::SeqCst);
    let mut settings = test_settings(labels.path());
    settings.drain_time = Duration::from_millis(300);
    let server = TestServer::start(settings, test_model(), backend);
    let addr = server.addr;
    let clients: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || post_json(addr, INFER, &json_infer(1))))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    server.stop().unwrap();
    let stopped = started.elapsed();
    for client in clients {
        let response = client.join().unwrap();
        assert_eq!(response.status, 503);
        assert_eq!(response.error(), "server is shutting down");
    }
    assert!(
        stopped < Duration::from_secs(3),
        "drain took {stopped:?} with a 300 ms drain time"
    );
}
