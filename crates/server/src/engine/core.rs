//! The engine: one thread that owns the scheduler, the block manager, the KV cache pools and
//! the model, and runs `schedule → swap/copy → forward → sample → update` once per step.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use attention_kernels::{AttentionBackend, KvCachePools, copy_blocks, swap_blocks};
use kv_block::{BlockCopy, BlockManager, PagedBlockManager, SeqId};
use models::CausalLm;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sampling::{GroupDecoder, GroupStep, ModelContext, Scratch};
use scheduler::{
    FinishReason as SchedFinish, IgnoreReason, PreemptionMode, Request, Scheduler, SchedulerOutput,
};

use super::batch::{PromptRows, pack};
use super::request::ActiveRequest;
use super::{Command, EngineStatus, NewRequest};
use crate::metrics::Metrics;

/// Everything the engine thread owns.
pub struct Engine {
    scheduler: Scheduler<PagedBlockManager>,
    model: Arc<dyn CausalLm>,
    backend: Box<dyn AttentionBackend>,
    pools: KvCachePools,
    model_context: Arc<ModelContext>,
    requests: HashMap<String, ActiveRequest>,
    metrics: Arc<Metrics>,
    status: Arc<EngineStatus>,
    scratch: Scratch,
    seeds: ChaCha8Rng,
    next_dec_id: SeqId,
    log: ThroughputLog,
}

/// What an engine is made of. Invariant: `pools` match the model's cache shape (layers, KV
/// heads, head size, dtype) and the block manager's block size and pool sizes.
pub struct EngineParts {
    /// The scheduler over the paged block manager.
    pub scheduler: Scheduler<PagedBlockManager>,
    /// The model.
    pub model: Arc<dyn CausalLm>,
    /// The attention kernels.
    pub backend: Box<dyn AttentionBackend>,
    /// Device and CPU swap pools.
    pub pools: KvCachePools,
    /// What sampling needs to know of the model.
    pub model_context: Arc<ModelContext>,
    /// Metrics to update.
    pub metrics: Arc<Metrics>,
    /// Counters shared with the HTTP side.
    pub status: Arc<EngineStatus>,
    /// Time between statistics log lines.
    pub log_interval: Duration,
}

/// What the periodic statistics line reports.
struct ThroughputLog {
    interval: Duration,
    since: Instant,
    prompt_tokens: usize,
    generated_tokens: usize,
}

impl Engine {
    /// An engine over its parts.
    pub fn new(parts: EngineParts) -> Self {
        let EngineParts {
            scheduler,
            model,
            backend,
            pools,
            model_context,
            metrics,
            status,
            log_interval,
        } = parts;
        let engine = Engine {
            scheduler,
            model,
            backend,
            pools,
            model_context,
            requests: HashMap::new(),
            metrics,
            status,
            scratch: Scratch::default(),
            seeds: ChaCha8Rng::from_os_rng(),
            next_dec_id: 1 << 62,
            log: ThroughputLog {
                interval: log_interval,
                since: Instant::now(),
                prompt_tokens: 0,
                generated_tokens: 0,
            },
        };
        engine.publish_gauges();
        engine
    }

