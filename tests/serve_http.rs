//! The HTTP layer end to end, over a real socket: every endpoint, the documented status
//! of every kind of bad request, and the server still serving after each.

mod serve_support;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use image::{ImageEncoder, Rgb, RgbImage};
use serde_json::json;
use serve_support::*;

const INFER: &str = "/v2/models/tiny/infer";

struct Fixture {
    server: TestServer,
    backend: Arc<FakeBackend>,
    _labels: tempfile::NamedTempFile,
}

fn fixture() -> Fixture {
    let labels = label_file();
    let backend = FakeBackend::ready();
    let server = TestServer::start(test_settings(labels.path()), test_model(), backend.clone());
    Fixture {
        server,
        backend,
        _labels: labels,
    }
}

/// The server answers a good request after whatever came before.
fn assert_still_serving(f: &Fixture) {
    let response = post_json(f.server.addr, INFER, &json_infer(1));
    assert_eq!(
        response.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(get(f.server.addr, "/v2/health/live").status, 200);
    // Load balancers probe with HEAD too.
    for path in ["/v2/health/live", "/v2/health/ready"] {
        let head = serve_support::request(f.server.addr, "HEAD", path, &[], b"");
        assert_eq!(head.status, 200, "HEAD {path}");
    }
}

fn assert_error(response: &Response, status: u16, needle: &str) {
    assert_eq!(
        response.status,
        status,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    let message = response.error();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

#[test]
fn health_and_metadata_endpoints() {
    let f = fixture();
    let addr = f.server.addr;
    assert_eq!(get(addr, "/v2/health/live").status, 200);
    assert_eq!(get(addr, "/v2/health/ready").status, 200);
    assert_eq!(get(addr, "/v2/models/tiny/ready").status, 200);
    assert_eq!(get(addr, "/v2/models/tiny/versions/1/ready").status, 200);

    let server = get(addr, "/v2").json();
    assert_eq!(server["name"], "mica");
    for extension in [
        "binary_tensor_data",
        "classification",
        "model_configuration",
        "statistics",
    ] {
        assert!(
            server["extensions"]
                .as_array()
                .unwrap()
                .contains(&json!(extension)),
            "{server}"
        );
    }

    for path in ["/v2/models/tiny", "/v2/models/tiny/versions/1"] {
        let model = get(addr, path).json();
        assert_eq!(model["name"], "tiny");
        assert_eq!(model["versions"], json!(["1"]));
        assert_eq!(
            model["inputs"][0],
            json!({"name": "input", "datatype": "FP32", "shape": [-1, 3, 4, 4]})
        );
        assert_eq!(
            model["inputs"][1],
            json!({"name": "image", "datatype": "BYTES", "shape": [-1, 1]})
        );
        assert_eq!(
            model["outputs"][0],
            json!({"name": "output", "datatype": "FP32", "shape": [-1, 5]})
        );
    }

    let config = get(addr, "/v2/models/tiny/config").json();
    assert_eq!(config["name"], "tiny");
    // Bounded by the backend's largest batch (4), below the configured 8.
    assert_eq!(config["max_batch_size"], 4);
    assert_eq!(config["input"][0]["data_type"], "TYPE_FP32");
    assert_eq!(config["input"][0]["format"], "FORMAT_NCHW");
    assert_eq!(config["input"][0]["dims"], json!([3, 4, 4]));
    assert_eq!(config["input"][1]["data_type"], "TYPE_STRING");
    assert_eq!(config["output"][0]["dims"], json!([5]));
    assert!(!config["output"][0]["label_filename"]
        .as_str()
        .unwrap()
        .is_empty());
    assert_eq!(config["dynamic_batching"]["priority_levels"], 3);
    assert_eq!(
        get(addr, "/v2/models/tiny/versions/1/config").json(),
        config
    );

    let index = request(addr, "POST", "/v2/repository/index", &[], b"").json();
    assert_eq!(
        index,
        json!([{"name": "tiny", "version": "1", "state": "READY", "reason": ""}])
    );
}

#[test]
fn unknown_models_versions_paths_and_methods() {
    let f = fixture();
    let addr = f.server.addr;
    assert_error(&get(addr, "/v2/models/nope"), 404, "unknown model \"nope\"");
    assert_error(&get(addr, "/v2/models/nope/config"), 404, "nope");
    assert_error(
        &post_json(addr, "/v2/models/nope/infer", &json_infer(1)),
        404,
        "nope",
    );
    assert_error(
        &get(addr, "/v2/models/tiny/versions/7"),
        404,
        "no version \"7\"",
    );
    assert_error(
        &post_json(addr, "/v2/models/tiny/versions/7/infer", &json_infer(1)),
        404,
        "7",
    );
    assert_error(&get(addr, "/v3/anything"), 404, "/v3/anything");
    assert_error(&get(addr, INFER), 405, "GET");
    assert_still_serving(&f);
}

#[test]
fn json_inference_answers_with_values_and_where_it_ran() {
    let f = fixture();
    let response = post_json(f.server.addr, INFER, &json_infer(2));
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["model_name"], "tiny");
    assert_eq!(body["model_version"], "1");
    assert_eq!(body["id"], "req-1");
    assert_eq!(
        body["parameters"],
        json!({"mica_unit": "fake0", "mica_engine": "fake", "mica_queue_wait_us": 10, "mica_batch_images": 2})
    );
    let output = &body["outputs"][0];
    assert_eq!(output["name"], "output");
    assert_eq!(output["datatype"], "FP32");
    assert_eq!(output["shape"], json!([2, 5]));
    // Image 0 is all 1.0 (sum 48), image 1 all 2.0 (sum 96).
    assert_eq!(
        output["data"],
        json!([48.0, 49.0, 50.0, 51.0, 52.0, 96.0, 97.0, 98.0, 99.0, 100.0])
    );

    // Nested data, an explicit output and the version path work alike.
    let nested: Vec<Vec<Vec<Vec<f32>>>> = vec![vec![vec![vec![0.5; 4]; 4]; 3]];
    let body = json!({
        "inputs": [{"name": "input", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": nested}],
        "outputs": [{"name": "output"}]
    });
    let response = post_json(f.server.addr, "/v2/models/tiny/versions/1/infer", &body);
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["outputs"][0]["data"][0], 24.0);
}

#[test]
fn malformed_requests_are_400_naming_the_field() {
    let f = fixture();
    let addr = f.server.addr;
    let infer = |body: serde_json::Value| post_json(addr, INFER, &body);
    let input = |shape: serde_json::Value, datatype: &str, data: serde_json::Value| json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]});
    let ones = |n: usize| json!(vec![1.0; n]);

    let broken = request(addr, "POST", INFER, &[], b"{\"inputs\": [");
    assert_error(&broken, 400, "malformed request JSON");
    assert_still_serving(&f);
    assert_error(&infer(json!({"outputs": []})), 400, "inputs");
    assert_error(
        &infer(input(json!([1, 3, 4]), "FP32", ones(48))),
        400,
        "shape [1, 3, 4]",
    );
    assert_error(
        &infer(input(json!([1, 4, 4, 3]), "FP32", ones(48))),
        400,
        "[-1, 3, 4, 4]",
    );
    assert_error(
        &infer(input(json!([1, 3, 4, 4]), "INT32", ones(48))),
        400,
        "datatype \"INT32\"",
    );
    assert_error(
        &infer(input(json!([1, 3, 4, 4]), "FP32", ones(47))),
        400,
        "47 values",
    );
    assert_error(
        &infer(input(json!([1, 3, 4, 4]), "FP32", json!(["a"]))),
        400,
        "numbers",
    );
    assert_error(
        &infer(input(json!([1, 3, 4, 4]), "FP32", json!([1, "a"]))),
        400,
        "mixes",
    );
    assert_error(
        &infer(input(json!([5, 3, 4, 4]), "FP32", ones(240))),
        400,
        "max_batch_size 4",
    );
    assert_error(
        &infer(input(json!([0, 3, 4, 4]), "FP32", ones(0))),
        400,
        "batch size 0",
    );
    assert_error(
        &infer(input(json!([-1, 3, 4, 4]), "FP32", ones(48))),
        400,
        "batch size -1",
    );
    assert_error(
        &infer(json!({"inputs": [{"name": "input", "shape": [1, 3, 4, 4], "datatype": "FP32"}]})),
        400,
        "neither data nor binary_data_size",
    );
    assert_error(
        &infer(json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]})),
        400,
        "unknown input \"x\"",
    );
    let mut body = json_infer(1);
    body["outputs"] = json!([{"name": "logits"}]);
    assert_error(&infer(body), 400, "unknown output \"logits\"");
    let mut body = json_infer(1);
    body["parameters"] = json!({"priority": 9});
    assert_error(&infer(body), 400, "parameters.priority");
    let mut body = json_infer(1);
    body["parameters"] = json!({"timeout": "soon"});
    assert_error(&infer(body), 400, "parameters.timeout");
    let mut body = json_infer(1);
    body["outputs"] = json!([{"name": "output", "parameters": {"binary_data": 1}}]);
    assert_error(&infer(body), 400, "parameters.binary_data");
    assert_still_serving(&f);
}

