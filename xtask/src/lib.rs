//! Library half of `cargo xtask`: the pieces benchmarks share, kept in a library so they are
//! unit-tested and reusable by every suite.
//!
//! - [`workload`]: seeded synthetic request traces (ShareGPT-like / Alpaca-like lengths,
//!   Poisson arrivals, parallel sampling, beam search, shared prefix) and JSONL traces.
//! - [`bench`]: the suites of `cargo xtask bench` (memory, paper simulation, micro-benchmarks,
//!   online serving over HTTP).
//! - [`report`]: results as JSON, Markdown tables and SVG plots.

#![deny(missing_docs)]

pub mod bench;
pub mod report;
pub mod workload;