    /// Runs until `Shutdown` or until every handle is dropped: blocks while idle, otherwise
    /// takes new commands between steps. Marks the engine dead in `status` when it returns.
    pub fn run(mut self, commands: Receiver<Command>) {
        'outer: loop {
            if self.requests.is_empty() {
                match commands.recv() {
                    Ok(command) => {
                        if !self.handle(command) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            loop {
                match commands.try_recv() {
                    Ok(command) => {
                        if !self.handle(command) {
                            break 'outer;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break 'outer,
                }
            }
            if !self.requests.is_empty() {
                self.step();
            }
            self.log_if_due();
        }
        for (id, request) in self.requests.drain() {
            request.emit_failure("The server is shutting down.".into());
            let _ = self.scheduler.abort(&id);
        }
        self.status.alive.store(false, Ordering::Relaxed);
    }

    /// Applies one command; `false` means shut down.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Add(request) => self.add(*request),
            Command::Abort(id) => self.abort(&id),
            Command::Shutdown => return false,
        }
        self.publish_gauges();
        true
    }

    fn add(&mut self, request: NewRequest) {
        let NewRequest {
            id,
            prompt,
            params,
            priority,
            arrival,
            events,
        } = request;
        let parallel = params.best_of();
        let max_new = params.max_tokens().unwrap_or(0);
        let prompt_len = prompt.len();
        let mut scheduled = Request::new(id.clone(), prompt.clone(), 0.0)
            .with_priority(priority)
            .with_max_parallel_seqs(parallel)
            .with_max_new_tokens(max_new);
        if params.prompt_logprobs().is_some() {
            // Tokens served from the prefix cache are not computed, so they would have no
            // logits: like vLLM, such a request does not read the cache. A key of its own keeps
            // it from matching other requests' blocks (only its own, after a recompute
            // preemption, whose positions it has already summarised).
            scheduled = scheduled.with_extra_keys(format!("prompt_logprobs/{id}").into_bytes());
        }
        let root = match self.scheduler.add_request(scheduled) {
            Ok(root) => root,
            Err(error) => {
                let _ = events.send(super::Event::Failed(error.to_string()));
                return;
            }
        };
        let decoder = GroupDecoder::new(
            params,
            prompt.into(),
            root,
            self.model_context.clone(),
            self.seeds.random(),
        );
        self.requests.insert(
            id,
            ActiveRequest::new(decoder, root, events, prompt_len, arrival),
        );
    }

    fn abort(&mut self, id: &str) {
        if self.requests.remove(id).is_some() {
            let _ = self.scheduler.abort(id);
            self.metrics
                .request_success
                .with_label_values(&["abort"])
                .inc();
        }
    }

    /// One engine step.
    fn step(&mut self) {
        let output = match self.scheduler.schedule() {
            Ok(output) => output,
            Err(error) => {
                self.fail_all(&format!("scheduler error: {error}"));
                return;
            }
        };
        self.handle_ignored(&output);
        for preempted in &output.preempted {
            let mode = match preempted.mode {
                PreemptionMode::Swap => "swap",
                _ => "recompute",
            };
            self.metrics.preemptions.with_label_values(&[mode]).inc();
        }
        if output.is_empty() {
            self.publish_gauges();
            return;
        }
        if let Err(error) = self.move_blocks(&output) {
            self.fail_scheduled(&output, &format!("KV cache copy failed: {error}"));
            return;
        }
        let requests = &self.requests;
        let prompt_positions = |id: &str| {
            let collector = requests.get(id)?.prompt_logprobs.as_ref()?;
            Some(collector.pending())
        };
        let packed = match pack(&self.scheduler, &output, prompt_positions) {
            Ok(packed) => packed,
            Err(error) => {
                self.fail_scheduled(&output, &format!("could not build the batch: {error}"));
                return;
            }
        };
        let (model, backend) = (&self.model, self.backend.as_ref());
        let layers = &mut self.pools.device.layers_mut()[..];
        // The forward pass runs on a worker of rayon's pool (`scope` moves it there), so its
        // ~70 parallel sections per step fork from a worker instead of each handing work to the
        // pool and putting this thread to sleep until it is done.
        let logits = rayon::scope(|_| {
            model
                .forward(&packed.batch, layers, backend)
                .and_then(|logits| Ok(logits.flatten_all()?.to_vec1::<f32>()?))
        });
        let mut logits = match logits {
            Ok(logits) => logits,
            Err(error) => {
                self.fail_scheduled(&output, &format!("model forward failed: {error}"));
                return;
            }
        };
        self.metrics
            .prompt_tokens
            .inc_by(packed.num_prefill_tokens as u64);
        self.log.prompt_tokens += packed.num_prefill_tokens;
        self.record_prefix_hits(&output);
        for rows in &packed.prompt_rows {
            self.absorb_prompt_rows(rows, &mut logits);
        }
        let row_of: HashMap<SeqId, usize> = packed
            .logit_seqs
            .iter()
            .enumerate()
            .map(|(row, &seq)| (seq, row))
            .collect();
        for group in &output.scheduled_groups {
            let needs_sampling = output.seqs(group).iter().any(|seq| seq.needs_logits);
            if needs_sampling {
                self.sample_group(&group.request_id, &row_of, &mut logits);
            }
        }
        self.publish_gauges();
    }

    /// On a request's first admission, the tokens before its first scheduled position came from
    /// the prefix cache: record them for its usage and the hit-rate metrics.
    fn record_prefix_hits(&mut self, output: &SchedulerOutput) {
        for group in &output.scheduled_groups {
            let Some(request) = self.requests.get_mut(group.request_id.as_ref()) else {
                continue;
            };
            let Some(first) = output.seqs(group).first() else {
                continue;
            };
            if request.cached_tokens.is_none() {
                request.cached_tokens = Some(first.start);
                self.metrics
                    .prefix_cache_queries
                    .inc_by(request.prompt_len as u64);
                self.metrics.prefix_cache_hits.inc_by(first.start as u64);
            }
        }
    }

    /// Hands the logits rows of `rows` to their request's prompt-logprob collector.
    fn absorb_prompt_rows(&mut self, rows: &PromptRows, logits: &mut [f32]) {
        let id = rows.request_id.as_ref();
        let Some(request) = self.requests.get_mut(id) else {
            return;
        };
        let Some(collector) = request.prompt_logprobs.as_mut() else {
            return;
        };
        let vocab = self.model_context.vocab_size;
        let slice = &mut logits[rows.first_row * vocab..(rows.first_row + rows.count) * vocab];
        let params = request.decoder.params();
        let prompt = request.decoder.prompt();
        if let Err(error) = collector.absorb(params, prompt, rows.first_position, slice, vocab) {
            self.fail_request(id, &error);
        }
    }

    /// Runs swap-out, swap-in and copy-on-write copies, in that order.
    fn move_blocks(&mut self, output: &SchedulerOutput) -> Result<(), String> {
        let pairs = |copies: &[BlockCopy]| -> Vec<(u32, u32)> {
            copies.iter().map(|copy| (copy.src, copy.dst)).collect()
        };
        let pools = &mut self.pools;
        if !output.blocks_to_swap_out.is_empty() {
            swap_blocks(
                &pools.device,
                &mut pools.cpu_swap,
                &pairs(&output.blocks_to_swap_out),
            )
            .map_err(|error| error.to_string())?;
        }
        if !output.blocks_to_swap_in.is_empty() {
            swap_blocks(
                &pools.cpu_swap,
                &mut pools.device,
                &pairs(&output.blocks_to_swap_in),
            )
            .map_err(|error| error.to_string())?;
        }
        if !output.blocks_to_copy.is_empty() {
            copy_blocks(&mut pools.device, &pairs(&output.blocks_to_copy))
                .map_err(|error| error.to_string())?;
        }
        Ok(())
    }

    /// Samples request `id` from its rows of `logits` and applies the decisions.
    fn sample_group(&mut self, id: &str, row_of: &HashMap<SeqId, usize>, logits: &mut [f32]) {
        let Some(request) = self.requests.get_mut(id) else {
            return;
        };
        let vocab = self.model_context.vocab_size;
        let mut row_indices = Vec::with_capacity(request.decoder.num_running());
        for dec in request.decoder.running_ids() {
            let row = request.sched_id(dec).and_then(|sched| row_of.get(&sched));
            let Some(&row) = row else {
                let message = format!("sequence {dec} has no logits this step");
                return self.fail_request(id, &message);
            };
            row_indices.push(row);
        }
        // The rows of a group are usually adjacent and in the decoder's order (always for a
        // single sequence): sample them in place; otherwise gather them.
        let first = row_indices[0];
        let adjacent = row_indices
            .iter()
            .enumerate()
            .all(|(i, &row)| row == first + i);
        let mut gathered;
        let rows: &mut [f32] = if adjacent {
            &mut logits[first * vocab..(first + row_indices.len()) * vocab]
        } else {
            gathered = Vec::with_capacity(row_indices.len() * vocab);
            for row in &row_indices {
                gathered.extend_from_slice(&logits[row * vocab..(row + 1) * vocab]);
            }
            &mut gathered
        };
        let next_dec_id = &mut self.next_dec_id;
        let mut new_id = || {
            *next_dec_id += 1;
            *next_dec_id
        };
        let step = match request.decoder.step(rows, &mut self.scratch, &mut new_id) {
            Ok(step) => step,
            Err(error) => return self.fail_request(id, &format!("sampling failed: {error}")),
        };
        if let Err(error) = self.apply(id, &step) {
            return self.fail_request(id, &error);
        }
        let Some(request) = self.requests.get_mut(id) else {
            return;
        };
        let now = Instant::now();
        if request.first_token.is_none() {
            request.first_token = Some(now);
            self.metrics
                .time_to_first_token
                .observe(now.duration_since(request.arrival).as_secs_f64());
        }
        request.generated += step.appends.len();
        self.metrics
            .generation_tokens
            .inc_by(step.appends.len() as u64);
        self.log.generated_tokens += step.appends.len();
        // The first token means the whole prompt was computed: its logprobs are complete.
        if let Some(collector) = request.prompt_logprobs.take() {
            let list = match collector.finish() {
                Ok(list) => list,
                Err(error) => return self.fail_request(id, &error),
            };
            if !request.emit_prompt_logprobs(list) {
                return self.abort(id);
            }
        }
        if !request.emit_step(&step) {
            return self.abort(id);
        }
        if step.group_finished {
            self.finish_request(id);
        }
    }

    /// Maps a group's decisions onto the scheduler: forks, appends, then frees.
    fn apply(&mut self, id: &str, step: &GroupStep) -> Result<(), String> {
        let request = self.requests.get_mut(id).ok_or("request vanished")?;
        for fork in &step.forks {
            let parent = request
                .sched_id(fork.parent)
                .ok_or("fork of an unknown parent")?;
            let child = self.scheduler.fork(parent).map_err(|e| e.to_string())?;
            request.link(fork.child, child);
        }
        for append in &step.appends {
            let seq = request
                .sched_id(append.seq)
                .ok_or("append to an unknown sequence")?;
            self.scheduler
                .append_token(seq, append.token)
                .map_err(|e| e.to_string())?;
        }
        for &dec in &step.freed {
            let Some(seq) = request.sched_id(dec) else {
                continue;
            };
            request.unlink(dec);
            if self.scheduler.sequence(seq).is_none() {
                continue; // The scheduler already ended it at max_model_len.
            }
            let reason = match step.finished.iter().find(|f| f.seq == dec) {
                Some(finished) if finished.finish.reason() == sampling::FinishReason::Length => {
                    SchedFinish::LengthCapped
                }
                Some(_) => SchedFinish::Stopped,
                None => SchedFinish::Discarded,
            };
            self.scheduler
                .finish_sequence(seq, reason)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn finish_request(&mut self, id: &str) {
        let Some(request) = self.requests.remove(id) else {
            return;
        };
        // Every sequence was freed by the decisions; abort catches anything left behind.
        let _ = self.scheduler.abort(id);
        request.emit_done();
        let now = Instant::now();
        self.metrics
            .e2e_request_latency
            .observe(now.duration_since(request.arrival).as_secs_f64());
        if let Some(first) = request.first_token
            && request.generated > 1
        {
            let per_token =
                now.duration_since(first).as_secs_f64() / (request.generated - 1) as f64;
            self.metrics.time_per_output_token.observe(per_token);
        }
        let reason = request
            .decoder
            .outputs()
            .first()
            .and_then(|sequence| sequence.finish())
            .map(|finish| finish.reason())
            .unwrap_or(sampling::FinishReason::Length);
        let label = match reason {
            sampling::FinishReason::Stop => "stop",
            sampling::FinishReason::Length => "length",
        };
        self.metrics
            .request_success
            .with_label_values(&[label])
            .inc();
    }

    /// Groups the scheduler removed: a group that outgrew the KV cache ends with what it has
    /// (finish reason `length`); a rejected prompt is a failure with the scheduler's reason.
    fn handle_ignored(&mut self, output: &SchedulerOutput) {
        for ignored in &output.ignored {
            let id = ignored.request_id.as_ref();
            if ignored.reason == IgnoreReason::KvCapacityExhausted && self.requests.contains_key(id)
            {
                tracing::warn!("request {id} outgrew the KV cache and ends early");
                self.finish_request(id);
            } else if let Some(request) = self.requests.remove(id) {
                request.emit_failure(format!("The request was rejected: {}.", ignored.reason));
            }
        }
    }

    fn fail_request(&mut self, id: &str, message: &str) {
        if let Some(request) = self.requests.remove(id) {
            tracing::warn!("request {id} failed: {message}");
            request.emit_failure(message.to_string());
            let _ = self.scheduler.abort(id);
        }
    }

    fn fail_scheduled(&mut self, output: &SchedulerOutput, message: &str) {
        for group in &output.scheduled_groups {
            self.fail_request(group.request_id.as_ref(), message);
        }
    }

    fn fail_all(&mut self, message: &str) {
        let ids: Vec<String> = self.requests.keys().cloned().collect();
        for id in ids {
            self.fail_request(&id, message);
        }
    }

    fn publish_gauges(&self) {
        let usage = self.scheduler.block_manager().usage();
        self.metrics
            .requests_running
            .set(self.scheduler.num_running() as i64);
        self.metrics
            .requests_waiting
            .set(self.scheduler.num_waiting() as i64);
        self.metrics
            .requests_swapped
            .set(self.scheduler.num_swapped() as i64);
        self.metrics.kv_cache_usage.set(usage.device_usage());
        self.metrics.cpu_cache_usage.set(usage.cpu_usage());
        self.metrics.kv_blocks_free.set(usage.device_free as i64);
        self.status
            .waiting
            .store(self.scheduler.num_waiting(), Ordering::Relaxed);
    }

    fn log_if_due(&mut self) {
        let elapsed = self.log.since.elapsed();
        if elapsed < self.log.interval {
            return;
        }
        if self.log.prompt_tokens + self.log.generated_tokens > 0 || !self.requests.is_empty() {
            let usage = self.scheduler.block_manager().usage();
            tracing::info!(
                "Avg prompt throughput: {:.1} tokens/s, Avg generation throughput: {:.1} tokens/s, \
                 Running: {} reqs, Swapped: {} reqs, Pending: {} reqs, KV cache usage: {:.1}%, \
                 CPU KV cache usage: {:.1}%",
                self.log.prompt_tokens as f64 / elapsed.as_secs_f64(),
                self.log.generated_tokens as f64 / elapsed.as_secs_f64(),
                self.scheduler.num_running(),
                self.scheduler.num_swapped(),
                self.scheduler.num_waiting(),
                usage.device_usage() * 100.0,
                usage.cpu_usage() * 100.0,
            );
        }
        self.log.since = Instant::now();
        self.log.prompt_tokens = 0;
        self.log.generated_tokens = 0;
    }
}
