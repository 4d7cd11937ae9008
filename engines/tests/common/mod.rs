//! Reading the tensors `scripts/export_model.py` writes: a JSON description plus raw
//! little-endian float32 files.

use std::path::{Path, PathBuf};

/// A model with an input batch and PyTorch's output for it.
pub struct Fixture {
    /// The TorchScript file.
    pub model: PathBuf,
    /// Per-image input shape.
    pub image_shape: Vec<usize>,
    /// Images in the batch.
    pub images: usize,
    /// Output values per image.
    pub classes: usize,
    /// The input batch.
    pub input: Vec<f32>,
    /// PyTorch's FP32 output for it.
    pub expected: Vec<f32>,
}

impl Fixture {
    /// Reads `<dir>/<name>.json` and the files it names.
    pub fn load(dir: &Path, name: &str) -> Self {
        let path = dir.join(format!("{name}.json"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let description: serde_json::Value = serde_json::from_str(&text).expect("valid json");
        let input_shape = shape(&description["input"]);
        let expected_shape = shape(&description["expected"]);
        let input = read_f32(&dir.join(description["input"]["file"].as_str().expect("file")));
        let expected = read_f32(&dir.join(description["expected"]["file"].as_str().expect("file")));
        assert_eq!(input.len(), input_shape.iter().product::<usize>());
        assert_eq!(expected.len(), expected_shape.iter().product::<usize>());
        assert_eq!(input_shape[0], expected_shape[0]);
        Self {
            model: dir.join(description["model"].as_str().expect("model")),
            image_shape: input_shape[1..].to_vec(),
            images: input_shape[0],
            classes: expected_shape[1],
            input,
            expected,
        }
    }

    /// Input values per image.
    pub fn input_len(&self) -> usize {
        self.image_shape.iter().product()
    }
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(bytes.len() % 4, 0, "{} is not f32 data", path.display());
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn shape(value: &serde_json::Value) -> Vec<usize> {
    value["shape"]
        .as_array()
        .expect("shape array")
        .iter()
        .map(|d| d.as_u64().expect("dimension") as usize)
        .collect()
}

/// ‖got − want‖ / ‖want‖.
pub fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut diff, mut norm) = (0.0_f64, 0.0_f64);
    for (g, w) in got.iter().zip(want) {
        diff += (f64::from(*g) - f64::from(*w)).powi(2);
        norm += f64::from(*w).powi(2);
    }
    (diff / norm).sqrt()
}