#[test]
fn binary_inputs_and_outputs() {
    let f = fixture();
    let addr = f.server.addr;
    let values: Vec<f32> = (0..INPUT_LEN).map(|i| i as f32 * 0.5).collect();
    let header = |size: usize| {
        json!({
            "inputs": [{"name": "input", "shape": [1, 3, 4, 4], "datatype": "FP32",
                        "parameters": {"binary_data_size": size}}],
            "outputs": [{"name": "output", "parameters": {"binary_data": true}}]
        })
    };
    let response = post_binary(addr, INFER, &header(INPUT_LEN * 4), &le_bytes(&values));
    assert_eq!(
        response.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/octet-stream")
    );
    let json_len: usize = response
        .header("inference-header-content-length")
        .unwrap()
        .parse()
        .unwrap();
    let head: serde_json::Value = serde_json::from_slice(&response.body[..json_len]).unwrap();
    assert_eq!(
        head["outputs"][0]["parameters"]["binary_data_size"],
        OUTPUT_LEN * 4
    );
    assert!(head["outputs"][0].get("data").is_none());
    let out: Vec<f32> = response.body[json_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let sum: f32 = values.iter().sum();
    assert_eq!(
        out,
        (0..OUTPUT_LEN).map(|j| sum + j as f32).collect::<Vec<_>>()
    );

    // Request-wide binary_data_output.
    let mut body = json_infer(1);
    body["parameters"] = json!({"binary_data_output": true});
    let response = post_json(addr, INFER, &body);
    assert_eq!(response.status, 200);
    assert!(response.header("inference-header-content-length").is_some());

    // Bad lengths: header past the body, size past the data, data nobody claims.
    let bytes = le_bytes(&values);
    let json_text = header(INPUT_LEN * 4).to_string();
    let mut body = json_text.clone().into_bytes();
    body.extend_from_slice(&bytes);
    let too_long = [(
        "Inference-Header-Content-Length",
        (body.len() + 1).to_string(),
    )];
    assert_error(
        &request(addr, "POST", INFER, &too_long, &body),
        400,
        "Inference-Header-Content-Length",
    );
    let not_number = [("Inference-Header-Content-Length", "ten".to_string())];
    assert_error(
        &request(addr, "POST", INFER, &not_number, &body),
        400,
        "non-negative integer",
    );
    let short = [(
        "Inference-Header-Content-Length",
        (json_text.len() - 3).to_string(),
    )];
    assert_error(
        &request(addr, "POST", INFER, &short, &body),
        400,
        "malformed request JSON",
    );
    assert_error(
        &post_binary(addr, INFER, &header(INPUT_LEN * 4 + 4), &bytes),
        400,
        "binary_data_size",
    );
    let mut extra = bytes.clone();
    extra.extend_from_slice(&[0; 4]);
    assert_error(
        &post_binary(addr, INFER, &header(INPUT_LEN * 4), &extra),
        400,
        "not claimed",
    );
    assert_error(
        &post_binary(
            addr,
            INFER,
            &header(INPUT_LEN * 4 - 4),
            &bytes[..INPUT_LEN * 4 - 4],
        ),
        400,
        "47 values",
    );
    assert_error(
        &post_binary(addr, INFER, &header(6), &bytes[..6]),
        400,
        "multiple of 4",
    );
    // NaN and infinities in binary data are refused, naming the input and the value
    // (else they would come back as JSON nulls inside the FP32 output).
    for (index, bad) in [(5, f32::NAN), (47, f32::INFINITY), (0, f32::NEG_INFINITY)] {
        let mut values = values.clone();
        values[index] = bad;
        let mut json_out = header(INPUT_LEN * 4);
        json_out["outputs"] = json!([]);
        assert_error(
            &post_binary(addr, INFER, &json_out, &le_bytes(&values)),
            400,
            &format!("input \"input\": value {index} is {bad}; FP32 inputs must be finite"),
        );
    }
    assert_still_serving(&f);
}

#[test]
fn classification_returns_labelled_top_k() {
    let f = fixture();
    let mut body = json_infer(2);
    body["outputs"] = json!([{"name": "output", "parameters": {"classification": 2}}]);
    let response = post_json(f.server.addr, INFER, &body);
    assert_eq!(response.status, 200);
    let output = &response.json()["outputs"][0];
    assert_eq!(output["datatype"], "BYTES");
    assert_eq!(output["shape"], json!([2, 2]));
    assert_eq!(
        output["data"],
        json!([
            "52.000000:4:four",
            "51.000000:3:three",
            "100.000000:4:four",
            "99.000000:3:three"
        ])
    );
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x * 7) as u8, (y * 5) as u8, 128])
    });
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            image.as_raw(),
            width,
            height,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let image = RgbImage::from_pixel(width, height, Rgb([200, 100, 50]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .write_image(
            image.as_raw(),
            width,
            height,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

#[test]
fn raw_images_are_decoded_and_preprocessed() {
    let f = fixture();
    let addr = f.server.addr;
    let images = [png(40, 30), jpeg(16, 64)];
    let tensor = bytes_tensor(&[&images[0], &images[1]]);
    let header = |shape: serde_json::Value, size: usize| {
        json!({"inputs": [{"name": "image", "shape": shape, "datatype": "BYTES",
                           "parameters": {"binary_data_size": size}}]})
    };
    let response = post_binary(addr, INFER, &header(json!([2, 1]), tensor.len()), &tensor);
    assert_eq!(
        response.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    let output = &response.json()["outputs"][0];
    assert_eq!(output["shape"], json!([2, 5]));
    // The JPEG is one flat color: its normalized channels are known.
    let expected: f32 = [
        (200.0, 0.485, 0.229),
        (100.0, 0.456, 0.224),
        (50.0, 0.406, 0.225),
    ]
    .iter()
    .map(|(v, m, s)| 16.0 * ((v / 255.0 - m) / s))
    .sum();
    let got = output["data"][5].as_f64().unwrap() as f32;
    assert!((got - expected).abs() < 1.0, "{got} vs {expected}");

    let one = bytes_tensor(&[&images[0]]);
    assert_eq!(
        post_binary(addr, INFER, &header(json!([1]), one.len()), &one).status,
        200
    );
    let gif = bytes_tensor(&[b"GIF89a not really"]);
    assert_error(
        &post_binary(addr, INFER, &header(json!([1]), gif.len()), &gif),
        400,
        "not a JPEG or PNG",
    );
    assert_error(
        &post_binary(addr, INFER, &header(json!([2]), one.len()), &one),
        400,
        "1 images given",
    );
    let truncated = &tensor[..tensor.len() - 10];
    assert_error(
        &post_binary(addr, INFER, &header(json!([2]), truncated.len()), truncated),
        400,
        "claims",
    );
    let as_json =
        json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["abc"]}]});
    assert_error(&post_json(addr, INFER, &as_json), 400, "binary data");
    let wrong_type =
        json!({"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1]}]});
    assert_error(
        &post_json(addr, INFER, &wrong_type),
        400,
        "datatype \"FP32\"",
    );
    let mut both = json_infer(1);
    both["inputs"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "image", "shape": [1], "datatype": "BYTES",
        "parameters": {"binary_data_size": one.len()}}));
    let both_json = both.to_string();
    let mut body = both_json.clone().into_bytes();
    body.extend_from_slice(&one);
    let len = [(
        "Inference-Header-Content-Length",
        both_json.len().to_string(),
    )];
    assert_error(
        &request(addr, "POST", INFER, &len, &body),
        400,
        "exactly one of",
    );
    assert_still_serving(&f);
}

