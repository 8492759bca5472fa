//! The operator scenarios (features/*.feature) as executable cucumber features: the
//! World (one isolated AIMA per scenario), the steps in the operator's words, fault
//! injection, the runner with its criterion table, Markdown and JUnit reports.

pub mod catalog;
pub mod phrases;
pub mod report;
pub mod runner;
mod steps;
pub mod world;

pub use runner::{RunOptions, run};
