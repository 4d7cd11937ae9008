//! The batch sizes an engine runs at, when it does not run every size as it comes.
//!
//! The torch engine on a GPU runs each batch padded up to the next of a few warm-up
//! sizes (powers of two, and `max_batch`): cuDNN autotunes every new input shape once,
//! and a CUDA graph is captured per size, so odd sizes would stall or miss their graph.
//! The scheduler reads the same sizes ([`EngineSpec::run_sizes`]) so that it does not
//! send 130 images to be padded to 256 when 128 now and 2 in the next batch waste less.

use crate::factory::EngineSpec;
use crate::settings::EngineSettings;
use mica_core::UnitKind;

/// The sizes warmed up (and captured) at load: powers of two below `max_batch`, then
/// `max_batch` itself.
pub fn warmup_sizes(max_batch: u32) -> Vec<u32> {
    let mut sizes: Vec<u32> = std::iter::successors(Some(1_u32), |&b| b.checked_mul(2))
        .take_while(|&b| b < max_batch)
        .collect();
    sizes.push(max_batch);
    sizes
}

/// The warm-up size a batch of `images` (1..=`max_batch`) runs padded to: the next
/// power of two, or `max_batch`.
pub fn padded_batch(images: u32, max_batch: u32) -> u32 {
    images.next_power_of_two().min(max_batch).max(images)
}

/// Whether `path` names an AOTInductor package (`.pt2`).
pub fn is_package(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("pt2"))
}

impl EngineSpec {
    /// The batch sizes this engine runs as they are, ascending, when it pads every
    /// other batch up to the next of them; empty when every size runs as it is.
    ///
    /// Empty too where the sizes are known only once the model is loaded: an
    /// AOTInductor package or an ONNX model compiled for one batch size runs every
    /// batch at that size, and there is nothing to choose between.
    pub fn run_sizes(&self) -> Vec<u32> {
        match &self.engine {
            EngineSettings::Torch(torch)
                if self.unit_kind != UnitKind::Cpu && !torch.model().is_some_and(is_package) =>
            {
                warmup_sizes(self.max_batch)
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::TorchEngineConfig;
    use std::path::PathBuf;

    /// Every batch size pads to the smallest warmed-up size that holds it, so a GPU
    /// never sees a shape cuDNN has not autotuned at load.
    #[test]
    fn every_batch_pads_to_the_smallest_warmed_up_size_that_holds_it() {
        for max_batch in [1, 2, 3, 8, 48, 64, 100, 256] {
            let warmed = warmup_sizes(max_batch);
            for images in 1..=max_batch {
                let padded = padded_batch(images, max_batch);
                let smallest = *warmed.iter().filter(|&&s| s >= images).min().unwrap();
                assert_eq!(padded, smallest, "max_batch {max_batch}, images {images}");
            }
        }
        assert_eq!(warmup_sizes(100), [1, 2, 4, 8, 16, 32, 64, 100]);
        assert_eq!(padded_batch(65, 100), 100);
        assert_eq!(padded_batch(33, 256), 64);
    }

    #[test]
    fn packages_are_named_by_their_extension() {
        assert!(is_package(std::path::Path::new("models/resnet50_fp16.pt2")));
        assert!(is_package(std::path::Path::new("x.PT2")));
        assert!(!is_package(std::path::Path::new("models/resnet50_fp16.pt")));
        assert!(!is_package(std::path::Path::new("pt2")));
    }

    fn torch_spec(kind: UnitKind, model: &str) -> EngineSpec {
        let settings = EngineSettings::Torch(TorchEngineConfig {
            model: Some(PathBuf::from(model)),
            cuda_graphs: false,
            warmup_batches: 1,
        });
        EngineSpec::new(settings, kind, 256, vec![3, 224, 224], 1000)
    }

    #[test]
    fn gpu_torch_units_pad_to_powers_of_two_and_others_run_every_size() {
        assert_eq!(
            torch_spec(UnitKind::TensorFp16, "m.pt").run_sizes(),
            [1, 2, 4, 8, 16, 32, 64, 128, 256]
        );
        assert!(torch_spec(UnitKind::Cpu, "m.pt").run_sizes().is_empty());
        assert!(torch_spec(UnitKind::TensorFp16, "m.pt2")
            .run_sizes()
            .is_empty());
        let null = EngineSpec::new(EngineSettings::Null, UnitKind::CudaFp32, 64, vec![4], 2);
        assert!(null.run_sizes().is_empty());
    }
}