#[test]
fn oversized_bodies_are_413() {
    let f = fixture();
    let addr = f.server.addr;
    // Announced too large: refused before the body is read.
    let head = format!(
        "POST {INFER} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{{\"inputs\":",
        10 * 1024 * 1024
    );
    assert_error(
        &raw(addr, head.as_bytes()),
        413,
        "exceeds the limit of 65536 bytes",
    );
    // Chunked, no length announced: refused once the limit is crossed.
    let mut chunked = format!(
        "POST {INFER} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..20 {
        write!(chunked, "{:x}\r\n{}\r\n", 8192, " ".repeat(8192)).unwrap();
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_error(&raw(addr, &chunked), 413, "exceeds the limit");
    // A JSON body that is simply too big.
    let mut padded = json_infer(1);
    padded["pad"] = json!("x".repeat(70 * 1024));
    let response = post_json(addr, INFER, &padded);
    assert_error(&response, 413, "exceeds the limit");
    assert_still_serving(&f);
}

#[test]
fn overload_is_429_with_retry_after() {
    let f = fixture();
    f.backend.overloaded.store(true, Ordering::SeqCst);
    let response = post_json(f.server.addr, INFER, &json_infer(1));
    assert_error(&response, 429, "overloaded");
    assert_eq!(response.header("retry-after"), Some("2"));
    f.backend.overloaded.store(false, Ordering::SeqCst);
    assert_still_serving(&f);
}

#[test]
fn priority_and_timeout_reach_the_backend_and_timeouts_are_errors() {
    let f = fixture();
    let addr = f.server.addr;
    let mut body = json_infer(1);
    body["parameters"] = json!({"priority": 1, "timeout": 5_000_000});
    assert_eq!(post_json(addr, INFER, &body).status, 200);
    assert_eq!(f.backend.last_priority.load(Ordering::SeqCst), 0);
    let timeout = f.backend.last_timeout.lock().unwrap().unwrap();
    assert!(
        timeout <= Duration::from_secs(5) && timeout > Duration::from_secs(4),
        "{timeout:?}"
    );
    // No priority: the default (the lowest of 3 levels), no timeout.
    assert_eq!(post_json(addr, INFER, &json_infer(1)).status, 200);
    assert_eq!(f.backend.last_priority.load(Ordering::SeqCst), 2);
    assert_eq!(*f.backend.last_timeout.lock().unwrap(), None);

    f.backend.delay_ms.store(300, Ordering::SeqCst);
    let mut body = json_infer(1);
    body["parameters"] = json!({"timeout": 20_000});
    assert_error(&post_json(addr, INFER, &body), 503, "timed out");
    f.backend.delay_ms.store(0, Ordering::SeqCst);
    assert_still_serving(&f);
}

#[test]
fn not_ready_is_503() {
    let f = fixture();
    f.backend.ready.store(false, Ordering::SeqCst);
    let addr = f.server.addr;
    assert_error(&get(addr, "/v2/health/ready"), 503, "loading");
    assert_error(&get(addr, "/v2/models/tiny/ready"), 503, "not ready");
    assert_error(&post_json(addr, INFER, &json_infer(1)), 503, "not ready");
    assert_eq!(get(addr, "/v2/health/live").status, 200);
    assert_eq!(get(addr, "/v2/models/tiny/config").status, 200);
    f.backend.ready.store(true, Ordering::SeqCst);
    assert_still_serving(&f);
}

#[test]
fn statistics_count_successes_and_failures() {
    let f = fixture();
    let addr = f.server.addr;
    assert_eq!(post_json(addr, INFER, &json_infer(2)).status, 200);
    assert_eq!(post_json(addr, INFER, &json_infer(1)).status, 200);
    assert_eq!(request(addr, "POST", INFER, &[], b"nope").status, 400);
    for path in [
        "/v2/models/tiny/stats",
        "/v2/models/tiny/versions/1/stats",
        "/v2/models/stats",
    ] {
        let stats = get(addr, path).json();
        let model = &stats["model_stats"][0];
        assert_eq!(model["name"], "tiny");
        assert_eq!(model["version"], "1");
        assert_eq!(model["inference_count"], 3);
        assert_eq!(model["execution_count"], 2);
        let s = &model["inference_stats"];
        assert_eq!(s["success"]["count"], 2);
        assert_eq!(s["fail"]["count"], 1);
        assert_eq!(s["queue"]["count"], 2);
        assert!(s["compute_infer"]["ns"].as_u64().unwrap() > 0);
        for key in ["compute_input", "compute_output", "cache_hit", "cache_miss"] {
            assert!(s[key]["count"].is_u64(), "{key}");
        }
        assert_eq!(model["batch_stats"].as_array().unwrap().len(), 2);
    }
    assert_error(&get(addr, "/v2/models/other/stats"), 404, "other");
}

#[test]
fn kept_alive_connections_serve_many_requests() {
    use std::io::{BufRead, BufReader, Read};
    let f = fixture();
    let mut stream = std::net::TcpStream::connect(f.server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = json_infer(1).to_string();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for _ in 0..5 {
        write!(
            stream,
            "POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "{status}");
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
    }
}
