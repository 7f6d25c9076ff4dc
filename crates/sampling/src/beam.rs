//! Beam-search bookkeeping with Hugging Face's `BeamHypotheses` semantics: the pool of finished
//! hypotheses (at most `beam_width`, worst evicted first) and its "is done" test.

use crate::SeqId;
use crate::params::EarlyStopping;
use crate::sequence::SequenceState;

/// `cumulative_logprob / length^length_penalty` (vLLM's `get_beam_search_score`).
pub fn beam_score(cumulative_logprob: f64, length: usize, length_penalty: f64) -> f64 {
    cumulative_logprob / (length as f64).powf(length_penalty)
}

/// A finished hypothesis in the pool.
#[derive(Debug, Clone)]
pub(crate) struct Hypothesis {
    pub(crate) score: f64,
    pub(crate) seq: SequenceState,
    /// Index of the running parent when the hypothesis was created this step.
    pub(crate) new_from_parent: Option<usize>,
    order: u64,
}

/// The finished pool of one beam-search group.
///
/// Invariants: at most `width` hypotheses; a new hypothesis enters only if the pool is not full
/// or it beats the worst score; on overflow the worst (earliest added among equals) leaves.
#[derive(Debug, Clone)]
pub(crate) struct BeamPool {
    width: usize,
    length_penalty: f64,
    early_stopping: EarlyStopping,
    pub(crate) hyps: Vec<Hypothesis>,
    next_order: u64,
    /// Hypotheses of earlier steps evicted since the last `take_evicted`.
    evicted: Vec<SeqId>,
}

impl BeamPool {
    pub(crate) fn new(width: usize, length_penalty: f64, early_stopping: EarlyStopping) -> Self {
        BeamPool {
            width,
            length_penalty,
            early_stopping,
            hyps: Vec::new(),
            next_order: 0,
            evicted: Vec::new(),
        }
    }

    fn worst_score(&self) -> Option<f64> {
        self.hyps.iter().map(|h| h.score).min_by(f64::total_cmp)
    }

    /// Hugging Face `BeamHypotheses.add`.
    pub(crate) fn add(&mut self, score: f64, seq: SequenceState, new_from_parent: Option<usize>) {
        let full = self.hyps.len() >= self.width;
        if full && self.worst_score().is_some_and(|w| score <= w) {
            return;
        }
        self.hyps.push(Hypothesis {
            score,
            seq,
            new_from_parent,
            order: self.next_order,
        });
        self.next_order += 1;
        if self.hyps.len() > self.width {
            let worst = (0..self.hyps.len())
                .min_by(|&a, &b| {
                    let (ha, hb) = (&self.hyps[a], &self.hyps[b]);
                    ha.score.total_cmp(&hb.score).then(ha.order.cmp(&hb.order))
                })
                .unwrap_or(0);
            let removed = self.hyps.remove(worst);
            if removed.new_from_parent.is_none() {
                self.evicted.push(removed.seq.id());
            }
        }
    }

    /// Hugging Face `BeamHypotheses.is_done`: `best_sum_logprobs` is the best candidate's
    /// cumulative logprob this step, `cur_len` the sequence length before the step and
    /// `max_len` the longest length a sequence may reach.
    pub(crate) fn is_done(&self, best_sum_logprobs: f64, cur_len: usize, max_len: usize) -> bool {
        if self.hyps.len() < self.width {
            return false;
        }
        let Some(worst) = self.worst_score() else {
            return false;
        };
        let bound_len = match self.early_stopping {
            EarlyStopping::True => return true,
            EarlyStopping::False => cur_len,
            EarlyStopping::Never if self.length_penalty > 0.0 => max_len,
            EarlyStopping::Never => cur_len,
        };
        worst >= beam_score(best_sum_logprobs, bound_len.max(1), self.length_penalty)
    }

    /// Ids of hypotheses from earlier steps evicted since the last call.
    pub(crate) fn take_evicted(&mut self) -> Vec<SeqId> {
        std::mem::take(&mut self.evicted)
    }

    /// Marks every hypothesis as belonging to an earlier step.
    pub(crate) fn seal_step(&mut self) {
        for h in &mut self.hyps {
            h.new_from_parent = None;
        }
    }

    /// The hypotheses, best first.
    pub(crate) fn ranked(&self) -> Vec<&SequenceState> {
        let mut hyps: Vec<&Hypothesis> = self.hyps.iter().collect();
        hyps.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.order.cmp(&b.order)));
        hyps.into_iter().map(|h| &h.seq).collect()
    }
}
