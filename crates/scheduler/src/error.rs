//! The one error type of the crate. Every misuse by the engine is reported here, never by a
//! panic; a failed call leaves the scheduler unchanged unless the block manager itself failed
//! half-way (which [`SchedulerError::BlockManager`] reports).

use kv_block::{KvError, SeqId};

/// Everything a scheduler call can refuse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedulerError {
    /// A configuration value out of range.
    #[error("invalid scheduler configuration: {0}")]
    InvalidConfig(&'static str),
    /// A request id that is already queued or running.
    #[error("request {0} already exists")]
    DuplicateRequest(String),
    /// A request id the scheduler does not know (never added, finished or aborted).
    #[error("unknown request {0}")]
    UnknownRequest(String),
    /// A sequence id the scheduler does not know (never created, finished or aborted).
    #[error("unknown sequence {0}")]
    UnknownSequence(SeqId),
    /// A request without prompt tokens.
    #[error("request {0} has an empty prompt")]
    EmptyPrompt(String),
    /// A request that wants to run no sequence, or more than the budgets allow at once.
    #[error(
        "request {request_id} wants {requested} parallel sequences; between 1 and {limit} are allowed"
    )]
    InvalidParallelism {
        /// The request.
        request_id: String,
        /// Parallel sequences it asked for (n, best_of or beam width).
        requested: usize,
        /// The most one group may run: `min(max_num_seqs, max_num_batched_tokens)`.
        limit: usize,
    },
    /// The sequence's group is not running (waiting or swapped out), so it produced no token.
    #[error("sequence {0} is not running")]
    SequenceNotRunning(SeqId),
    /// The sequence did not just produce logits: its last scheduled chunk did not finish its
    /// tokens, or it already received this step's token.
    #[error("sequence {0} is not waiting for a sampled token")]
    NotAwaitingToken(SeqId),
    /// The block manager refused an operation (an inconsistency or a capacity limit such as a
    /// static reservation that cannot fork).
    #[error("block manager: {0}")]
    BlockManager(#[from] KvError),
}
