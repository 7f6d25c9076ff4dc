//! Library half of `cargo xtask`: the pieces benchmarks share (workload traces first), kept in a
//! library so they are unit-tested and reusable by every suite.

#![deny(missing_docs)]

pub mod workload;
