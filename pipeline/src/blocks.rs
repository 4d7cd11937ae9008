//! Staged models: a network as a sequence of blocks, with each block's arithmetic and
//! the activation it hands to the next block, derived from the architecture.
//!
//! Pipelining a network over units (Kang et al., "Scheduling DNN inference on GPU and
//! DLA... pipelining"; journal version JEDI, ACM TECS 2022, cap-lab/jedi) cuts it at
//! block boundaries: a cut point is a block index, a stage a contiguous block range.
//! What a stage costs on a unit, and what it sends to the next unit, follows from the
//! blocks it holds, so the table below is computed from the layer shapes — these are
//! facts of the architecture, not measurements.
//!
//! ## ResNet-50 (torchvision v1.5, 224x224 input): 18 blocks
//!
//! - block 0, **stem**: conv 7x7/2, 3→64, 224→112; BN; ReLU; max-pool 3x3/2 → 56x56.
//!   MACs = 7·7·3·64·112² = 118.0 M; output 64x56x56.
//! - blocks 1–16, **bottlenecks** (width w, output 4w): 1x1 cin→w at the input size,
//!   3x3 w→w with the stage's stride (v1.5 puts the stride there), 1x1 w→4w, and on the
//!   first block of a stage a 1x1 projection cin→4w with the stride. Stages: 3 blocks
//!   w=64 at 56x56 (blocks 1–3), 4 blocks w=128 → 28x28 (4–7), 6 blocks w=256 → 14x14
//!   (8–13), 3 blocks w=512 → 7x7 (14–16). MACs = Σ k²·cin·cout·H_out·W_out.
//! - block 17, **head**: global average pool 2048x7x7 → 2048, FC 2048→1000 (2.05 M MACs).
//!
//! Total 4.09 G MACs = 8.2 GFLOP per image (CALIBRATION.md: "~8.2 GFLOP"), 25.5 M conv
//! and FC weights (torchvision counts 25.56 M with batch-norm parameters). Batch-norm,
//! ReLU and additions are left out of the FLOPs (< 1 % of them) but their traffic is in
//! the activations. The head cannot run on a DLA: ResNet-50's final pooling/FC/top-k
//! fall back to the GPU (CALIBRATION.md, DLA facts), so a DLA stage never holds it.
//!
//! ## Tiny staged model (tests): 4 blocks
//!
//! The tiny ResNet of `scripts/export_model.py --tiny` (input 3x32x32): stem conv 3x3
//! 3→8 at 32x32; basic block 8→8 at 32x32; basic block 8→16 /2 → 16x16 with a 1x1
//! projection; head pool + FC 16→10.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// One block of a staged model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// Name (`stem`, `layer2.0`, `head`).
    pub name: String,
    /// Floating-point operations per image (2 per multiply-accumulate).
    pub flops: f64,
    /// Weights (conv and FC), in elements.
    pub params: u64,
    /// Elements of the activation the block reads, per image.
    pub input_elems: u64,
    /// Elements of the activation the block writes (what crosses a cut after it).
    pub output_elems: u64,
    /// Whether a DLA can run it (false: it would fall back to the GPU).
    pub dla_supported: bool,
}

/// A network as an ordered list of blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockTable {
    /// Model name (`resnet50`, `tiny_resnet`).
    pub model: String,
    /// The blocks, input to output.
    pub blocks: Vec<Block>,
}

/// Multiply-accumulates, weights and output side of one convolution with "same"
/// padding: `k`x`k`, `cin`→`cout`, stride `stride`, on a `size`x`size` input.
fn conv(k: u64, cin: u64, cout: u64, stride: u64, size: u64) -> (u64, u64, u64) {
    let out = size.div_ceil(stride);
    (k * k * cin * cout * out * out, k * k * cin * cout, out)
}

/// A torchvision v1.5 bottleneck: 1x1, 3x3 (strided), 1x1, plus a projection when the
/// shape changes. Returns (MACs, weights, output side).
fn bottleneck(cin: u64, width: u64, stride: u64, size: u64) -> (u64, u64, u64) {
    let out_channels = 4 * width;
    let (m1, p1, _) = conv(1, cin, width, 1, size);
    let (m2, p2, out) = conv(3, width, width, stride, size);
    let (m3, p3, _) = conv(1, width, out_channels, 1, out);
    let (mut macs, mut params) = (m1 + m2 + m3, p1 + p2 + p3);
    if stride != 1 || cin != out_channels {
        let (m4, p4, _) = conv(1, cin, out_channels, stride, size);
        macs += m4;
        params += p4;
    }
    (macs, params, out)
}

