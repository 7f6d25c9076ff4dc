//! A simulated executor: drives a [`Scheduler`] over a workload without a model. Each step it
//! runs `schedule()`, "samples" a pseudo-random token for every sequence whose chunk asked
//! for logits, forks sequences for parallel sampling and beam search, and finishes sequences
//! at their drawn output length. Tests use it to check invariants every step; benchmarks use
//! it to reach a steady state.

use std::collections::{HashMap, HashSet, VecDeque};

use kv_block::{BlockManager, KvError, SeqId, TokenId};

use crate::error::SchedulerError;
use crate::group::GroupStatus;
use crate::output::{IgnoreReason, SchedulerOutput};
use crate::request::{Request, RequestId};
use crate::scheduler::{AppendOutcome, GroupProgress, Scheduler};
use crate::sequence::FinishReason;

/// How a simulated request samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// One sequence.
    Single,
    /// `n` independent sequences forked after the first sample; they stop at slightly
    /// different lengths.
    Parallel(usize),
    /// Beam search of this width: after the first sample, beams are forked and pruned at
    /// random while the width stays constant; all beams stop together.
    Beam(usize),
}

impl Sampling {
    /// Sequences the request runs at once.
    pub fn width(self) -> usize {
        match self {
            Self::Single => 1,
            Self::Parallel(n) | Self::Beam(n) => n.max(1),
        }
    }
}

/// One request of a simulated workload.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRequest {
    /// Unique id.
    pub request_id: String,
    /// Step at which the request is added (before that step's `schedule()`).
    pub arrival_step: u64,
    /// Prompt tokens (at least one).
    pub prompt: Vec<TokenId>,
    /// Tokens each sequence generates before it stops (at least 1).
    pub output_len: usize,
    /// Sampling shape.
    pub sampling: Sampling,
    /// Priority for the priority policy.
    pub priority: i64,
}

/// How a simulated request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every sequence finished.
    Finished,
    /// The scheduler rejected or ended it.
    Rejected(IgnoreReason),
    /// The workload aborted it.
    Aborted,
}

/// Why a simulation stopped early.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// The scheduler refused a call the simulator made.
    #[error("step {step}: {source}")]
    Scheduler {
        /// Step of the failure.
        step: u64,
        /// The scheduler's error.
        source: SchedulerError,
    },
    /// An invariant audit failed.
    #[error("step {step}: invariant violated: {message}")]
    Invariant {
        /// Step of the failure.
        step: u64,
        /// What was wrong.
        message: String,
    },
    /// Requests were still unfinished after the step limit (a livelock or a stall).
    #[error("{unfinished} requests unfinished after {steps} steps")]
    Stalled {
        /// Steps run.
        steps: u64,
        /// Requests not finished.
        unfinished: usize,
    },
}

/// Per-request facts the simulator needs while the request runs.
#[derive(Debug, Clone, Copy)]
struct Plan {
    prompt_len: usize,
    output_len: usize,
    sampling: Sampling,
}

/// The simulated executor over a scheduler.
///
/// Invariant: every request of the workload ends up in exactly one [`Outcome`] once
/// [`Simulator::is_done`] holds.
pub struct Simulator<M: BlockManager> {
    scheduler: Scheduler<M>,
    arrivals: VecDeque<SimRequest>,
    plans: HashMap<RequestId, Plan>,
    outcomes: HashMap<RequestId, Outcome>,
    admission_order: Vec<RequestId>,
    admitted: HashSet<RequestId>,
    step: u64,
    rng: SplitMix64,
    audit: bool,
    failed_forks: u64,
}

impl<M: BlockManager> Simulator<M> {
    /// A simulator over `scheduler` (normally empty) that adds `workload` at its arrival
    /// steps; `seed` drives the sampled tokens and beam reshuffles.
    pub fn new(scheduler: Scheduler<M>, mut workload: Vec<SimRequest>, seed: u64) -> Self {
        workload.sort_by_key(|r| r.arrival_step);
        Self {
            scheduler,
            arrivals: workload.into(),
            plans: HashMap::new(),
            outcomes: HashMap::new(),
            admission_order: Vec::new(),
            admitted: HashSet::new(),
            step: 0,
            rng: SplitMix64(seed),
            audit: false,
            failed_forks: 0,
        }
    }

