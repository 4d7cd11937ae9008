//! Settings of the HTTP server (`[server]`) and of the model it serves (`[model]`),
//! and the label file the server names.
//!
//! Both are plain serde structs: unknown keys are errors, every key has a default, and
//! `validate` names the key that is wrong.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::Invalid;

/// The HTTP server: where it listens, how much it accepts, how it stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    #[serde(default = "default_address")]
    pub address: IpAddr,
    /// TCP port to listen on (0 picks a free one).
    #[serde(default = "default_port")]
    pub port: u16,
    /// TCP port of the gRPC front end (KServe v2 / Triton `GRPCInferenceService`) on
    /// the same address; 0 turns gRPC off.
    #[serde(default = "default_grpc_port")]
    pub grpc_port: u16,
    /// HTTP worker threads (each runs its own async executor); the gRPC front end
    /// runs on as many threads.
    #[serde(default = "default_http_workers")]
    pub http_workers: usize,
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Longest a graceful shutdown waits for accepted requests, e.g. `"30s"`; what is
    /// still running then is answered 503.
    #[serde(default = "default_drain_time", with = "duration_text")]
    pub drain_time: Duration,
    /// Threads decoding request bodies and preprocessing images.
    #[serde(default = "default_preprocess_threads")]
    pub preprocess_threads: usize,
    /// Requests that may wait for a preprocessing thread; more get 429.
    #[serde(default = "default_preprocess_queue")]
    pub preprocess_queue: usize,
    /// File with one class label per line (line i labels output index i), used by the
    /// classification extension.
    #[serde(default)]
    pub label_file: Option<PathBuf>,
    /// Priority level (0 the most urgent) of requests that name none (or `priority` 0).
    /// Levels past the service's last are clamped to it.
    #[serde(default = "default_default_priority")]
    pub default_priority: u8,
    /// Longest a client may take to send a request's head (line and headers), e.g.
    /// `"5s"`; slower ones get 408 and the connection is closed.
    #[serde(default = "default_header_timeout", with = "duration_text")]
    pub header_timeout: Duration,
    /// Longest a client may take to send a request's whole body, e.g. `"30s"`; slower
    /// (or unfinished) bodies get 408 and the connection is closed.
    #[serde(default = "default_body_timeout", with = "duration_text")]
    pub body_timeout: Duration,
    /// How long an idle kept-alive connection stays open, e.g. `"5s"`.
    #[serde(default = "default_keep_alive", with = "duration_text")]
    pub keep_alive: Duration,
    /// Most client connections open at once (over all HTTP workers); more wait in the
    /// listen backlog. Keep it below the process's file-descriptor limit
    /// (`LimitNOFILE` in the systemd unit).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Bytes that request bodies being read and the tensors decoded from them (until
    /// answered) may hold together; a request that does not fit gets 503 with
    /// `Retry-After`. At least `max_body_bytes`.
    #[serde(default = "default_memory_budget_bytes")]
    pub memory_budget_bytes: usize,
    /// Threads decoding raw images, a pool of their own so that image requests never
    /// hold up the threads parsing tensor bodies.
    #[serde(default = "default_image_threads")]
    pub image_threads: usize,
    /// Image requests that may wait for an image thread; more get 429 with
    /// `Retry-After`.
    #[serde(default = "default_image_queue")]
    pub image_queue: usize,
    /// Most pixels (width × height) an image may declare; larger ones get 400 before
    /// any pixel is decoded.
    #[serde(default = "default_max_image_pixels")]
    pub max_image_pixels: u64,
    /// Most bytes decoding one image may allocate (its decoded pixels, and their RGB
    /// copy when it has another color type); larger ones get 400 before decoding.
    /// The bytes are also held on `memory_budget_bytes` while the image decodes.
    #[serde(default = "default_max_image_decode_bytes")]
    pub max_image_decode_bytes: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            address: default_address(),
            port: default_port(),
            grpc_port: default_grpc_port(),
            http_workers: default_http_workers(),
            max_body_bytes: default_max_body_bytes(),
            drain_time: default_drain_time(),
            preprocess_threads: default_preprocess_threads(),
            preprocess_queue: default_preprocess_queue(),
            label_file: None,
            default_priority: default_default_priority(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            keep_alive: default_keep_alive(),
            max_connections: default_max_connections(),
            memory_budget_bytes: default_memory_budget_bytes(),
            image_threads: default_image_threads(),
            image_queue: default_image_queue(),
            max_image_pixels: default_max_image_pixels(),
            max_image_decode_bytes: default_max_image_decode_bytes(),
        }
    }
}

