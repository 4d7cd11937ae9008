//! Shared by the `serve_*` tests: a fake inference backend, an in-process server on a
//! free loopback port, and a minimal HTTP/1.1 client that can send exactly the bytes a
//! test wants (bad lengths included).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mica::serve::{
    InferBackend, InferFuture, ModelSettings, ReadyFuture, ServerSettings, Serves, ShutdownFuture,
};
use mica_actors::{InferError, InferRequest, InferResponse};
use mica_core::UnitId;

/// Values per output image of the test model.
pub const OUTPUT_LEN: usize = 5;
/// Input shape of the test model (NCHW, one image).
pub const INPUT_SHAPE: [usize; 3] = [3, 4, 4];
/// Input values per image.
pub const INPUT_LEN: usize = 48;

/// A backend answering `out[j] = sum(image) + j`, with switches for the cases tests
/// need.
#[derive(Debug, Default)]
pub struct FakeBackend {
    /// Whether `is_ready` says yes.
    pub ready: AtomicBool,
    /// Every request answers `Overloaded` while set.
    pub overloaded: AtomicBool,
    /// How long each request takes, in milliseconds.
    pub delay_ms: AtomicU64,
    /// Priority of the last request.
    pub last_priority: AtomicU8,
    /// Timeout of the last request.
    pub last_timeout: Mutex<Option<Duration>>,
    /// Input and output values per image (`INPUT_LEN`, `OUTPUT_LEN` when zero).
    pub sizes: (usize, usize),
}

impl FakeBackend {
    /// A ready backend.
    pub fn ready() -> Arc<Self> {
        Self::ready_with(INPUT_LEN, OUTPUT_LEN)
    }

    /// A ready backend for a model of other sizes.
    pub fn ready_with(input_len: usize, output_len: usize) -> Arc<Self> {
        let backend = Self {
            sizes: (input_len, output_len),
            ..Self::default()
        };
        backend.ready.store(true, Ordering::SeqCst);
        Arc::new(backend)
    }
}

impl InferBackend for FakeBackend {
    fn submit(&self, request: InferRequest) -> InferFuture {
        self.last_priority.store(request.priority, Ordering::SeqCst);
        *self.last_timeout.lock().unwrap() = request.timeout;
        let overloaded = self.overloaded.load(Ordering::SeqCst);
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::SeqCst));
        let (input_len, output_len) = self.sizes;
        Box::pin(async move {
            if overloaded {
                return Err(InferError::Overloaded {
                    retry_after: Duration::from_millis(1500),
                });
            }
            if let Some(timeout) = request.timeout {
                if delay > timeout {
                    tokio::time::sleep(timeout).await;
                    return Err(InferError::TimedOut);
                }
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let data = request
                .data
                .ok_or_else(|| InferError::Invalid("no data".into()))?;
            let out: Vec<f32> = data
                .chunks_exact(input_len)
                .flat_map(|image| {
                    let sum: f32 = image.iter().sum();
                    (0..output_len).map(move |j| sum + j as f32)
                })
                .collect();
            Ok(InferResponse {
                images: request.images,
                batch_images: request.images,
                per_image: output_len,
                data: out,
                unit: UnitId::new("fake0"),
                unit_index: 0,
                engine: "fake",
                queue_wait: Duration::from_micros(10),
                latency: delay + Duration::from_micros(20),
            })
        })
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn max_batch(&self) -> u32 {
        4
    }

    fn priority_levels(&self) -> u8 {
        3
    }

    fn serves(&self) -> Serves {
        Serves {
            part: "fake unit",
            unanswered: "requests",
        }
    }

    fn wait_ready(&self) -> ReadyFuture {
        let ready = self.is_ready();
        Box::pin(async move {
            if ready {
                Ok(())
            } else {
                Err("the fake backend was made not ready".to_string())
            }
        })
    }

    fn alive(&self) -> Result<(), String> {
        Ok(())
    }

    fn shutdown(&self, _drain: Duration) -> ShutdownFuture {
        Box::pin(async { 0 })
    }
}

/// The model the tests serve: tiny NCHW images, 5 classes, raw images accepted.
pub fn test_model() -> ModelSettings {
    let mut model = ModelSettings {
        name: "tiny".into(),
        input_shape: INPUT_SHAPE.to_vec(),
        output_shape: vec![OUTPUT_LEN],
        max_batch: 8,
        image_input: Some("image".into()),
        ..ModelSettings::default()
    };
    model.preprocessing.resize_shorter = 8;
    model
}

/// Server settings for tests: a free port, gRPC off, a small body limit, labels.
pub fn test_settings(labels: &std::path::Path) -> ServerSettings {
    ServerSettings {
        port: 0,
        grpc_port: 0,
        http_workers: 2,
        max_body_bytes: 64 * 1024,
        drain_time: Duration::from_secs(5),
        preprocess_threads: 2,
        preprocess_queue: 16,
        label_file: Some(labels.to_path_buf()),
        ..ServerSettings::default()
    }
}

