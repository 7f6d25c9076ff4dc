//! What the engine hands the scheduler for one request.

use std::sync::Arc;

use kv_block::TokenId;

/// A request id, chosen by the server; cheap to clone into every step's output.
pub type RequestId = Arc<str>;

/// A new request: its prompt, when it arrived, and how much parallel work it may need.
///
/// Invariants checked by [`crate::Scheduler::add_request`]: the prompt is not empty and
/// `max_parallel_seqs` is between 1 and the budgets' limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Unique among unfinished requests.
    pub request_id: RequestId,
    /// Prompt tokens; at least one.
    pub prompt: Vec<TokenId>,
    /// Arrival time in seconds on any monotone clock (FCFS orders by it, then by insertion).
    pub arrival_time: f64,
    /// Priority for [`crate::Priority`]: lower values are served first (default 0).
    pub priority: i64,
    /// Sequences the group may run at once: 1 for plain sampling, `max(n, best_of)` for
    /// parallel sampling, the beam width for beam search (default 1). Counted against
    /// `max_num_seqs` from admission on.
    pub max_parallel_seqs: usize,
    /// Expected tokens to generate; only static-reservation block managers use it (default 0).
    pub max_new_tokens: usize,
    /// Keys mixed into the prefix-cache identity (for example a tenant salt; default none).
    pub extra_keys: Vec<u8>,
}

impl Request {
    /// A plain request (priority 0, one sequence, no hints).
    pub fn new(request_id: impl Into<RequestId>, prompt: Vec<TokenId>, arrival_time: f64) -> Self {
        Self {
            request_id: request_id.into(),
            prompt,
            arrival_time,
            priority: 0,
            max_parallel_seqs: 1,
            max_new_tokens: 0,
            extra_keys: Vec::new(),
        }
    }

    /// The same request with a priority (lower is served first).
    pub fn with_priority(self, priority: i64) -> Self {
        Self { priority, ..self }
    }

    /// The same request running up to `max_parallel_seqs` sequences (n, best_of, beam width).
    pub fn with_max_parallel_seqs(self, max_parallel_seqs: usize) -> Self {
        Self {
            max_parallel_seqs,
            ..self
        }
    }

    /// The same request with an output-length hint for static reservations.
    pub fn with_max_new_tokens(self, max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            ..self
        }
    }

    /// The same request with prefix-cache extra keys.
    pub fn with_extra_keys(self, extra_keys: Vec<u8>) -> Self {
        Self { extra_keys, ..self }
    }
}
