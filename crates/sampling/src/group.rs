//! One request's sequence group: turns its logits rows into tokens and into the fork/free
//! decisions the engine applies to the scheduler, for plain sampling, parallel sampling
//! (`n`/`best_of`) and beam search.

use std::collections::HashSet;
use std::sync::Arc;

use tokenizers::Tokenizer;

use crate::beam::{BeamPool, beam_score};
use crate::detokenizer::IncrementalDetokenizer;
use crate::error::SampleError;
use crate::logprobs::{Normalizer, PositionLogprobs, position_logprobs};
use crate::params::{SamplingType, ValidatedParams};
use crate::processors::{RowContext, process_logits};
use crate::sampler::{RequestRng, draw, greedy};
use crate::sequence::SequenceState;
use crate::stop::{Finish, StopConditions};
use crate::topk::{Scratch, top_indices};
use crate::{SeqId, TokenId};

/// What a group needs to know about the model it decodes for.
///
/// Invariant: `vocab_size` is the width of the logits rows (it may exceed the tokenizer's
/// vocabulary when the model pads its embedding).
#[derive(Clone)]
pub struct ModelContext {
    /// The tokenizer used for detokenization.
    pub tokenizer: Arc<Tokenizer>,
    /// The model's EOS ids (one or several).
    pub eos_token_ids: Vec<TokenId>,
    /// The longest sequence (prompt + output) the model accepts.
    pub max_model_len: usize,
    /// Width of a logits row.
    pub vocab_size: usize,
}

/// A new sequence that starts as a copy of `parent` (sharing its KV blocks) before this step's
/// token is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fork {
    /// The sequence copied; it is still alive when the fork is applied.
    pub parent: SeqId,
    /// The engine-allocated id of the copy.
    pub child: SeqId,
}

/// A token appended to a sequence this step.
#[derive(Debug, Clone, PartialEq)]
pub struct Append {
    /// The sequence (an existing one or a child from this step's forks).
    pub seq: SeqId,
    /// The token.
    pub token: TokenId,
    /// Its logprob in the processed distribution.
    pub logprob: f32,
    /// Top-k details when `logprobs` was requested.
    pub logprobs: Option<PositionLogprobs>,
    /// Text that became safe to stream (may be empty).
    pub text_delta: String,
}

/// A sequence that finished this step; its output is final.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The sequence.
    pub seq: SeqId,
    /// Why it finished.
    pub finish: Finish,
}

/// The decisions of one step for one group, to be applied in field order:
///
/// 1. `forks` — create each child from its parent (all parents are alive);
/// 2. `appends` — append the tokens (to parents and to the new children);
/// 3. `finished` — mark these sequences finished (they stay in the group as outputs);
/// 4. `freed` — release these sequences' KV blocks (finished ones, and parents that no child
///    continues, which then leave the group);
/// 5. `discarded` — drop these earlier-finished sequences from the group's outputs (their
///    blocks were freed when they finished).
///
/// Invariant: a parent is never freed before its children are forked, because every fork
/// precedes every free.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupStep {
    /// New sequences, before any free.
    pub forks: Vec<Fork>,
    /// Tokens appended.
    pub appends: Vec<Append>,
    /// Sequences finished this step.
    pub finished: Vec<Finished>,
    /// Sequences whose blocks must be released now.
    pub freed: Vec<SeqId>,
    /// Earlier outputs removed from the group (beam search only).
    pub discarded: Vec<SeqId>,
    /// `true` when the group has no running sequence left.
    pub group_finished: bool,
}

/// Decoding state of one request: its sequences, RNG, stop rules and (for beam search) pool.
///
/// Invariants: `running` is the order in which [`GroupDecoder::step`] expects logits rows; ids
/// are unique within the group. After a step returns an error the group must be aborted.
pub struct GroupDecoder {
    params: ValidatedParams,
    model: Arc<ModelContext>,
    prompt: Arc<[TokenId]>,
    stop: StopConditions,
    rng: RequestRng,
    running: Vec<SequenceState>,
    finished: Vec<SequenceState>,
    pool: Option<BeamPool>,
    started: bool,
}

