//! Decoding for vellum: everything between a row of logits and the next tokens of a sequence
//! group. The crate validates vLLM's `SamplingParams` (same fields, defaults and messages),
//! processes each row with its own request's settings in vLLM's order (logit bias, min_tokens
//! mask, penalties, temperature, top-k/top-p, min-p), chooses tokens greedily, randomly or from
//! a per-request seeded stream, reports logprobs with ranks, detokenizes incrementally without
//! breaking UTF-8, applies the stop rules, and expresses parallel sampling (`n`/`best_of`) and
//! beam search as fork/free decisions the engine maps onto the scheduler. It owns no tensor and
//! no KV block: logits arrive as plain `f32` rows.
//!
//! Modules:
//! - [`params`]: `SamplingParams`, validation errors and warnings, the validated form.
//! - [`processors`]: the in-place logits processors and the per-row pipeline.
//! - [`topk`]: partial selection of the best entries of a row, and reusable scratch buffers.
//! - [`logprobs`]: log-softmax normaliser, token logprobs with ranks, prompt logprobs.
//! - [`sampler`]: greedy and inverse-CDF draws, the per-request ChaCha RNG.
//! - [`detokenizer`]: incremental detokenization over the `tokenizers` crate.
//! - [`stop`]: stop conditions, finish and stop reasons, streaming hold-back.
//! - [`sequence`]: one sequence's tokens, logprobs, text and finish.
//! - [`beam`]: the beam score and the finished-hypothesis pool (Hugging Face semantics).
//! - [`group`]: one request's step: tokens plus forks, appends, finishes and frees.
//!
//! Beam search follows vLLM v0's engine structure (a finished pool and a running pool, forks
//! before frees) with Hugging Face `BeamSearchScorer` decisions where the two differ: of the
//! `2 × beam_width` candidates, a finishing one ranked `≥ beam_width` is skipped, the running
//! beams are the first `beam_width` non-finishing candidates, and "is done" uses the best
//! candidate's cumulative logprob over the length before the step (or the maximum length for
//! `"never"` with a positive length penalty). Lengths count the prompt and exclude a final EOS.

#![deny(missing_docs)]

pub mod beam;
pub mod detokenizer;
pub mod error;
pub mod group;
mod kernels;
pub mod logprobs;
pub mod params;
pub mod processors;
pub mod sampler;
pub mod sequence;
pub mod stop;
pub mod topk;

/// A token id of the model's vocabulary.
pub type TokenId = u32;

/// An engine-wide sequence id (allocated by the engine, unique for its lifetime).
pub type SeqId = u64;

pub use error::SampleError;
pub use group::{Append, Finished, Fork, GroupDecoder, GroupStep, ModelContext, step_batch};
pub use logprobs::{PositionLogprobs, TokenLogprob, prompt_logprobs, prompt_position_logprobs};
pub use params::{
    EarlyStopping, ParamWarning, ParamsError, SamplingParams, SamplingType, ValidatedParams,
};
pub use stop::{Finish, FinishReason, StopReason};
pub use topk::Scratch;
