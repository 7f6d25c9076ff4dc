//! The engine thread and the handle the HTTP side talks to it through.
//!
//! One thread owns the scheduler, the block manager, the KV cache and the model, and runs one
//! step at a time (see [`core`]). The HTTP side sends [`Command`]s over a channel and receives
//! each request's [`Event`]s on an unbounded channel of its own, so a slow or vanished client
//! never blocks the engine: a send to a dropped receiver aborts the request instead.

mod batch;
pub mod core;
mod prompt_logprobs;
mod request;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use sampling::{FinishReason, PositionLogprobs, StopReason, ValidatedParams};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// A request as the engine takes it: tokenized and validated.
pub struct NewRequest {
    /// Unique id chosen by the HTTP side.
    pub id: String,
    /// Prompt token ids (non-empty, each below the vocabulary size).
    pub prompt: Vec<u32>,
    /// Validated sampling parameters.
    pub params: ValidatedParams,
    /// Scheduling priority (lower first) for the priority policy.
    pub priority: i64,
    /// When the HTTP side received it.
    pub arrival: Instant,
    /// Where the request's events go.
    pub events: UnboundedSender<Event>,
}

/// What the HTTP side asks of the engine.
pub enum Command {
    /// Schedule a new request.
    Add(Box<NewRequest>),
    /// Stop a request (client gone): its blocks are freed at once, no more events are sent.
    Abort(String),
    /// Finish the current step and exit the engine loop.
    Shutdown,
}

/// New output of one choice.
#[derive(Clone, Debug, PartialEq)]
pub struct ChoiceDelta {
    /// Choice index within the request (0..n).
    pub index: usize,
    /// Text that became final since the last delta (may be empty).
    pub text: String,
    /// Tokens generated since the last delta.
    pub token_ids: Vec<u32>,
    /// Their logprobs, when asked for (one entry per token).
    pub logprobs: Vec<PositionLogprobs>,
    /// Set on the choice's last delta.
    pub finish: Option<(FinishReason, Option<StopReason>)>,
}

/// A request's prompt logprobs in vLLM's layout: one entry per prompt token, the first `None`;
/// entry `i` holds prompt token `i` and the top-`k` alternatives at its position.
pub type PromptLogprobs = Arc<[Option<PositionLogprobs>]>;

/// Events of one request, in order: its `PromptLogprobs` when asked for, any number of `Delta`s,
/// then exactly one `Done` or `Failed`.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The prompt logprobs, sent once the prompt is computed, before the first `Delta`. They
    /// belong to every choice of the request (all choices share the prompt).
    PromptLogprobs(PromptLogprobs),
    /// Incremental output. Sent while decoding for requests whose choices are known as they are
    /// generated (plain and parallel sampling with `best_of == n`); for beam search and
    /// `best_of > n` every choice's whole output comes in one delta at the end.
    Delta(ChoiceDelta),
    /// The request finished; `Delta`s carried all of its output.
    Done(Usage),
    /// The request failed; the message says why.
    Failed(String),
}

/// Token counts of a finished request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens of the returned choices.
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_tokens += other.cached_tokens;
    }
}

/// Live counters the HTTP side reads without asking the engine.
#[derive(Debug, Default)]
pub struct EngineStatus {
    /// Requests waiting for admission.
    pub waiting: AtomicUsize,
    /// `false` once the engine thread has stopped (health turns 503).
    pub alive: AtomicBool,
}

/// The HTTP side's end of the engine: cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    status: Arc<EngineStatus>,
}

impl EngineHandle {
    /// A handle over `commands`, reporting `status`.
    pub fn new(commands: mpsc::Sender<Command>, status: Arc<EngineStatus>) -> Self {
        EngineHandle { commands, status }
    }

    /// Submits a request and returns its event stream, or `None` if the engine has stopped.
    pub fn submit(
        &self,
        id: String,
        prompt: Vec<u32>,
        params: ValidatedParams,
        priority: i64,
    ) -> Option<UnboundedReceiver<Event>> {
        let (events, receiver) = unbounded_channel();
        let request = NewRequest {
            id,
            prompt,
            params,
            priority,
            arrival: Instant::now(),
            events,
        };
        self.commands.send(Command::Add(Box::new(request))).ok()?;
        Some(receiver)
    }

    /// Aborts request `id` (a no-op if it already finished).
    pub fn abort(&self, id: &str) {
        // The engine being gone means nothing is left to abort.
        let _ = self.commands.send(Command::Abort(id.to_string()));
    }

    /// Asks the engine loop to exit after its current step.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }

    /// Requests waiting for admission right now.
    pub fn waiting(&self) -> usize {
        self.status.waiting.load(Ordering::Relaxed)
    }

    /// Whether the engine thread is running.
    pub fn is_alive(&self) -> bool {
        self.status.alive.load(Ordering::Relaxed)
    }
}

/// Aborts a request when dropped unless [`AbortOnDrop::disarm`]ed: held by the HTTP handler so
/// a client that disconnects mid-request frees its blocks at once.
pub struct AbortOnDrop {
    handle: EngineHandle,
    ids: Vec<String>,
}

impl AbortOnDrop {
    /// Guards requests `ids`.
    pub fn new(handle: EngineHandle, ids: Vec<String>) -> Self {
        AbortOnDrop { handle, ids }
    }

    /// The requests finished normally: nothing to abort.
    pub fn disarm(mut self) {
        self.ids.clear();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for id in &self.ids {
            self.handle.abort(id);
        }
    }
}