/// A basic residual block (two 3x3 convs, projection when the shape changes).
fn basic(cin: u64, cout: u64, stride: u64, size: u64) -> (u64, u64, u64) {
    let (m1, p1, out) = conv(3, cin, cout, stride, size);
    let (m2, p2, _) = conv(3, cout, cout, 1, out);
    let (mut macs, mut params) = (m1 + m2, p1 + p2);
    if stride != 1 || cin != cout {
        let (m3, p3, _) = conv(1, cin, cout, stride, size);
        macs += m3;
        params += p3;
    }
    (macs, params, out)
}

impl BlockTable {
    /// ResNet-50 at 224x224: stem, 16 bottlenecks, head (see the module docs).
    pub fn resnet50() -> Self {
        let mut blocks = Vec::with_capacity(18);
        let (stem_macs, stem_params, conv_out) = conv(7, 3, 64, 2, 224);
        let pooled = conv_out.div_ceil(2);
        blocks.push(Block {
            name: "stem".into(),
            flops: 2.0 * stem_macs as f64,
            params: stem_params,
            input_elems: 3 * 224 * 224,
            output_elems: 64 * pooled * pooled,
            dla_supported: true,
        });
        let (mut channels, mut size) = (64_u64, pooled);
        for (layer, (width, count, stride)) in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]
            .into_iter()
            .enumerate()
        {
            for index in 0..count {
                let stride = if index == 0 { stride } else { 1 };
                let (macs, params, out) = bottleneck(channels, width, stride, size);
                blocks.push(Block {
                    name: format!("layer{}.{index}", layer + 1),
                    flops: 2.0 * macs as f64,
                    params,
                    input_elems: channels * size * size,
                    output_elems: 4 * width * out * out,
                    dla_supported: true,
                });
                channels = 4 * width;
                size = out;
            }
        }
        blocks.push(Block {
            name: "head".into(),
            flops: 2.0 * (channels * 1000) as f64 + (channels * size * size) as f64,
            params: channels * 1000 + 1000,
            input_elems: channels * size * size,
            output_elems: 1000,
            dla_supported: false,
        });
        Self {
            model: "resnet50".into(),
            blocks,
        }
    }

    /// The tiny staged test model (see the module docs): 4 blocks.
    pub fn tiny() -> Self {
        let (stem_macs, stem_params, _) = conv(3, 3, 8, 1, 32);
        let (l1_macs, l1_params, _) = basic(8, 8, 1, 32);
        let (l2_macs, l2_params, out) = basic(8, 16, 2, 32);
        let block = |name: &str, macs: u64, params: u64, input: u64, output: u64| Block {
            name: name.into(),
            flops: 2.0 * macs as f64,
            params,
            input_elems: input,
            output_elems: output,
            dla_supported: name != "head",
        };
        Self {
            model: "tiny_resnet".into(),
            blocks: vec![
                block("stem", stem_macs, stem_params, 3 * 32 * 32, 8 * 32 * 32),
                block("layer1", l1_macs, l1_params, 8 * 32 * 32, 8 * 32 * 32),
                block("layer2", l2_macs, l2_params, 8 * 32 * 32, 16 * out * out),
                block("head", 16 * 10, 16 * 10 + 10, 16 * out * out, 10),
            ],
        }
    }

    /// The same network in `n` blocks: the blocks a DLA can run are merged into
    /// `n - 1` contiguous groups of near-equal block counts, the rest (the head) into
    /// the last one. Coarser blocks mean fewer cut points (`mica tune --model-stages`).
    pub fn coarsen(&self, n: usize) -> Result<Self, String> {
        if n == self.blocks.len() {
            return Ok(self.clone());
        }
        let merge = |part: &[Block], name: String| Block {
            name,
            flops: part.iter().map(|b| b.flops).sum(),
            params: part.iter().map(|b| b.params).sum(),
            input_elems: part.first().map_or(0, |b| b.input_elems),
            output_elems: part.last().map_or(0, |b| b.output_elems),
            dla_supported: part.iter().all(|b| b.dla_supported),
        };
        let blocks = self
            .coarse_groups(n)?
            .into_iter()
            .map(|group| {
                let part = &self.blocks[group];
                let name = if part.iter().all(|b| b.dla_supported) {
                    match (part.first(), part.last()) {
                        (Some(a), Some(b)) if part.len() > 1 => format!("{}..{}", a.name, b.name),
                        (Some(a), _) => a.name.clone(),
                        _ => String::new(),
                    }
                } else {
                    part.iter()
                        .map(|b| b.name.as_str())
                        .collect::<Vec<_>>()
                        .join("+")
                };
                merge(part, name)
            })
            .collect();
        Ok(Self {
            model: format!("{}/{n}", self.model),
            blocks,
        })
    }

    /// Which of this table's blocks each block of `coarsen(n)` merges, in order (for
    /// `n` equal to the table's length, one block each): what maps a coarse block back
    /// to the model files of its blocks.
    pub fn coarse_groups(&self, n: usize) -> Result<Vec<Range<usize>>, String> {
        if n == self.blocks.len() {
            return Ok((0..n).map(|b| b..b + 1).collect());
        }
        let body = self.blocks.iter().take_while(|b| b.dla_supported).count();
        let tail = self.blocks.len() - body;
        let groups = if tail > 0 { n.saturating_sub(1) } else { n };
        if n < 2 || groups == 0 || groups > body {
            return Err(format!(
                "{} has {} blocks ({} a DLA can run): --model-stages must be between 2 and {}",
                self.model,
                self.blocks.len(),
                body,
                body + usize::from(tail > 0)
            ));
        }
        let mut ranges: Vec<Range<usize>> = (0..groups)
            .map(|g| g * body / groups..(g + 1) * body / groups)
            .collect();
        if tail > 0 {
            ranges.push(body..self.blocks.len());
        }
        Ok(ranges)
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether the table has no block.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// FLOPs per image of the whole network.
    pub fn total_flops(&self) -> f64 {
        self.blocks.iter().map(|b| b.flops).sum()
    }

    /// Whether every block of `range` can run on a DLA.
    pub fn dla_supports(&self, range: std::ops::Range<usize>) -> bool {
        self.blocks
            .get(range)
            .is_some_and(|blocks| blocks.iter().all(|b| b.dla_supported))
    }

    /// Elements per image of the activation that leaves block `end - 1` (the input of
    /// block `end`); the network input for `end == 0`.
    pub fn boundary_elems(&self, end: usize) -> u64 {
        match end.checked_sub(1).and_then(|i| self.blocks.get(i)) {
            Some(block) => block.output_elems,
            None => self.blocks.first().map_or(0, |b| b.input_elems),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every coarse block maps back to a contiguous run of the fine blocks with the
    /// same boundary activations, covering the network once.
    #[test]
    fn coarse_groups_map_coarse_blocks_back_to_the_fine_ones() {
        let fine = BlockTable::resnet50();
        for n in [2, 6, 17, 18] {
            let coarse = fine.coarsen(n).unwrap();
            let groups = fine.coarse_groups(n).unwrap();
            assert_eq!(groups.len(), coarse.len());
            let mut next = 0;
            for (b, group) in groups.iter().enumerate() {
                assert_eq!(group.start, next, "n = {n}, block {b}");
                assert!(group.end > group.start);
                assert_eq!(fine.boundary_elems(group.end), coarse.boundary_elems(b + 1));
                next = group.end;
            }
            assert_eq!(next, fine.len());
        }
        assert!(fine.coarse_groups(1).is_err());
    }

    #[test]
    fn resnet50_has_the_published_size() {
        let table = BlockTable::resnet50();
        assert_eq!(table.len(), 18);
        let gflops = table.total_flops() / 1e9;
        assert!((8.1..8.3).contains(&gflops), "{gflops} GFLOP");
        let params: u64 = table.blocks.iter().map(|b| b.params).sum();
        // torchvision: 25,557,032 parameters, of which 53,120 belong to batch norms.
        assert_eq!(params, 25_557_032 - 53_120);
        assert_eq!(table.blocks[0].output_elems, 64 * 56 * 56);
        assert_eq!(table.blocks[3].output_elems, 256 * 56 * 56);
        assert_eq!(table.blocks[16].output_elems, 2048 * 7 * 7);
        assert_eq!(table.boundary_elems(0), 3 * 224 * 224);
        assert_eq!(table.boundary_elems(18), 1000);
        assert!(table.dla_supports(0..17));
        assert!(!table.dla_supports(10..18));
    }

    #[test]
    fn coarsening_keeps_the_totals_and_the_head_apart() {
        let table = BlockTable::resnet50();
        let six = table.coarsen(6).unwrap();
        assert_eq!(six.len(), 6);
        assert!((six.total_flops() - table.total_flops()).abs() < 1.0);
        assert!(!six.blocks[5].dla_supported && six.blocks[4].dla_supported);
        assert_eq!(six.boundary_elems(6), 1000);
        assert!(table.coarsen(1).is_err() && table.coarsen(19).is_err());
    }

    #[test]
    fn tiny_model_matches_its_export() {
        let table = BlockTable::tiny();
        assert_eq!(table.len(), 4);
        assert_eq!(table.boundary_elems(3), 16 * 16 * 16);
        assert_eq!(table.boundary_elems(4), 10);
    }
}
