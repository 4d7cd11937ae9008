//! The pipelining paper's mapping options: which units run the stages, in order, and
//! where the cut points may fall.
//!
//! Kang et al. (JEDI, ACM TECS 2022) map one network over a Jetson's GPU and two DLAs
//! with the GPU always running the tail (a DLA cannot run the head, see `blocks.rs`):
//! A = DLA→GPU, B = GPU→DLA→GPU, C = DLA→DLA→GPU, D = GPU→DLA→DLA→GPU, and partial
//! network duplication (`dup`): the first stage on DLA0 and DLA1 at once, each taking
//! every other batch, sharing the GPU tail. `gpu` is the unsplit network on the GPU
//! (the baselines). A cut point is a block index; `k` cuts make `k + 1` stages, each at
//! least one block.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::blocks::BlockTable;

/// Which unit a stage runs on, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The GPU.
    Gpu,
    /// DLA core 0.
    Dla0,
    /// DLA core 1.
    Dla1,
    /// DLA0 and DLA1 alternating (partial network duplication).
    DlaPair,
}

impl Role {
    /// Whether the stage runs on a DLA.
    pub fn is_dla(self) -> bool {
        !matches!(self, Role::Gpu)
    }
}

/// A mapping option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MappingOption {
    /// The whole network on the GPU (no cut).
    Gpu,
    /// DLA→GPU.
    A,
    /// GPU→DLA→GPU.
    B,
    /// DLA→DLA→GPU.
    C,
    /// GPU→DLA→DLA→GPU.
    D,
    /// (DLA0 | DLA1)→GPU: partial network duplication.
    Dup,
}

impl MappingOption {
    /// Every option, the GPU-only one first.
    pub const ALL: [MappingOption; 6] = [
        MappingOption::Gpu,
        MappingOption::A,
        MappingOption::B,
        MappingOption::C,
        MappingOption::D,
        MappingOption::Dup,
    ];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MappingOption::Gpu => "gpu",
            MappingOption::A => "a",
            MappingOption::B => "b",
            MappingOption::C => "c",
            MappingOption::D => "d",
            MappingOption::Dup => "dup",
        }
    }

    /// The stages' roles, input to output.
    pub fn roles(self) -> &'static [Role] {
        match self {
            MappingOption::Gpu => &[Role::Gpu],
            MappingOption::A => &[Role::Dla0, Role::Gpu],
            MappingOption::B => &[Role::Gpu, Role::Dla0, Role::Gpu],
            MappingOption::C => &[Role::Dla0, Role::Dla1, Role::Gpu],
            MappingOption::D => &[Role::Gpu, Role::Dla0, Role::Dla1, Role::Gpu],
            MappingOption::Dup => &[Role::DlaPair, Role::Gpu],
        }
    }

    /// Number of cut points.
    pub fn cuts(self) -> usize {
        self.roles().len() - 1
    }

    /// The block range of each stage for these cuts, or why they are not valid.
    pub fn ranges(self, cuts: &[usize], table: &BlockTable) -> Result<Vec<Range<usize>>, String> {
        if cuts.len() != self.cuts() {
            return Err(format!(
                "option {} takes {} cut points, got {}",
                self.as_str(),
                self.cuts(),
                cuts.len()
            ));
        }
        let mut bounds = Vec::with_capacity(cuts.len() + 2);
        bounds.push(0);
        bounds.extend_from_slice(cuts);
        bounds.push(table.len());
        let mut ranges = Vec::with_capacity(cuts.len() + 1);
        for (pair, role) in bounds.windows(2).zip(self.roles()) {
            if pair[0] >= pair[1] {
                return Err(format!(
                    "cut points {cuts:?} leave an empty stage ({} blocks in all)",
                    table.len()
                ));
            }
            let range = pair[0]..pair[1];
            if role.is_dla() && !table.dla_supports(range.clone()) {
                return Err(format!(
                    "blocks {}..{} cannot run on a DLA (the head falls back to the GPU)",
                    range.start, range.end
                ));
            }
            ranges.push(range);
        }
        Ok(ranges)
    }

    /// Every valid cut tuple of this option over `table`, in lexicographic order.
    pub fn all_cuts(self, table: &BlockTable) -> Vec<Vec<usize>> {
        let k = self.cuts();
        let mut out = Vec::new();
        let mut cuts: Vec<usize> = (1..=k).collect();
        if k == 0 {
            return vec![Vec::new()];
        }
        let n = table.len();
        loop {
            if self.ranges(&cuts, table).is_ok() {
                out.push(cuts.clone());
            }
            // Next strictly increasing tuple in 1..n.
            let mut i = k;
            loop {
                if i == 0 {
                    return out;
                }
                i -= 1;
                if cuts[i] < n - (k - i) {
                    cuts[i] += 1;
                    for j in i + 1..k {
                        cuts[j] = cuts[j - 1] + 1;
                    }
                    break;
                }
            }
        }
    }
}

impl fmt::Display for MappingOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MappingOption {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MappingOption::ALL
            .into_iter()
            .find(|o| o.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown mapping option {s:?}: gpu, a, b, c, d, dup"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_tuples_of_resnet50() {
        let table = BlockTable::resnet50();
        let count = |o: MappingOption| o.all_cuts(&table).len();
        // A DLA stage may not hold block 17 (the head); every stage holds a block.
        assert_eq!(count(MappingOption::Gpu), 1);
        assert_eq!(count(MappingOption::A), 17);
        assert_eq!(count(MappingOption::B), 136);
        assert_eq!(count(MappingOption::C), 136);
        assert_eq!(count(MappingOption::D), 680);
        assert_eq!(count(MappingOption::Dup), 17);
        assert_eq!(
            MappingOption::B.ranges(&[2, 10], &table).unwrap(),
            vec![0..2, 2..10, 10..18]
        );
        assert!(MappingOption::A.ranges(&[18], &table).is_err());
        assert!(MappingOption::C.ranges(&[5, 5], &table).is_err());
        assert_eq!("Dup".parse::<MappingOption>(), Ok(MappingOption::Dup));
    }
}