/// Draws an engine id for a new child and checks it is unused in the group.
fn fresh_id(
    new_id: &mut dyn FnMut() -> SeqId,
    used: &mut HashSet<SeqId>,
) -> Result<SeqId, SampleError> {
    let id = new_id();
    if used.insert(id) {
        Ok(id)
    } else {
        Err(SampleError::DuplicateSeqId(id))
    }
}

/// One chosen token of a row.
struct Pick {
    token: TokenId,
    logprob: f32,
    details: Option<PositionLogprobs>,
}

/// A beam child kept this step: an index into the next running beams or into the pool.
#[derive(Clone, Copy)]
enum Selected {
    Running(usize),
    Finished(usize),
}

/// A beam candidate: a running sequence extended by one token.
struct Candidate {
    parent: usize,
    pick: Pick,
    score: f64,
}

impl GroupDecoder {
    /// A group whose single prompt sequence `root` has not generated anything yet.
    ///
    /// `fallback_seed` seeds the group's RNG when the request has no `seed` (the engine draws it
    /// from its own RNG); a seeded request ignores it.
    pub fn new(
        params: ValidatedParams,
        prompt: Arc<[TokenId]>,
        root: SeqId,
        model: Arc<ModelContext>,
        fallback_seed: u64,
    ) -> Self {
        let stop = StopConditions::new(&params, &model.eos_token_ids, model.max_model_len);
        let rng = RequestRng::new(params.seed(), fallback_seed);
        let detokenizer = IncrementalDetokenizer::new(
            model.tokenizer.clone(),
            &prompt,
            params.skip_special_tokens,
        );
        let pool = (params.sampling_type() == SamplingType::Beam).then(|| {
            BeamPool::new(
                params.best_of(),
                params.length_penalty,
                params.early_stopping,
            )
        });
        GroupDecoder {
            running: vec![SequenceState::new(root, detokenizer)],
            params,
            model,
            prompt,
            stop,
            rng,
            finished: Vec::new(),
            pool,
            started: false,
        }
    }

    /// The validated parameters of the request.
    pub fn params(&self) -> &ValidatedParams {
        &self.params
    }

    /// The prompt's token ids.
    pub fn prompt(&self) -> &[TokenId] {
        &self.prompt
    }

    /// Ids of the running sequences, in the order their logits rows must be passed to `step`.
    pub fn running_ids(&self) -> Vec<SeqId> {
        self.running.iter().map(SequenceState::id).collect()
    }

    /// Number of logits rows the next `step` needs.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// `true` once no sequence runs.
    pub fn is_finished(&self) -> bool {
        self.running.is_empty()
    }

    /// A sequence of the group (running, finished, or in the beam pool).
    pub fn sequence(&self, id: SeqId) -> Option<&SequenceState> {
        self.all_sequences().find(|s| s.id() == id)
    }

    fn all_sequences(&self) -> impl Iterator<Item = &SequenceState> {
        let pooled = self.pool.iter().flat_map(|p| p.hyps.iter().map(|h| &h.seq));
        self.running.iter().chain(&self.finished).chain(pooled)
    }

    /// The `n` sequences to return, best first: by beam score from the finished pool under beam
    /// search, otherwise by cumulative logprob over all sequences (vLLM's ranking).
    pub fn outputs(&self) -> Vec<&SequenceState> {
        let mut ranked = match &self.pool {
            Some(pool) => pool.ranked(),
            None => {
                let mut all: Vec<&SequenceState> =
                    self.running.iter().chain(&self.finished).collect();
                all.sort_by(|a, b| b.cumulative_logprob().total_cmp(&a.cumulative_logprob()));
                all
            }
        };
        ranked.truncate(self.params.n());
        ranked
    }