impl ServerSettings {
    /// Checks values; the error names the bad key.
    pub fn validate(&self) -> Result<(), Invalid> {
        let key = |field: &str| format!("server.{field}");
        let between = |field: &str, value: usize, low: usize, high: usize| {
            if value < low || value > high {
                Err(Invalid::new(
                    key(field),
                    format!("must be between {low} and {high}, got {value}"),
                ))
            } else {
                Ok(())
            }
        };
        between("http_workers", self.http_workers, 1, 256)?;
        if self.grpc_port != 0 && self.grpc_port == self.port {
            return Err(Invalid::new(
                key("grpc_port"),
                format!("must differ from server.port (both {})", self.port),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(Invalid::new(
                key("max_body_bytes"),
                format!("must be at least 1024, got {}", self.max_body_bytes),
            ));
        }
        if self.drain_time > Duration::from_secs(3600) {
            return Err(Invalid::new(key("drain_time"), "must be at most 1h"));
        }
        for (field, value) in [
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
            ("keep_alive", self.keep_alive),
        ] {
            if value.is_zero() || value > Duration::from_secs(3600) {
                return Err(Invalid::new(
                    key(field),
                    format!("must be between 1ms and 1h, got {value:?}"),
                ));
            }
        }
        if self.max_connections < self.http_workers || self.max_connections > 1_000_000 {
            return Err(Invalid::new(
                key("max_connections"),
                format!(
                    "must be between http_workers ({}) and 1000000, got {}",
                    self.http_workers, self.max_connections
                ),
            ));
        }
        if self.memory_budget_bytes < self.max_body_bytes {
            return Err(Invalid::new(
                key("memory_budget_bytes"),
                format!(
                    "({}) must be at least server.max_body_bytes ({})",
                    self.memory_budget_bytes, self.max_body_bytes
                ),
            ));
        }
        between("preprocess_threads", self.preprocess_threads, 1, 256)?;
        if self.preprocess_queue == 0 {
            return Err(Invalid::new(key("preprocess_queue"), "must be at least 1"));
        }
        between("image_threads", self.image_threads, 1, 256)?;
        if self.image_queue == 0 {
            return Err(Invalid::new(key("image_queue"), "must be at least 1"));
        }
        if self.max_image_pixels < 1 << 16 {
            return Err(Invalid::new(
                key("max_image_pixels"),
                format!("must be at least 65536, got {}", self.max_image_pixels),
            ));
        }
        if self.max_image_decode_bytes < 3 << 16 {
            return Err(Invalid::new(
                key("max_image_decode_bytes"),
                format!(
                    "must be at least 196608 (an RGB image of 65536 pixels), got {}",
                    self.max_image_decode_bytes
                ),
            ));
        }
        if let Some(path) = &self.label_file {
            if path.as_os_str().is_empty() {
                return Err(Invalid::new(key("label_file"), "must not be empty"));
            }
        }
        Ok(())
    }
}

fn default_address() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

fn default_port() -> u16 {
    8000
}

fn default_grpc_port() -> u16 {
    8001
}

fn default_http_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
}

fn default_max_body_bytes() -> usize {
    64 * 1024 * 1024
}

fn default_drain_time() -> Duration {
    Duration::from_secs(30)
}

fn default_preprocess_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
}

fn default_preprocess_queue() -> usize {
    256
}

fn default_default_priority() -> u8 {
    u8::MAX
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(5)
}

