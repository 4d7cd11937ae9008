//! The load generator's HTTP target: KServe v2 inference requests to a running server,
//! with the input as binary tensor data and binary outputs, so that JSON encoding of
//! large tensors does not dominate what is measured.

use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use awc::http::StatusCode;
use mica_actors::InferError;
use serde::Deserialize;

use futures::future::LocalBoxFuture;

use crate::bench::{Answer, LoadTarget};

/// A server's model, as its metadata endpoint describes it.
#[derive(Debug, Clone, Deserialize)]
struct ModelMetadata {
    inputs: Vec<TensorMetadata>,
}

#[derive(Debug, Clone, Deserialize)]
struct TensorMetadata {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

#[derive(Debug, Deserialize)]
struct ResponseHeader {
    #[serde(default)]
    parameters: ResponseParameters,
    outputs: Vec<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct ResponseParameters {
    #[serde(default)]
    mica_unit: Option<String>,
    #[serde(default)]
    mica_engine: Option<String>,
    #[serde(default)]
    mica_queue_wait_us: Option<u64>,
    #[serde(default)]
    mica_batch_images: Option<u32>,
}

/// One model on one server.
#[derive(Clone)]
pub struct HttpTarget {
    client: awc::Client,
    infer_url: Rc<str>,
    input_name: Rc<str>,
    /// Bytes of one image's FP32 input.
    image_bytes: usize,
    /// Per-image shape (without the batch dimension).
    image_shape: Rc<[i64]>,
}

impl HttpTarget {
    /// Connects to `url` (e.g. `http://127.0.0.1:8000`) and reads `model`'s metadata.
    pub async fn connect(url: &str, model: &str) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--url must start with http:// (got {url:?})");
        }
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(120))
            .finish();
        let metadata_url = format!("{base}/v2/models/{model}");
        let mut response = client
            .get(&metadata_url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{metadata_url}: {e}"))?;
        if !response.status().is_success() {
            let body = response.body().await.unwrap_or_default();
            bail!(
                "{metadata_url}: {} {}",
                response.status(),
                String::from_utf8_lossy(&body)
            );
        }
        let metadata: ModelMetadata = response
            .json()
            .limit(1 << 20)
            .await
            .with_context(|| format!("{metadata_url}: not KServe v2 model metadata"))?;
        let input = metadata
            .inputs
            .iter()
            .find(|i| i.datatype == "FP32")
            .with_context(|| format!("{metadata_url}: the model has no FP32 input"))?;
        let image_shape: Vec<i64> = input.shape.iter().skip(1).copied().collect();
        if image_shape.iter().any(|d| *d <= 0) {
            bail!(
                "{metadata_url}: input shape {:?} has variable dimensions past the batch",
                input.shape
            );
        }
        let elements: i64 = image_shape.iter().product();
        Ok(Self {
            client,
            infer_url: Rc::from(format!("{base}/v2/models/{model}/infer")),
            input_name: Rc::from(input.name.as_str()),
            image_bytes: elements as usize * 4,
            image_shape: Rc::from(image_shape),
        })
    }

    /// Sends one request of `images` zero images and reads what the server says of it.
    async fn request(&self, images: u32) -> Result<Answer, InferError> {
        let mut shape = vec![i64::from(images)];
        shape.extend_from_slice(&self.image_shape);
        let data_bytes = self.image_bytes * images as usize;
        let header = serde_json::json!({
            "inputs": [{
                "name": &*self.input_name,
                "datatype": "FP32",
                "shape": shape,
                "parameters": {"binary_data_size": data_bytes},
            }],
            "parameters": {"binary_data_output": true},
        });
        let mut body =
            serde_json::to_vec(&header).map_err(|e| InferError::Invalid(e.to_string()))?;
        let header_length = body.len();
        body.resize(header_length + data_bytes, 0);
        let mut response = self
            .client
            .post(&*self.infer_url)
            .insert_header(("Inference-Header-Content-Length", header_length))
            .insert_header(("Content-Type", "application/octet-stream"))
            .send_body(body)
            .await
            .map_err(|e| InferError::Unavailable(format!("request failed: {e}")))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let json_length = response
            .headers()
            .get("Inference-Header-Content-Length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let bytes = response
            .body()
            .limit(256 << 20)
            .await
            .map_err(|e| InferError::Unavailable(format!("reading the response: {e}")))?;
        if status != StatusCode::OK {
            let message = String::from_utf8_lossy(&bytes).to_string();
            return Err(match status {
                StatusCode::TOO_MANY_REQUESTS => InferError::Overloaded {
                    retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
                },
                StatusCode::BAD_REQUEST => InferError::Invalid(message),
                StatusCode::SERVICE_UNAVAILABLE => InferError::Unavailable(message),
                _ => InferError::Engine(format!("{status}: {message}")),
            });
        }
        let json = &bytes[..json_length.unwrap_or(bytes.len()).min(bytes.len())];
        let header: ResponseHeader = serde_json::from_slice(json)
            .map_err(|e| InferError::Engine(format!("malformed response: {e}")))?;
        if header.outputs.is_empty() {
            return Err(InferError::Engine("response has no outputs".into()));
        }
        let p = header.parameters;
        Ok(Answer {
            unit: p.mica_unit.unwrap_or_else(|| "server".to_string()),
            unit_index: None,
            engine: p.mica_engine.unwrap_or_else(|| "remote".to_string()),
            images,
            batch_images: p.mica_batch_images.unwrap_or(images),
            queue_wait: Duration::from_micros(p.mica_queue_wait_us.unwrap_or(0)),
        })
    }
}

impl LoadTarget for HttpTarget {
    fn infer(&self, images: u32) -> LocalBoxFuture<'_, Result<Answer, InferError>> {
        Box::pin(self.request(images))
    }
}