    /// Consumes one logits row per running sequence (`logits.len() == num_running() ×
    /// vocab_size`, rows in [`GroupDecoder::running_ids`] order, processed in place) and returns
    /// the step's decisions. `new_id` allocates engine sequence ids for forked children.
    pub fn step(
        &mut self,
        logits: &mut [f32],
        scratch: &mut Scratch,
        new_id: &mut dyn FnMut() -> SeqId,
    ) -> Result<GroupStep, SampleError> {
        if self.running.is_empty() {
            return Err(SampleError::GroupFinished);
        }
        let vocab_size = self.model.vocab_size;
        if vocab_size == 0 || logits.len() != self.running.len() * vocab_size {
            return Err(SampleError::LogitsShape {
                rows: self.running.len(),
                vocab_size,
                len: logits.len(),
            });
        }
        let step = if self.pool.is_some() {
            self.beam_step(logits, scratch, new_id)
        } else {
            self.sampling_step(logits, scratch, new_id)
        };
        self.started = true;
        step
    }

    /// The logprob and (if requested) details of `token` in a processed row.
    fn pick(&self, row: &[f32], norm: &Normalizer, token: TokenId, scratch: &mut Scratch) -> Pick {
        Pick {
            token,
            logprob: norm.logprob(row[token as usize]),
            details: self
                .params
                .logprobs()
                .map(|k| position_logprobs(row, norm, token, k, scratch)),
        }
    }