    /// The same simulator auditing the scheduler ([`Scheduler::check_invariants`],
    /// [`Scheduler::check_output`]) after every `schedule()`.
    pub fn with_audit(self, audit: bool) -> Self {
        Self { audit, ..self }
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &Scheduler<M> {
        &self.scheduler
    }

    /// Mutable access to the scheduler, to add requests or abort outside the workload.
    pub fn scheduler_mut(&mut self) -> &mut Scheduler<M> {
        &mut self.scheduler
    }

    /// How each ended request ended.
    pub fn outcomes(&self) -> &HashMap<RequestId, Outcome> {
        &self.outcomes
    }

    /// Requests in the order they were first scheduled.
    pub fn admission_order(&self) -> &[RequestId] {
        &self.admission_order
    }

    /// Forks the block manager had no room for (static reservations copy on fork); the
    /// group went on with fewer sequences.
    pub fn failed_forks(&self) -> u64 {
        self.failed_forks
    }

    /// Steps run so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Whether every request has arrived and ended.
    pub fn is_done(&self) -> bool {
        self.arrivals.is_empty() && !self.scheduler.has_unfinished()
    }

    /// Ids of the requests that arrived and have not ended, in no particular order.
    pub fn unfinished(&self) -> Vec<RequestId> {
        [
            GroupStatus::Waiting,
            GroupStatus::Running,
            GroupStatus::Swapped,
        ]
        .into_iter()
        .flat_map(|status| self.scheduler.queue(status))
        .map(|g| g.request_id().clone())
        .collect()
    }

    /// Aborts an arrived, unfinished request.
    pub fn abort(&mut self, request_id: &str) -> Result<(), SimError> {
        self.scheduler
            .abort(request_id)
            .map_err(|source| self.error(source))?;
        if let Some((id, _)) = self.plans.remove_entry(request_id) {
            self.outcomes.insert(id, Outcome::Aborted);
        }
        Ok(())
    }

    /// Runs steps until [`Simulator::is_done`] or `max_steps` steps in all.
    pub fn run(&mut self, max_steps: u64) -> Result<(), SimError> {
        while !self.is_done() {
            if self.step >= max_steps {
                return Err(SimError::Stalled {
                    steps: self.step,
                    unfinished: self.arrivals.len() + self.scheduler.num_unfinished_groups(),
                });
            }
            self.step()?;
        }
        Ok(())
    }

    /// One engine step: arrivals, `schedule()`, audit, then the results of the "forward pass".
    pub fn step(&mut self) -> Result<SchedulerOutput, SimError> {
        while self
            .arrivals
            .front()
            .is_some_and(|r| r.arrival_step <= self.step)
        {
            if let Some(request) = self.arrivals.pop_front() {
                self.add(request)?;
            }
        }
        let out = self
            .scheduler
            .schedule()
            .map_err(|source| self.error(source))?;
        if self.audit {
            self.scheduler
                .check_output(&out)
                .and_then(|()| self.scheduler.check_invariants())
                .map_err(|message| SimError::Invariant {
                    step: self.step,
                    message,
                })?;
        }
        for ignored in &out.ignored {
            self.plans.remove(&ignored.request_id);
            self.outcomes.insert(
                ignored.request_id.clone(),
                Outcome::Rejected(ignored.reason),
            );
        }
        for group in &out.scheduled_groups {
            if self.admitted.insert(group.request_id.clone()) {
                self.admission_order.push(group.request_id.clone());
            }
            let sampled: Vec<SeqId> = out
                .seqs(group)
                .iter()
                .filter(|s| s.needs_logits)
                .map(|s| s.seq_id)
                .collect();
            if !sampled.is_empty() {
                self.sample(&group.request_id, sampled)
                    .map_err(|source| self.error(source))?;
            }
        }
        self.step += 1;
        Ok(out)
    }

    fn add(&mut self, request: SimRequest) -> Result<(), SimError> {
        let id: RequestId = request.request_id.into();
        let plan = Plan {
            prompt_len: request.prompt.len(),
            output_len: request.output_len.max(1),
            sampling: request.sampling,
        };
        let new = Request::new(id.clone(), request.prompt, self.step as f64)
            .with_priority(request.priority)
            .with_max_parallel_seqs(plan.sampling.width())
            .with_max_new_tokens(plan.output_len);
        self.scheduler
            .add_request(new)
            .map_err(|source| self.error(source))?;
        self.plans.insert(id, plan);
        Ok(())
    }

    /// Applies one step's samples to the group of `request_id`: forks, tokens, finishes.
    fn sample(
        &mut self,
        request_id: &RequestId,
        mut seqs: Vec<SeqId>,
    ) -> Result<(), SchedulerError> {
        let Some(plan) = self.plans.get(request_id).copied() else {
            return Ok(());
        };
        let Some(group) = self.scheduler.group(request_id) else {
            return Ok(());
        };
        let first_sample = group.num_finished_seqs() == 0
            && group.seqs().len() == 1
            && group.seqs()[0].len() == plan.prompt_len;
        let mut discarded = None;
        match plan.sampling {
            Sampling::Parallel(n) | Sampling::Beam(n) if first_sample => {
                for _ in 1..n {
                    if let Some(child) = self.try_fork(seqs[0])? {
                        seqs.push(child);
                    }
                }
            }
            Sampling::Beam(_) if seqs.len() > 1 && self.rng.next().is_multiple_of(2) => {
                let parent = seqs[self.rng.below(seqs.len())];
                if let Some(child) = self.try_fork(parent)? {
                    discarded = Some(seqs.remove(self.rng.below(seqs.len())));
                    seqs.push(child);
                }
            }
            _ => {}
        }
        if let Some(victim) = discarded {
            self.scheduler
                .finish_sequence(victim, FinishReason::Discarded)?;
        }
        for &seq in &seqs {
            let token = (self.rng.next() % 32) as TokenId;
            let progress = match self.scheduler.append_token(seq, token)? {
                AppendOutcome::LengthCapped(progress) => progress,
                AppendOutcome::Appended => {
                    let generated = self
                        .scheduler
                        .sequence(seq)
                        .map_or(0, |s| s.len() - plan.prompt_len);
                    if generated < plan.target(seq) {
                        continue;
                    }
                    self.scheduler.finish_sequence(seq, FinishReason::Stopped)?
                }
            };
            if progress == GroupProgress::Retired {
                self.plans.remove(request_id);
                self.outcomes.insert(request_id.clone(), Outcome::Finished);
                break;
            }
        }
        Ok(())
    }

    /// Forks `parent`; a block manager without room for the copy (a static reservation)
    /// leaves the group narrower instead of failing the run, and is counted.
    fn try_fork(&mut self, parent: SeqId) -> Result<Option<SeqId>, SchedulerError> {
        match self.scheduler.fork(parent) {
            Ok(child) => Ok(Some(child)),
            Err(SchedulerError::BlockManager(KvError::OutOfBlocks { .. })) => {
                self.failed_forks += 1;
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    fn error(&self, source: SchedulerError) -> SimError {
        SimError::Scheduler {
            step: self.step,
            source,
        }
    }
}

impl Plan {
    /// Output length at which sequence `seq` stops: parallel samples spread over three
    /// lengths, beams and single sequences stop together.
    fn target(&self, seq: SeqId) -> usize {
        match self.sampling {
            Sampling::Parallel(_) => self.output_len.saturating_sub((seq % 3) as usize).max(1),
            Sampling::Single | Sampling::Beam(_) => self.output_len,
        }
    }
}

/// A tiny deterministic generator (SplitMix64), enough for tokens and beam choices.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