fn default_max_connections() -> usize {
    4096
}

fn default_memory_budget_bytes() -> usize {
    1024 * 1024 * 1024
}

fn default_image_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 4))
}

fn default_image_queue() -> usize {
    64
}

/// 4096 × 4096: a 16 Mpx photo passes, an 8000 × 8000 bomb does not.
fn default_max_image_pixels() -> u64 {
    4096 * 4096
}

/// A 16 Mpx image with 16-bit RGBA samples (128 MiB) and its RGB copy (48 MiB) fit.
fn default_max_image_decode_bytes() -> u64 {
    192 * 1024 * 1024
}

/// The model the server exposes, as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Model name in URLs (`/v2/models/{name}`).
    #[serde(default = "default_model_name")]
    pub name: String,
    /// The one version served.
    #[serde(default = "default_model_version")]
    pub version: String,
    /// Platform reported in metadata and config.
    #[serde(default = "default_platform")]
    pub platform: String,
    /// Name of the FP32 input tensor.
    #[serde(default = "default_input_name")]
    pub input_name: String,
    /// Shape of one image's input, without the batch dimension.
    #[serde(default = "default_input_shape")]
    pub input_shape: Vec<usize>,
    /// Name of the FP32 output tensor.
    #[serde(default = "default_output_name")]
    pub output_name: String,
    /// Shape of one image's output, without the batch dimension.
    #[serde(default = "default_output_shape")]
    pub output_shape: Vec<usize>,
    /// Most images one request may carry (also bounded by the units' largest batch).
    #[serde(default = "default_max_batch")]
    pub max_batch: u32,
    /// Name of an optional BYTES input taking encoded JPEG/PNG images, one element per
    /// image, preprocessed into the FP32 input; absent: raw images are not accepted.
    #[serde(default)]
    pub image_input: Option<String>,
    /// How raw images become the FP32 input.
    #[serde(default)]
    pub preprocessing: PreprocessSettings,
    /// Filled by `mica serve` from `[[units]]`, never read from the file: each unit's
    /// id and what runs it (engine, provider, precision, DLA core), shown as the model
    /// config's `parameters` (`unit.<id>`).
    #[serde(skip)]
    pub units: Vec<(String, String)>,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            name: default_model_name(),
            version: default_model_version(),
            platform: default_platform(),
            input_name: default_input_name(),
            input_shape: default_input_shape(),
            output_name: default_output_name(),
            output_shape: default_output_shape(),
            max_batch: default_max_batch(),
            image_input: None,
            preprocessing: PreprocessSettings::default(),
            units: Vec::new(),
        }
    }
}

impl ModelSettings {
    /// Input elements of one image.
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Output elements of one image.
    pub fn output_len(&self) -> usize {
        self.output_shape.iter().product()
    }

    /// Height and width of the preprocessed image, from `input_shape` and the layout.
    pub fn image_size(&self) -> Option<(u32, u32)> {
        let (h, w, c) = match (self.preprocessing.layout, self.input_shape.as_slice()) {
            (Layout::Nchw, [c, h, w]) => (*h, *w, *c),
            (Layout::Nhwc, [h, w, c]) => (*h, *w, *c),
            _ => return None,
        };
        if c != 3 {
            return None;
        }
        Some((u32::try_from(h).ok()?, u32::try_from(w).ok()?))
    }

