//! Prompt logprobs (`prompt_logprobs: k`) collected while a prompt is computed.
//!
//! The logits row at prompt position `p` gives the distribution of prompt token `p + 1`. With
//! chunked prefill a prompt spans several steps, so each step hands over the rows it computed
//! and only their top-`k` summaries are kept: a whole prompt's rows (`prompt_len × vocab` f32)
//! never exist at once. A recompute preemption re-prefills positions already summarised; their
//! rows are not asked for again, so nothing is counted twice.

use std::ops::Range;

use rayon::prelude::*;
use sampling::{PositionLogprobs, Scratch, ValidatedParams, prompt_position_logprobs};

use super::PromptLogprobs;

/// One request's prompt logprobs so far.
///
/// Invariants: `entries[0]` is `None` (the first prompt token has no logprob); `entries[p + 1]`
/// came from the row at prompt position `p`, so the next row wanted is at position
/// `entries.len() - 1`; `entries.len() <= prompt_len`.
#[derive(Debug)]
pub struct PromptLogprobsCollector {
    k: usize,
    prompt_len: usize,
    entries: Vec<Option<PositionLogprobs>>,
}

impl PromptLogprobsCollector {
    /// An empty collection of the top-`k` entries for a prompt of `prompt_len ≥ 1` tokens.
    pub fn new(k: usize, prompt_len: usize) -> Self {
        let mut entries = Vec::with_capacity(prompt_len);
        entries.push(None);
        PromptLogprobsCollector {
            k,
            prompt_len,
            entries,
        }
    }

    /// Prompt positions whose logits rows are still needed, in order (empty once complete).
    pub fn pending(&self) -> Range<usize> {
        self.entries.len() - 1..self.prompt_len - 1
    }

    /// Summarises `rows` (consecutive logits rows of `prompt`, the first at position `first`)
    /// in place and keeps their top-`k` entries. `first` must be the first pending position.
    pub fn absorb(
        &mut self,
        params: &ValidatedParams,
        prompt: &[u32],
        first: usize,
        rows: &mut [f32],
        vocab_size: usize,
    ) -> Result<(), String> {
        let count = rows.len() / vocab_size.max(1);
        let pending = self.pending();
        if first != pending.start || first + count > pending.end || count * vocab_size != rows.len()
        {
            return Err(format!(
                "prompt logprob rows for positions {first}..{} do not continue the pending \
                 positions {pending:?}",
                first + count
            ));
        }
        let next_tokens = &prompt[first + 1..first + 1 + count];
        let k = self.k;
        let summaries = rows
            .par_chunks_mut(vocab_size)
            .zip(next_tokens)
            .map_init(Scratch::default, |scratch, (row, &next)| {
                prompt_position_logprobs(params, row, next, k, scratch)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("prompt logprobs failed: {error}"))?;
        self.entries.extend(summaries.into_iter().map(Some));
        Ok(())
    }

    /// The whole list (one entry per prompt token), once every position is in.
    pub fn finish(self) -> Result<PromptLogprobs, String> {
        let pending = self.pending();
        if !pending.is_empty() {
            return Err(format!(
                "prompt logprobs are missing for positions {pending:?}"
            ));
        }
        Ok(self.entries.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sampling::SamplingParams;

    const VOCAB: usize = 5;

    fn greedy() -> ValidatedParams {
        SamplingParams {
            temperature: 0.0,
            prompt_logprobs: Some(1),
            ..Default::default()
        }
        .validate()
        .unwrap()
        .0
    }

    fn rows(count: usize) -> Vec<f32> {
        (0..count * VOCAB).map(|i| (i % 7) as f32).collect()
    }

    #[test]
    fn chunks_add_up_to_the_whole_prompt() {
        let params = greedy();
        let prompt = [1, 2, 3, 4];
        let mut whole = rows(3);
        let expected = sampling::prompt_logprobs(
            &params,
            &prompt,
            &mut whole.clone(),
            VOCAB,
            1,
            &mut Scratch::default(),
        )
        .unwrap();
        let mut collector = PromptLogprobsCollector::new(1, prompt.len());
        assert_eq!(collector.pending(), 0..3);
        let (head, tail) = whole.split_at_mut(2 * VOCAB);
        collector.absorb(&params, &prompt, 0, head, VOCAB).unwrap();
        assert_eq!(collector.pending(), 2..3);
        // A re-prefill after recompute preemption replays position 0: refused, not counted.
        assert!(
            collector
                .absorb(&params, &prompt, 0, &mut rows(1), VOCAB)
                .is_err()
        );
        collector.absorb(&params, &prompt, 2, tail, VOCAB).unwrap();
        assert!(collector.pending().is_empty());
        assert_eq!(&*collector.finish().unwrap(), &expected[..]);
    }

    #[test]
    fn an_incomplete_prompt_is_an_error_and_one_token_needs_no_row() {
        let collector = PromptLogprobsCollector::new(1, 3);
        assert!(collector.finish().is_err());
        let single = PromptLogprobsCollector::new(1, 1);
        assert!(single.pending().is_empty());
        assert_eq!(&*single.finish().unwrap(), &[None]);
    }
}
