//! Experiments: one run of a config through the simulator or in real time, and the
//! multi-instance paper's experiment built on it (runner, CSV, chart, summary).

pub mod args;
pub mod chart;
pub mod combination;
pub mod csv;
pub mod multi_instance;
pub mod run;
pub mod summary;

pub use args::{ExperimentCommand, MultiInstanceArgs};
