//! `mica tune`: design-space exploration of a pipelined network by measurement (Kang
//! et al., JEDI, ACM TECS 2022): the space, the backends that measure a point, the
//! cached evaluator, the paper's heuristic and an exhaustive reference, and the report.

pub mod cache;
pub mod chart;
pub mod cpu_stages;
pub mod exhaustive;
pub mod heuristic;
pub mod measure;
pub mod real;
pub mod report;
pub mod run;
pub mod space;

pub use run::{tune, Backend as BackendChoice, SearchKind, TuneOptions};