    fn process_row(
        &self,
        seq: &SequenceState,
        row: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<Normalizer, SampleError> {
        let ctx = RowContext {
            prompt: &self.prompt,
            output: seq.output_tokens(),
            eos_token_ids: &self.model.eos_token_ids,
        };
        process_logits(row, &self.params, &ctx, scratch)?;
        Ok(Normalizer::new(row, scratch))
    }

    /// Ids of every sequence of the group, to check engine-allocated ids against.
    fn used_ids(&self) -> HashSet<SeqId> {
        self.all_sequences().map(SequenceState::id).collect()
    }

    /// Appends `pick` to `seq` and records the append (and the finish, if any).
    fn append(
        &self,
        seq: &mut SequenceState,
        pick: Pick,
        step: &mut GroupStep,
    ) -> Result<(), SampleError> {
        seq.append(
            pick.token,
            pick.logprob,
            pick.details,
            self.prompt.len(),
            &self.stop,
        )?;
        self.record_append(seq, step);
        Ok(())
    }

    /// Greedy or random sampling; the first step of a `best_of > 1` group draws `best_of`
    /// tokens from the prompt row and forks `best_of − 1` children of the prompt sequence.
    fn sampling_step(
        &mut self,
        logits: &mut [f32],
        scratch: &mut Scratch,
        new_id: &mut dyn FnMut() -> SeqId,
    ) -> Result<GroupStep, SampleError> {
        let fan_out = if self.started {
            1
        } else {
            self.params.best_of()
        };
        let greedy_type = self.params.sampling_type() == SamplingType::Greedy;
        let mut picks: Vec<Vec<Pick>> = Vec::with_capacity(self.running.len());
        for (seq, row) in self
            .running
            .iter()
            .zip(logits.chunks_exact_mut(self.model.vocab_size))
        {
            let norm = self.process_row(seq, row, scratch)?;
            let mut tokens = Vec::with_capacity(fan_out);
            for _ in 0..fan_out {
                let token = if greedy_type {
                    greedy(row)
                } else {
                    draw(&scratch.weights, norm.total(), self.rng.uniform())
                };
                tokens.push(token.ok_or(SampleError::AllMasked)?);
            }
            picks.push(
                tokens
                    .into_iter()
                    .map(|t| self.pick(row, &norm, t, scratch))
                    .collect(),
            );
        }
        let mut step = GroupStep::default();
        let mut used = self.used_ids();
        let mut still_running = Vec::with_capacity(self.running.len() * fan_out);
        let parents = std::mem::take(&mut self.running);
        for (parent, mut seq_picks) in parents.into_iter().zip(picks) {
            let last = seq_picks.pop().ok_or(SampleError::AllMasked)?;
            let mut family = Vec::with_capacity(seq_picks.len() + 1);
            for pick in seq_picks {
                let mut child = parent.clone();
                child.set_id(fresh_id(new_id, &mut used)?);
                step.forks.push(Fork {
                    parent: parent.id(),
                    child: child.id(),
                });
                family.push((child, pick));
            }
            family.push((parent, last));
            for (mut seq, pick) in family {
                self.append(&mut seq, pick, &mut step)?;
                if seq.is_running() {
                    still_running.push(seq);
                } else {
                    self.finished.push(seq);
                }
            }
        }
        self.running = still_running;
        step.group_finished = self.running.is_empty();
        Ok(step)
    }

    /// The top `2 × beam_width` extensions of all running beams by cumulative logprob.
    fn beam_candidates(
        &self,
        logits: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<Vec<Candidate>, SampleError> {
        let per_beam = 2 * self.params.best_of();
        let mut cands = Vec::with_capacity(per_beam * self.running.len());
        for (parent, (seq, row)) in self
            .running
            .iter()
            .zip(logits.chunks_exact_mut(self.model.vocab_size))
            .enumerate()
        {
            let norm = self.process_row(seq, row, scratch)?;
            for token in top_indices(row, per_beam, scratch) {
                if row[token as usize] == f32::NEG_INFINITY {
                    break;
                }
                let pick = self.pick(row, &norm, token, scratch);
                let score = seq.cumulative_logprob() + f64::from(pick.logprob);
                cands.push(Candidate {
                    parent,
                    pick,
                    score,
                });
            }
        }
        cands.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.parent.cmp(&b.parent))
                .then(a.pick.token.cmp(&b.pick.token))
        });
        cands.truncate(per_beam);
        Ok(cands)
    }

    /// One beam-search step with Hugging Face's `BeamSearchScorer.process` semantics (see the
    /// crate docs), expressed as forks and frees.
    fn beam_step(
        &mut self,
        logits: &mut [f32],
        scratch: &mut Scratch,
        new_id: &mut dyn FnMut() -> SeqId,
    ) -> Result<GroupStep, SampleError> {
        let width = self.params.best_of();
        let prompt_len = self.prompt.len();
        let cands = self.beam_candidates(logits, scratch)?;
        let cur_len = prompt_len + self.running[0].output_tokens().len();
        let best_sum = cands.first().map(|c| c.score);
        let length_penalty = self.params.length_penalty;
        let Some(mut pool) = self.pool.take() else {
            return Err(SampleError::GroupFinished);
        };
        let mut next: Vec<(usize, SequenceState)> = Vec::with_capacity(width);
        for (rank, cand) in cands.into_iter().enumerate() {
            let mut child = self.running[cand.parent].clone();
            child.append(
                cand.pick.token,
                cand.pick.logprob,
                cand.pick.details,
                prompt_len,
                &self.stop,
            )?;
            match child.finish() {
                Some(finish) if *finish != Finish::Length => {
                    if rank < width {
                        let score = beam_score(
                            child.cumulative_logprob(),
                            child.beam_len(prompt_len, &self.stop),
                            length_penalty,
                        );
                        pool.add(score, child, Some(cand.parent));
                    }
                }
                _ => next.push((cand.parent, child)),
            }
            if next.len() == width {
                break;
            }
        }
        let max_len = self.stop.max_total_len(prompt_len);
        let mut done =
            next.is_empty() || best_sum.is_none_or(|best| pool.is_done(best, cur_len, max_len));
        if !done && next.iter().any(|(_, s)| !s.is_running()) {
            // Length reached (all beams have the same length): Hugging Face's `finalize`.
            for (parent, seq) in next.drain(..) {
                let score = beam_score(
                    seq.cumulative_logprob(),
                    seq.beam_len(prompt_len, &self.stop),
                    length_penalty,
                );
                pool.add(score, seq, Some(parent));
            }
            done = true;
        }
        if done {
            next.clear();
        }
        let result = self.commit_beam_step(&mut pool, next, new_id);
        pool.seal_step();
        self.pool = Some(pool);
        result
    }

    /// Turns the selected children (running ones in `next`, finished ones new in the pool) into
    /// forks, appends and frees. Each parent continues as its best running child, or else its
    /// best finished child; its other selected children are forks; an unselected parent is freed.
    fn commit_beam_step(
        &mut self,
        pool: &mut BeamPool,
        next: Vec<(usize, SequenceState)>,
        new_id: &mut dyn FnMut() -> SeqId,
    ) -> Result<GroupStep, SampleError> {
        let mut step = GroupStep::default();
        let mut used = self.used_ids();
        used.extend(pool.hyps.iter().map(|h| h.seq.id()));
        let parents = std::mem::take(&mut self.running);
        let mut continued = vec![false; parents.len()];
        let mut new_hyps: Vec<usize> = (0..pool.hyps.len())
            .filter(|&i| pool.hyps[i].new_from_parent.is_some())
            .collect();
        new_hyps.sort_by(|&a, &b| pool.hyps[b].score.total_cmp(&pool.hyps[a].score));
        let mut running = next;
        // Running children first (best first), then new finished ones (best first).
        let mut order: Vec<(usize, Selected)> = running
            .iter()
            .enumerate()
            .map(|(i, (p, _))| (*p, Selected::Running(i)))
            .collect();
        order.extend(new_hyps.iter().filter_map(|&h| {
            pool.hyps[h]
                .new_from_parent
                .map(|p| (p, Selected::Finished(h)))
        }));
        for (parent, selected) in order {
            let parent_id = parents[parent].id();
            let id = if continued[parent] {
                let id = fresh_id(new_id, &mut used)?;
                step.forks.push(Fork {
                    parent: parent_id,
                    child: id,
                });
                id
            } else {
                continued[parent] = true;
                parent_id
            };
            let seq = match selected {
                Selected::Running(i) => &mut running[i].1,
                Selected::Finished(h) => &mut pool.hyps[h].seq,
            };
            seq.set_id(id);
        }
        for (parent, seq) in parents.iter().zip(&continued) {
            if !seq {
                step.freed.push(parent.id());
            }
        }
        let mut appended: Vec<&mut SequenceState> = running.iter_mut().map(|(_, s)| s).collect();
        appended.extend(
            pool.hyps
                .iter_mut()
                .filter(|h| h.new_from_parent.is_some())
                .map(|h| &mut h.seq),
        );
        for seq in appended {
            self.record_append(seq, &mut step);
        }
        step.discarded = pool.take_evicted();
        self.running = running.into_iter().map(|(_, s)| s).collect();
        step.group_finished = self.running.is_empty();
        Ok(step)
    }

    /// Records the token just appended to `seq` (and its finish, if any) in `step`.
    fn record_append(&self, seq: &mut SequenceState, step: &mut GroupStep) {
        let Some(&token) = seq.output_tokens().last() else {
            return;
        };
        step.appends.push(Append {
            seq: seq.id(),
            token,
            logprob: seq.last_logprob(),
            logprobs: seq.logprobs().last().cloned(),
            text_delta: seq.take_delta(&self.stop),
        });
        if let Some(finish) = seq.finish() {
            step.finished.push(Finished {
                seq: seq.id(),
                finish: finish.clone(),
            });
            step.freed.push(seq.id());
        }
    }
}

