//! The `null` engine: no work at all. Measures the scheduler's own overhead
//! (dispatcher, actors, HTTP) with nothing else in the way.

use crate::engine::{check_input, BatchInput, BatchOutput, Engine, EngineError, EngineInfo};

/// Answers every batch at once with zeros.
#[derive(Debug, Clone)]
pub struct NullEngine {
    info: EngineInfo,
}

impl NullEngine {
    /// An engine with these limits and shapes.
    pub fn new(max_batch: u32, input_len: usize, output_len: usize) -> Self {
        Self {
            info: EngineInfo {
                engine: "null",
                max_batch,
                input_len,
                output_len,
            },
        }
    }
}

impl Engine for NullEngine {
    fn info(&self) -> EngineInfo {
        self.info.clone()
    }

    fn infer(&mut self, input: BatchInput<'_>) -> Result<BatchOutput, EngineError> {
        check_input(&self.info, &input)?;
        let data = match input.data {
            Some(_) => vec![0.0; input.images as usize * self.info.output_len],
            None => Vec::new(),
        };
        Ok(BatchOutput {
            images: input.images,
            per_image: self.info.output_len,
            data,
        })
    }
}