/// A label file for the test model's 5 classes.
pub fn label_file() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "zero\none\ntwo\nthree\nfour").unwrap();
    file
}

/// A server running on its own actix system thread; stopped gracefully on `stop` or
/// drop.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server over `backend`.
    pub fn start(
        settings: ServerSettings,
        model: ModelSettings,
        backend: Arc<dyn InferBackend>,
    ) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let running = mica::serve::start(&settings, &model, backend)?;
                addr_tx.send(running.local_addr()).unwrap();
                let _ = stop_rx.await;
                running.shutdown().await
            })
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server started");
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Begins a graceful shutdown and waits for it.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().expect("server thread"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` message of an error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {:?}", self.json()))
            .to_string()
    }
}

/// Sends raw bytes on a new connection and reads the response until the server closes.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The server may answer (and close) before it has read everything.
    let _ = stream.write_all(bytes);
    let mut data = Vec::new();
    let _ = stream.read_to_end(&mut data);
    parse(&data)
}

/// One request with `Connection: close`; `headers` are extra header lines.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Response {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes)
}

/// GET `path`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], b"")
}

/// POST a JSON body.
pub fn post_json(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Response {
    let headers = [("Content-Type", "application/json".to_string())];
    request(addr, "POST", path, &headers, body.to_string().as_bytes())
}

/// POST a binary-extension body: `json` then `binary`.
pub fn post_binary(
    addr: SocketAddr,
    path: &str,
    json: &serde_json::Value,
    binary: &[u8],
) -> Response {
    let json = json.to_string();
    let headers = [
        ("Content-Type", "application/octet-stream".to_string()),
        ("Inference-Header-Content-Length", json.len().to_string()),
    ];
    let mut body = json.into_bytes();
    body.extend_from_slice(binary);
    request(addr, "POST", path, &headers, &body)
}

fn parse(data: &[u8]) -> Response {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(data)));
    let head = String::from_utf8_lossy(&data[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = data[end + 4..].to_vec();
    if let Some((_, length)) = headers.iter().find(|(n, _)| n == "content-length") {
        body.truncate(length.parse().unwrap());
    }
    Response {
        status,
        headers,
        body,
    }
}

/// A JSON infer body with `images` images, image i filled with `i + 1`.
pub fn json_infer(images: usize) -> serde_json::Value {
    let data: Vec<f32> = (0..images)
        .flat_map(|i| std::iter::repeat_n((i + 1) as f32, INPUT_LEN))
        .collect();
    serde_json::json!({
        "id": "req-1",
        "inputs": [{"name": "input", "shape": [images, 3, 4, 4], "datatype": "FP32", "data": data}]
    })
}

/// FP32 values, little-endian.
pub fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// BYTES elements, length-prefixed.
pub fn bytes_tensor(elements: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for element in elements {
        out.extend_from_slice(&(element.len() as u32).to_le_bytes());
        out.extend_from_slice(element);
    }
    out
}

/// A free loopback port (bound, then released for the test to use).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shipped `config/<name>` written into `dir`: its relative paths (`profiles/…`,
/// `../engines/…`) made absolute, the HTTP server on `port` with `server_extra` (more
/// `[server]` lines) after it, gRPC off unless `server_extra` sets `grpc_port`, the
/// metrics listener on `metrics_port`.
pub fn shipped_config(
    name: &str,
    dir: &std::path::Path,
    port: u16,
    server_extra: &str,
    metrics_port: u16,
) -> std::path::PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let grpc_off = if server_extra.contains("grpc_port") {
        ""
    } else {
        "\ngrpc_port = 0"
    };
    let text = std::fs::read_to_string(format!("{root}/config/{name}"))
        .unwrap()
        .replace("\"profiles/", &format!("\"{root}/config/profiles/"))
        .replace("\"../engines/", &format!("\"{root}/engines/"))
        .replace(
            "port = 8000",
            &format!("port = {port}\n{server_extra}{grpc_off}"),
        )
        .replace("port = 8002", &format!("port = {metrics_port}"));
    assert!(
        text.contains(&format!("port = {port}")),
        "{name} has a [server] port"
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `mica serve` as a child process, its stderr in a log file; killed if the test ends
/// before it stops.
pub struct ChildServer {
    /// The process.
    pub child: std::process::Child,
    /// Its stderr.
    pub log: std::path::PathBuf,
}

impl ChildServer {
    /// Starts `mica serve --config <config>`, logging into `dir`.
    pub fn start(config: &std::path::Path, dir: &std::path::Path) -> Self {
        let log = dir.join("serve.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_mica"))
            .args(["serve", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("mica serve starts");
        Self { child, log }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to 60 s) until `/v2/health/ready` on `addr` answers 200.
    pub fn wait_ready(&mut self, addr: SocketAddr) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("mica serve exited early: {status}\n{}", self.log());
            }
            if TcpStream::connect(addr).is_ok() && get(addr, "/v2/health/ready").status == 200 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mica serve not ready in 60 s\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and waits (up to 20 s) for the exit; its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running 20 s after SIGTERM\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
