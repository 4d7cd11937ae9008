//! The CUDA graphs of one torch engine instance: one per warm-up batch size, captured by
//! `TorchEngine::capture_graphs`, with the static input they all read (the leading rows
//! of one `[max_batch, ...]` device tensor) and each one's static output.

use tch::Tensor;

use super::ffi::CudaGraph;

/// One captured batch size.
#[derive(Debug)]
pub(crate) struct Captured {
    /// Images per batch.
    pub size: u32,
    /// The graph; its kernels read the static input's first `size` rows.
    pub graph: CudaGraph,
    /// `[size, output_len]` on the device, in the graphs' pool: written by each replay.
    pub output: Tensor,
}

/// Every graph of one engine instance. They share one memory pool, which is safe
/// because an instance replays one graph at a time and reads (or copies) the output
/// before the next replay.
#[derive(Debug)]
pub(crate) struct Graphs {
    input: Tensor,
    /// Sorted by size, ascending.
    captured: Vec<Captured>,
}

impl Graphs {
    /// The graphs of `captured` (any order), all reading `input`.
    pub(crate) fn new(input: Tensor, mut captured: Vec<Captured>) -> Self {
        captured.sort_by_key(|c| c.size);
        Self { input, captured }
    }

    /// The static input, `[max_batch, ...input_shape]` FP32 on the device.
    pub(crate) fn input(&self) -> &Tensor {
        &self.input
    }

    /// The graph of batches of exactly `images` rows.
    pub(crate) fn get(&self, images: i64) -> Option<&Captured> {
        self.captured
            .binary_search_by_key(&images, |c| i64::from(c.size))
            .ok()
            .map(|i| &self.captured[i])
    }

    /// How many graphs there are.
    pub(crate) fn len(&self) -> usize {
        self.captured.len()
    }

    /// Bytes of device memory the graphs' shared pool holds (the static input, made
    /// before capture, is not in it).
    pub(crate) fn pool_reserved_bytes(&self) -> Option<u64> {
        self.captured
            .first()
            .and_then(|c| c.graph.pool_bytes().ok())
            .map(|(reserved, _)| reserved)
    }
}
