//! The decoding state of one sequence: its generated tokens, logprobs, text and finish.

use crate::detokenizer::IncrementalDetokenizer;
use crate::error::SampleError;
use crate::logprobs::PositionLogprobs;
use crate::stop::{Finish, StopConditions};
use crate::{SeqId, TokenId};

/// One sequence of a group, as this crate sees it.
///
/// Invariants: `logprobs` is empty or has one entry per output token; `emitted ≤ text.len()` and
/// lies on a char boundary; once `finish` is set the sequence takes no more tokens.
#[derive(Debug, Clone)]
pub struct SequenceState {
    id: SeqId,
    output: Vec<TokenId>,
    cumulative_logprob: f64,
    last_logprob: f32,
    logprobs: Vec<PositionLogprobs>,
    detokenizer: IncrementalDetokenizer,
    text: String,
    emitted: usize,
    finish: Option<Finish>,
}

impl SequenceState {
    /// A sequence with no generated token yet.
    pub(crate) fn new(id: SeqId, detokenizer: IncrementalDetokenizer) -> Self {
        SequenceState {
            id,
            output: Vec::new(),
            cumulative_logprob: 0.0,
            last_logprob: 0.0,
            logprobs: Vec::new(),
            detokenizer,
            text: String::new(),
            emitted: 0,
            finish: None,
        }
    }

    /// The engine's id of this sequence.
    pub fn id(&self) -> SeqId {
        self.id
    }

    pub(crate) fn set_id(&mut self, id: SeqId) {
        self.id = id;
    }

    /// Generated token ids (the EOS or stop token included when one ended the sequence).
    pub fn output_tokens(&self) -> &[TokenId] {
        &self.output
    }

    /// Sum of the sampled tokens' logprobs.
    pub fn cumulative_logprob(&self) -> f64 {
        self.cumulative_logprob
    }

    /// Logprob of the last generated token (0 before the first).
    pub fn last_logprob(&self) -> f32 {
        self.last_logprob
    }

    /// Per-token logprob details (empty unless `logprobs` was requested).
    pub fn logprobs(&self) -> &[PositionLogprobs] {
        &self.logprobs
    }

    /// The output text so far (final once finished).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// How the sequence ended, if it has.
    pub fn finish(&self) -> Option<&Finish> {
        self.finish.as_ref()
    }

    /// `true` while the sequence still takes tokens.
    pub fn is_running(&self) -> bool {
        self.finish.is_none()
    }

    /// Appends a sampled token: updates logprobs and text, runs the stop checks.
    pub(crate) fn append(
        &mut self,
        token: TokenId,
        logprob: f32,
        details: Option<PositionLogprobs>,
        prompt_len: usize,
        stop: &StopConditions,
    ) -> Result<(), SampleError> {
        self.output.push(token);
        self.cumulative_logprob += f64::from(logprob);
        self.last_logprob = logprob;
        self.logprobs.extend(details);
        let new_from = self.text.len();
        let piece = self.detokenizer.push(token)?;
        self.text.push_str(&piece);
        let total_len = prompt_len + self.output.len();
        self.finish = stop.check(
            token,
            self.output.len(),
            total_len,
            &mut self.text,
            new_from,
        );
        if self.finish == Some(Finish::Length) {
            let rest = self.detokenizer.flush()?;
            self.text.push_str(&rest);
        }
        Ok(())
    }

    /// The text that became safe to stream since the last call: complete characters only, and
    /// nothing that could still turn out to be the start of a stop string.
    pub(crate) fn take_delta(&mut self, stop: &StopConditions) -> String {
        let end = if self.is_running() {
            self.text.len() - stop.held_back_len(&self.text)
        } else {
            self.text.len()
        };
        if end <= self.emitted {
            return String::new();
        }
        let delta = self.text[self.emitted..end].to_owned();
        self.emitted = end;
        delta
    }

    /// The length used by beam scores: prompt + output, minus a final EOS (Hugging Face's rule).
    pub(crate) fn beam_len(&self, prompt_len: usize, stop: &StopConditions) -> usize {
        let eos = self.output.last().is_some_and(|&t| stop.is_eos(t));
        (prompt_len + self.output.len() - usize::from(eos)).max(1)
    }
}
