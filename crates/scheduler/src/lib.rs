//! The iteration-level scheduler of vellum (PagedAttention §4.5, after Orca): once per engine
//! step it decides which sequences run and how many tokens each computes (a prefill chunk or
//! one decode token) within the token and sequence budgets, which blocks move between the
//! device and the CPU pool, which groups are preempted (all-or-nothing, by swap or by
//! recompute) and which requests are rejected with a reason. It owns requests, sequence
//! groups and their queues; it reaches KV blocks only through `kv-block`'s
//! [`kv_block::BlockManager`] trait, so the paged manager and the static-reservation
//! baselines run under the same policy, and it never sees the model or sampling decisions.
//!
//! Modules:
//! - [`scheduler`]: [`Scheduler`], its state and the engine's calls between steps
//!   (add, append a token, fork, finish, abort).
//! - `step` (private): `schedule()`, the running / swapped / waiting passes and admission.
//! - `preempt` (private): eviction of a group by swap or recompute, with the fallback to
//!   recompute.
//! - [`policy`]: the [`Policy`] trait, [`Fcfs`] and [`Priority`].
//! - [`group`], [`sequence`], [`request`]: requests, groups and sequences.
//! - [`output`]: [`SchedulerOutput`], what the executor runs each step.
//! - [`config`]: budgets, chunked prefill and [`PreemptionMode`].
//! - [`stats`]: preemption and finish counters.
//! - `invariants` (private): [`Scheduler::check_invariants`] and [`Scheduler::check_output`],
//!   O(n) audits of the scheduler against its block manager, for tests.
//! - [`sim`]: a simulated executor (no model) that drives a scheduler over a workload; used
//!   by the tests and benchmarks.
//! - [`error`]: the error type, [`SchedulerError`].
#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod group;
mod invariants;
pub mod output;
pub mod policy;
mod preempt;
mod registry;
pub mod request;
pub mod scheduler;
pub mod sequence;
pub mod sim;
pub mod stats;
mod step;

pub use config::{PreemptionMode, SchedulerConfig};
pub use error::SchedulerError;
pub use group::{GroupStatus, SequenceGroup};
pub use output::{
    IgnoreReason, IgnoredGroup, PreemptedGroup, ScheduledGroup, ScheduledSeq, SchedulerOutput,
};
pub use policy::{Fcfs, Policy, Priority};
pub use request::{Request, RequestId};
pub use scheduler::{AppendOutcome, GroupProgress, Scheduler};
pub use sequence::{FinishReason, Sequence};
pub use stats::SchedulerStats;