/// Runs one step for several groups whose rows are laid out back to back in `logits`
/// (`groups[i].num_running()` rows each, in order). Each group uses only its own rows and
/// parameters; one group's error does not affect the others.
///
/// Fails as a whole only if `logits` does not hold exactly the rows the groups need.
pub fn step_batch(
    groups: &mut [&mut GroupDecoder],
    logits: &mut [f32],
    scratch: &mut Scratch,
    new_id: &mut dyn FnMut() -> SeqId,
) -> Result<Vec<Result<GroupStep, SampleError>>, SampleError> {
    let sizes: Vec<usize> = groups
        .iter()
        .map(|g| g.num_running() * g.model.vocab_size)
        .collect();
    let total: usize = sizes.iter().sum();
    if total != logits.len() {
        return Err(SampleError::LogitsShape {
            rows: groups.iter().map(|g| g.num_running()).sum(),
            vocab_size: groups.first().map_or(0, |g| g.model.vocab_size),
            len: logits.len(),
        });
    }
    let mut rest = logits;
    let mut results = Vec::with_capacity(groups.len());
    for (group, size) in groups.iter_mut().zip(sizes) {
        let (rows, tail) = rest.split_at_mut(size);
        rest = tail;
        results.push(if group.is_finished() {
            Err(SampleError::GroupFinished)
        } else {
            group.step(rows, scratch, new_id)
        });
    }
    Ok(results)
}
