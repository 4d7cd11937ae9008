//! The design space `mica tune` explores: mapping option, cut points, batch size,
//! streams per unit, and pre/post-processing threads (Kang et al., JEDI, ACM TECS
//! 2022, §design-space exploration).

use std::fmt;

use mica_pipeline::{BlockTable, MappingOption};
use serde::{Deserialize, Serialize};

use crate::config::TuneSpaceConfig;

/// One configuration of the space.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Point {
    /// Mapping option.
    pub option: MappingOption,
    /// Cut points (block indices), as many as the option takes.
    pub cuts: Vec<usize>,
    /// Images per batch (every stage).
    pub batch: u32,
    /// Streams per unit (every stage).
    pub streams: u32,
    /// Pre- and post-processing threads (each).
    pub threads: u32,
}

impl Point {
    /// A stable key for the cache (`a/9/b8/s2/t4`).
    pub fn key(&self) -> String {
        let cuts: Vec<String> = self.cuts.iter().map(|c| c.to_string()).collect();
        format!(
            "{}/{}/b{}/s{}/t{}",
            self.option,
            if cuts.is_empty() {
                "-".to_string()
            } else {
                cuts.join(",")
            },
            self.batch,
            self.streams,
            self.threads
        )
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// The space: every combination of the values below over the valid cut tuples.
#[derive(Debug, Clone)]
pub struct Space {
    /// Options, in order.
    pub options: Vec<MappingOption>,
    /// Valid cut tuples per option (same order as `options`).
    pub cuts: Vec<Vec<Vec<usize>>>,
    /// Batch sizes, increasing.
    pub batch_sizes: Vec<u32>,
    /// Streams per unit, increasing.
    pub streams: Vec<u32>,
    /// Threads, increasing.
    pub threads: Vec<u32>,
    /// The model's blocks.
    pub table: BlockTable,
}

impl Space {
    /// The space `config` describes over `table`; options whose units are missing
    /// (`has_dlas` = how many DLA units the pipeline names) are left out.
    pub fn new(config: &TuneSpaceConfig, table: BlockTable, has_dlas: usize) -> Self {
        let sorted = |v: &[u32]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v.dedup();
            v
        };
        let options: Vec<MappingOption> = config
            .options
            .iter()
            .copied()
            .filter(|o| {
                let needs = match o {
                    MappingOption::Gpu => 0,
                    MappingOption::A | MappingOption::B => 1,
                    MappingOption::C | MappingOption::D | MappingOption::Dup => 2,
                };
                needs <= has_dlas
            })
            .collect();
        let cuts = options.iter().map(|o| o.all_cuts(&table)).collect();
        Self {
            options,
            cuts,
            batch_sizes: sorted(&config.batch_sizes),
            streams: sorted(&config.streams),
            threads: sorted(&config.threads),
            table,
        }
    }

    /// Cut tuples of `option`.
    pub fn cuts_of(&self, option: MappingOption) -> &[Vec<usize>] {
        self.options
            .iter()
            .position(|o| *o == option)
            .map_or(&[], |i| &self.cuts[i])
    }

    /// Number of points.
    pub fn size(&self) -> usize {
        let cut_tuples: usize = self.cuts.iter().map(Vec::len).sum();
        cut_tuples * self.batch_sizes.len() * self.streams.len() * self.threads.len()
    }

    /// Every point, option by option.
    pub fn points(&self) -> impl Iterator<Item = Point> + '_ {
        self.options
            .iter()
            .zip(&self.cuts)
            .flat_map(move |(option, tuples)| {
                tuples.iter().flat_map(move |cuts| {
                    self.batch_sizes.iter().flat_map(move |&batch| {
                        self.streams.iter().flat_map(move |&streams| {
                            self.threads.iter().map(move |&threads| Point {
                                option: *option,
                                cuts: cuts.clone(),
                                batch,
                                streams,
                                threads,
                            })
                        })
                    })
                })
            })
    }

    /// Whether `point` lies in the space.
    pub fn contains(&self, point: &Point) -> bool {
        self.cuts_of(point.option).contains(&point.cuts)
            && self.batch_sizes.contains(&point.batch)
            && self.streams.contains(&point.streams)
            && self.threads.contains(&point.threads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_space_over_resnet50() {
        let space = Space::new(&TuneSpaceConfig::default(), BlockTable::resnet50(), 2);
        // (1 + 17 + 136 + 136 + 680 + 17) cut tuples x 5 batches x 3 streams x 4 threads.
        assert_eq!(space.size(), 987 * 5 * 3 * 4);
        assert_eq!(space.points().count(), space.size());
        let one_dla = Space::new(&TuneSpaceConfig::default(), BlockTable::resnet50(), 1);
        assert_eq!(one_dla.options.len(), 3);
        let p = space.points().nth(100).unwrap();
        assert!(space.contains(&p));
    }
}
