//! One request inside the engine: its decoder, the mapping between the decoder's sequence ids
//! and the scheduler's, and the emission of its events.

use std::collections::HashMap;
use std::time::Instant;

use kv_block::SeqId;
use sampling::sequence::SequenceState;
use sampling::{FinishReason, GroupDecoder, GroupStep, SamplingType};
use tokio::sync::mpsc::UnboundedSender;

use super::prompt_logprobs::PromptLogprobsCollector;
use super::{ChoiceDelta, Event, PromptLogprobs, Usage};

/// Engine-side state of one request.
///
/// Invariants: `to_sched` maps each live decoder sequence to its scheduler sequence; every
/// choice index in `choice_of` is below `n`.
pub struct ActiveRequest {
    /// Sampling state.
    pub decoder: GroupDecoder,
    events: UnboundedSender<Event>,
    /// Deltas are sent as tokens arrive (plain or parallel sampling with `best_of == n`).
    incremental: bool,
    choice_of: HashMap<SeqId, usize>,
    to_sched: HashMap<SeqId, SeqId>,
    /// Prompt tokens.
    pub prompt_len: usize,
    /// Prompt tokens served from the prefix cache at first admission (`None` until then).
    pub cached_tokens: Option<usize>,
    /// When the request arrived.
    pub arrival: Instant,
    /// When its first token was sampled.
    pub first_token: Option<Instant>,
    /// Tokens generated over all sequences.
    pub generated: usize,
    /// Prompt logprobs being collected: `Some` from arrival (when asked for) until they are
    /// sent with the first sampled token, so a later re-prefill does not collect them again.
    pub prompt_logprobs: Option<PromptLogprobsCollector>,
}

impl ActiveRequest {
    /// A request whose root sequence has the same id in the decoder and the scheduler.
    pub fn new(
        decoder: GroupDecoder,
        root: SeqId,
        events: UnboundedSender<Event>,
        prompt_len: usize,
        arrival: Instant,
    ) -> Self {
        let params = decoder.params();
        let incremental =
            params.sampling_type() != SamplingType::Beam && params.best_of() == params.n();
        let prompt_logprobs = params
            .prompt_logprobs()
            .map(|k| PromptLogprobsCollector::new(k, prompt_len));
        ActiveRequest {
            decoder,
            events,
            incremental,
            choice_of: HashMap::from([(root, 0)]),
            to_sched: HashMap::from([(root, root)]),
            prompt_len,
            cached_tokens: None,
            arrival,
            first_token: None,
            generated: 0,
            prompt_logprobs,
        }
    }

    /// The scheduler's id of decoder sequence `dec`.
    pub fn sched_id(&self, dec: SeqId) -> Option<SeqId> {
        self.to_sched.get(&dec).copied()
    }

    /// Records that decoder sequence `dec` is scheduler sequence `sched` (a fork just made).
    pub fn link(&mut self, dec: SeqId, sched: SeqId) {
        self.to_sched.insert(dec, sched);
        if self.incremental {
            let index = self.choice_of.len();
            self.choice_of.insert(dec, index);
        }
    }

    /// Forgets the scheduler id of decoder sequence `dec` (its blocks were freed).
    pub fn unlink(&mut self, dec: SeqId) {
        self.to_sched.remove(&dec);
    }

    /// Sends the prompt logprobs. Returns `false` if the client is gone.
    pub fn emit_prompt_logprobs(&self, list: PromptLogprobs) -> bool {
        self.events.send(Event::PromptLogprobs(list)).is_ok()
    }

    /// Sends the deltas of `step` when the request streams incrementally. Returns `false` if
    /// the client is gone.
    pub fn emit_step(&self, step: &GroupStep) -> bool {
        if !self.incremental {
            return !self.events.is_closed();
        }
        for append in &step.appends {
            let Some(&index) = self.choice_of.get(&append.seq) else {
                continue;
            };
            let finish = step
                .finished
                .iter()
                .find(|finished| finished.seq == append.seq)
                .map(|finished| (finished.finish.reason(), finished.finish.stop_reason()));
            let delta = ChoiceDelta {
                index,
                text: append.text_delta.clone(),
                token_ids: vec![append.token],
                logprobs: append.logprobs.iter().cloned().collect(),
                finish,
            };
            if self.events.send(Event::Delta(delta)).is_err() {
                return false;
            }
        }
        true
    }

    /// Sends the final output: whole choices (unless they were streamed already) and usage.
    /// Sequences still running (the scheduler ended the group early because it outgrew the KV
    /// cache) finish with `length`.
    pub fn emit_done(&self) {
        let outputs = self.decoder.outputs();
        if self.incremental {
            for dec in self.decoder.running_ids() {
                let Some(&index) = self.choice_of.get(&dec) else {
                    continue;
                };
                let closing = ChoiceDelta {
                    index,
                    text: String::new(),
                    token_ids: Vec::new(),
                    logprobs: Vec::new(),
                    finish: Some((FinishReason::Length, None)),
                };
                let _ = self.events.send(Event::Delta(closing));
            }
        } else {
            for (index, sequence) in outputs.iter().enumerate() {
                let _ = self.events.send(Event::Delta(whole_delta(index, sequence)));
            }
        }
        let completion_tokens = outputs.iter().map(|s| s.output_tokens().len()).sum();
        let usage = Usage {
            prompt_tokens: self.prompt_len,
            completion_tokens,
            cached_tokens: self.cached_tokens.unwrap_or(0),
        };
        let _ = self.events.send(Event::Done(usage));
    }

    /// Sends a failure; the request is over.
    pub fn emit_failure(&self, message: String) {
        let _ = self.events.send(Event::Failed(message));
    }
}

fn whole_delta(index: usize, sequence: &SequenceState) -> ChoiceDelta {
    ChoiceDelta {
        index,
        text: sequence.text().to_string(),
        token_ids: sequence.output_tokens().to_vec(),
        logprobs: sequence.logprobs().to_vec(),
        finish: sequence
            .finish()
            .map(|finish| (finish.reason(), finish.stop_reason())),
    }
}
