//! `mica serve` on a config with `[pipeline]` (config/tiny-sim-pipeline.toml: the tiny
//! staged network, blocks 0..2 on a simulated DLA, 2..4 on a simulated GPU), as a
//! child process on loopback: served under `pipeline.name` with the first stage's
//! input and the last stage's output, answers that are the chained stages' outputs
//! (concurrent clients included), the normal model's 400/404 answers, per-stage
//! series on the metrics port, and a clean exit on SIGTERM.
//!
//! The sim engine's output k of an image is the mean of the k-th of `output_len`
//! equal slices of its input. Through the chain 3072 → 8192 → 8192 → 4096 → 10 values,
//! an image whose first half is `a` and second half `b` comes out as five `a` then
//! five `b` (every slice boundary falls inside one half), exactly.

mod serve_support;

use std::io::Read;
use std::net::SocketAddr;

use serde_json::json;
use serve_support::{
    free_port, get, le_bytes, post_binary, post_json, shipped_config, ChildServer,
};

const INFER: &str = "/v2/models/tiny-pipe/infer";
const INPUT_LEN: usize = 3 * 32 * 32;

/// Image i: first half `a`, second half `b`.
fn image(a: f32, b: f32) -> Vec<f32> {
    let mut values = vec![a; INPUT_LEN / 2];
    values.resize(INPUT_LEN, b);
    values
}

fn expected(a: f32, b: f32) -> Vec<f32> {
    let mut values = vec![a; 5];
    values.resize(10, b);
    values
}

fn infer_body(images: &[Vec<f32>]) -> serde_json::Value {
    let data: Vec<f32> = images.iter().flatten().copied().collect();
    json!({
        "id": "pipe",
        "inputs": [{"name": "input", "shape": [images.len(), 3, 32, 32], "datatype": "FP32", "data": data}]
    })
}

fn output_values(response: &serve_support::Response) -> Vec<f32> {
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// The value of the sample `name{labels}` in a Prometheus exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn serve_routes_a_pipeline_config_to_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = shipped_config(
        "tiny-sim-pipeline.toml",
        dir.path(),
        port,
        "drain_time = \"5s\"",
        metrics_port,
    );
    let mut server = ChildServer::start(&config, dir.path());
    server.wait_ready(addr);

    // Served under pipeline.name, with the first stage's input and the last stage's
    // output; `[model] name` is not served.
    let metadata = get(addr, "/v2/models/tiny-pipe");
    assert_eq!(metadata.status, 200, "{}", server.log());
    let metadata = metadata.json();
    assert_eq!(metadata["inputs"][0]["shape"], json!([-1, 3, 32, 32]));
    assert_eq!(metadata["outputs"][0]["shape"], json!([-1, 10]));
    assert_eq!(get(addr, "/v2/models/tiny-pipe/ready").status, 200);
    assert_eq!(get(addr, "/v2/models/tiny").status, 404);

    // Answers are the chained stages' outputs, in request order.
    let pairs = [(0.5, 0.5), (1.0, 3.0), (-2.0, 7.25)];
    let images: Vec<Vec<f32>> = pairs.iter().map(|&(a, b)| image(a, b)).collect();
    let response = post_json(addr, INFER, &infer_body(&images));
    let body = response.json();
    assert_eq!(body["model_name"], "tiny-pipe");
    assert_eq!(body["outputs"][0]["shape"], json!([3, 10]));
    assert_eq!(body["parameters"]["mica_unit"], "dla0>gpu");
    assert_eq!(body["parameters"]["mica_engine"], "sim");
    let want: Vec<f32> = pairs.iter().flat_map(|&(a, b)| expected(a, b)).collect();
    assert_eq!(output_values(&response), want);

    // The binary extension works alike.
    let head = json!({
        "inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                    "parameters": {"binary_data_size": INPUT_LEN * 4}}]
    });
    let response = post_binary(addr, INFER, &head, &le_bytes(&image(4.0, -1.0)));
    assert_eq!(output_values(&response), expected(4.0, -1.0));

    // Concurrent clients: every answer belongs to its own request.
    let clients: Vec<_> = (0..6)
        .map(|c| {
            std::thread::spawn(move || {
                for r in 0..8 {
                    let (a, b) = (c as f32, r as f32 + 0.5);
                    let images = vec![image(a, b); 1 + (c + r) % 3];
                    let got = output_values(&post_json(addr, INFER, &infer_body(&images)));
                    let want: Vec<f32> = images.iter().flat_map(|_| expected(a, b)).collect();
                    assert_eq!(got, want, "client {c} request {r}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }

    // The normal model's validation: a wrong shape is 400 naming it, too many
    // images is 400, an unknown version is 404.
    let bad = json!({
        "inputs": [{"name": "input", "shape": [1, 3, 32, 31], "datatype": "FP32",
                    "data": vec![0.0; 3 * 32 * 31]}]
    });
    let response = post_json(addr, INFER, &bad);
    assert_eq!(response.status, 400);
    assert!(response.error().contains("shape"), "{}", response.error());
    let response = post_json(addr, INFER, &infer_body(&vec![image(1.0, 1.0); 17]));
    assert_eq!(response.status, 400, "{}", response.error());
    assert_eq!(
        post_json(
            addr,
            "/v2/models/tiny-pipe/versions/9/infer",
            &infer_body(&images)
        )
        .status,
        404
    );

    // Per-stage series on the metrics port.
    let metrics_addr: SocketAddr = ([127, 0, 0, 1], metrics_port).into();
    let exposition = get(metrics_addr, "/metrics");
    assert_eq!(exposition.status, 200);
    let text = String::from_utf8(exposition.body).unwrap();
    let answered = 3
        + 1
        + (0..6_usize)
            .flat_map(|c| (0..8_usize).map(move |r| 1 + (c + r) % 3))
            .sum::<usize>();
    for (stage, unit) in [("stage0", "dla0"), ("stage1", "gpu")] {
        let labels = format!("{{stage=\"{stage}\",unit=\"{unit}\"}}");
        let images = sample(&text, &format!("mica_pipeline_stage_images_total{labels}"));
        assert_eq!(images, Some(answered as f64), "{stage}\n{text}");
        let batches = sample(&text, &format!("mica_pipeline_stage_batches_total{labels}"));
        assert!(batches.is_some_and(|b| b >= 1.0), "{stage}\n{text}");
        assert!(
            text.contains(&format!(
                "mica_pipeline_stage_service_seconds_count{labels}"
            )),
            "{stage}\n{text}"
        );
    }
    assert!(
        text.contains("nv_inference_request_success{model=\"tiny-pipe\",version=\"1\"}"),
        "{text}"
    );

    // SIGTERM: drains and exits 0.
    let status = server.terminate();
    assert!(status.success(), "exited with {status}\n{}", server.log());
    let mut log = String::new();
    std::fs::File::open(&server.log)
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("starting a pipeline"), "{log}");
}