    /// Checks values; the error names the bad key.
    pub fn validate(&self) -> Result<(), Invalid> {
        let names = [
            ("model.name", &self.name),
            ("model.version", &self.version),
            ("model.input_name", &self.input_name),
            ("model.output_name", &self.output_name),
        ];
        for (key, value) in names {
            if value.is_empty() || value.contains('/') || value.chars().any(char::is_whitespace) {
                return Err(Invalid::new(
                    key,
                    format!("must be non-empty, without '/' or spaces, got {value:?}"),
                ));
            }
        }
        for (key, shape) in [
            ("model.input_shape", &self.input_shape),
            ("model.output_shape", &self.output_shape),
        ] {
            if shape.is_empty() || shape.contains(&0) {
                return Err(Invalid::new(
                    key,
                    format!("must list positive dimensions, got {shape:?}"),
                ));
            }
            let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if elements.is_none_or(|n| n > 1 << 28) {
                return Err(Invalid::new(
                    key,
                    format!("{shape:?} has too many elements"),
                ));
            }
        }
        if self.max_batch == 0 {
            return Err(Invalid::new("model.max_batch", "must be at least 1"));
        }
        if let Some(image_input) = &self.image_input {
            if image_input.is_empty() || image_input == &self.input_name {
                return Err(Invalid::new(
                    "model.image_input",
                    format!(
                        "must be non-empty and differ from model.input_name, got {image_input:?}"
                    ),
                ));
            }
            let Some((h, w)) = self.image_size() else {
                return Err(Invalid::new(
                    "model.input_shape",
                    format!(
                        "{:?} is not a 3-channel image in the {} layout of model.preprocessing.layout",
                        self.input_shape,
                        self.preprocessing.layout.as_str()
                    ),
                ));
            };
            self.preprocessing.validate(h, w)?;
        }
        Ok(())
    }
}

fn default_model_name() -> String {
    "resnet50".to_string()
}

fn default_model_version() -> String {
    "1".to_string()
}

fn default_platform() -> String {
    "mica".to_string()
}

fn default_input_name() -> String {
    "input".to_string()
}

fn default_input_shape() -> Vec<usize> {
    vec![3, 224, 224]
}

fn default_output_name() -> String {
    "output".to_string()
}

fn default_output_shape() -> Vec<usize> {
    vec![1000]
}

fn default_max_batch() -> u32 {
    32
}

/// Labels read from the label file.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    /// File name (reported as `label_filename`).
    pub file_name: String,
    /// One label per output index.
    pub names: Vec<String>,
}

impl Labels {
    /// Reads one label per line; trailing whitespace is dropped, blank lines kept (as
    /// empty labels) so that line numbers stay indices.
    pub fn load(path: &Path) -> Result<Self, Invalid> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            Invalid::new("server.label_file", format!("{}: {error}", path.display()))
        })?;
        let mut names: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
        while names.last().is_some_and(String::is_empty) {
            names.pop();
        }
        if names.is_empty() {
            return Err(Invalid::new(
                "server.label_file",
                format!("{} has no labels", path.display()),
            ));
        }
        let file_name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        Ok(Self { file_name, names })
    }
}

/// Memory layout of the preprocessed image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Channels first: `[3, H, W]`.
    #[default]
    Nchw,
    /// Channels last: `[H, W, 3]`.
    Nhwc,
}

impl Layout {
    /// Config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Nchw => "nchw",
            Layout::Nhwc => "nhwc",
        }
    }

    /// Triton's name for the format (`FORMAT_NCHW`).
    pub fn triton_format(self) -> &'static str {
        match self {
            Layout::Nchw => "FORMAT_NCHW",
            Layout::Nhwc => "FORMAT_NHWC",
        }
    }
}

/// Decoding a raw image into the model's input: resize the shorter side, center-crop
/// to the input's height and width, scale to [0, 1], subtract `mean`, divide by `std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSettings {
    /// Length the shorter image side is resized to before the center crop.
    #[serde(default = "default_resize_shorter")]
    pub resize_shorter: u32,
    /// Per-channel mean (RGB), on the [0, 1] scale.
    #[serde(default = "default_mean")]
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB), on the [0, 1] scale.
    #[serde(default = "default_std")]
    pub std: [f32; 3],
    /// Layout of the input tensor.
    #[serde(default)]
    pub layout: Layout,
    /// Largest width or height of an image accepted for decoding.
    #[serde(default = "default_max_image_side")]
    pub max_image_side: u32,
}

impl Default for PreprocessSettings {
    fn default() -> Self {
        Self {
            resize_shorter: default_resize_shorter(),
            mean: default_mean(),
            std: default_std(),
            layout: Layout::default(),
            max_image_side: default_max_image_side(),
        }
    }
}

impl PreprocessSettings {
    /// Checks values against the crop size; the error names the bad key.
    pub fn validate(&self, crop_height: u32, crop_width: u32) -> Result<(), Invalid> {
        let key = |field: &str| format!("model.preprocessing.{field}");
        if self.resize_shorter < crop_height.max(crop_width) {
            return Err(Invalid::new(
                key("resize_shorter"),
                format!(
                    "({}) must be at least the crop size {crop_height}x{crop_width}",
                    self.resize_shorter
                ),
            ));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(Invalid::new(
                key("std"),
                format!("must be positive, got {:?}", self.std),
            ));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(Invalid::new(
                key("mean"),
                format!("must be finite, got {:?}", self.mean),
            ));
        }
        if self.max_image_side < self.resize_shorter {
            return Err(Invalid::new(
                key("max_image_side"),
                format!(
                    "({}) must be at least resize_shorter ({})",
                    self.max_image_side, self.resize_shorter
                ),
            ));
        }
        Ok(())
    }
}

fn default_resize_shorter() -> u32 {
    256
}

fn default_mean() -> [f32; 3] {
    [0.485, 0.456, 0.406]
}

fn default_std() -> [f32; 3] {
    [0.229, 0.224, 0.225]
}

fn default_max_image_side() -> u32 {
    8192
}

/// Durations written as text (`"30s"`, `"500ms"`).
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|error| {
            serde::de::Error::custom(format!("invalid duration {text:?}: {error}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        ServerSettings::default().validate().unwrap();
        ModelSettings::default().validate().unwrap();
        let with_images = ModelSettings {
            image_input: Some("image".into()),
            ..ModelSettings::default()
        };
        with_images.validate().unwrap();
        assert_eq!(with_images.image_size(), Some((224, 224)));
    }

    #[test]
    fn parses_from_toml_with_defaults() {
        let server: ServerSettings =
            toml::from_str("port = 9000\ndrain_time = \"2s 500ms\"").unwrap();
        assert_eq!(server.port, 9000);
        assert_eq!(server.drain_time, Duration::from_millis(2500));
        assert_eq!(server.address, IpAddr::from([127, 0, 0, 1]));
        let model: ModelSettings = toml::from_str(
            "name = \"m\"\nimage_input = \"image\"\n[preprocessing]\nlayout = \"nhwc\"\n",
        )
        .unwrap();
        assert_eq!(model.validate().unwrap_err().key, "model.input_shape");
        let model: ModelSettings = toml::from_str(
            "name = \"m\"\nimage_input = \"image\"\ninput_shape = [224, 224, 3]\n[preprocessing]\nlayout = \"nhwc\"\n",
        )
        .unwrap();
        model.validate().unwrap();
        assert_eq!(model.preprocessing.layout, Layout::Nhwc);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = toml::from_str::<ServerSettings>("prot = 1").unwrap_err();
        assert!(error.to_string().contains("prot"), "{error}");
        let error = toml::from_str::<ModelSettings>("[preprocessing]\nmeans = [0.0, 0.0, 0.0]")
            .unwrap_err();
        assert!(error.to_string().contains("means"), "{error}");
    }

    #[test]
    fn validate_names_the_key() {
        let bad = ServerSettings {
            preprocess_threads: 0,
            ..ServerSettings::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "server.preprocess_threads");
        let bad = ModelSettings {
            input_shape: vec![3, 0, 224],
            ..ModelSettings::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "model.input_shape");
        let bad = ModelSettings {
            image_input: Some("image".into()),
            input_shape: vec![1, 224, 224],
            ..ModelSettings::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "model.input_shape");
        let mut bad = ModelSettings {
            image_input: Some("image".into()),
            ..ModelSettings::default()
        };
        bad.preprocessing.resize_shorter = 100;
        assert_eq!(
            bad.validate().unwrap_err().key,
            "model.preprocessing.resize_shorter"
        );
    }
}
