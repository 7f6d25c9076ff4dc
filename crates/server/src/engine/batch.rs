//! Builds the model's packed batch from the scheduler's output: token ids, positions, slot
//! mapping, block tables and the rows that need logits. Only this step's tokens are copied;
//! the history stays in the KV cache.

use std::ops::Range;

use attention_kernels::{AttnMetadata, SeqAttn};
use kv_block::{BlockManager, SeqId};
use models::ForwardBatch;
use scheduler::{RequestId, Scheduler, SchedulerOutput};

/// A packed batch and, for each logits row, what it is for.
///
/// Invariant: the logits rows are the sampling rows (`logit_seqs`, in order) followed by the
/// prompt-logprob rows of `prompt_rows`, in order.
pub struct PackedBatch {
    /// What the model runs.
    pub batch: ForwardBatch,
    /// `logit_seqs[i]` is the sequence whose next token row `i` of the logits predicts.
    pub logit_seqs: Vec<SeqId>,
    /// Runs of consecutive prompt positions whose rows feed prompt logprobs.
    pub prompt_rows: Vec<PromptRows>,
    /// Prompt (prefill) tokens in this step.
    pub num_prefill_tokens: usize,
}

/// Logits rows `first_row..first_row + count` are those of prompt positions
/// `first_position..first_position + count` of request `request_id`.
pub struct PromptRows {
    /// The request collecting prompt logprobs.
    pub request_id: RequestId,
    /// Prompt position of the first row.
    pub first_position: usize,
    /// Index of the first row in the logits.
    pub first_row: usize,
    /// Number of rows.
    pub count: usize,
}

/// Packs every scheduled sequence of `output`. `prompt_positions(request)` is the range of
/// prompt positions whose logits rows the request still needs for prompt logprobs (`None` when
/// it needs none); the rows of those positions computed this step are asked for too.
pub fn pack<M: BlockManager>(
    scheduler: &Scheduler<M>,
    output: &SchedulerOutput,
    prompt_positions: impl Fn(&str) -> Option<Range<usize>>,
) -> Result<PackedBatch, String> {
    let num_tokens = output.num_batched_tokens;
    let mut tokens = Vec::with_capacity(num_tokens);
    let mut positions = Vec::with_capacity(num_tokens);
    let mut slots = Vec::with_capacity(num_tokens);
    let mut seqs = Vec::with_capacity(output.scheduled_seqs.len());
    let mut logit_rows = Vec::new();
    let mut logit_seqs = Vec::new();
    let mut prompt_rows = Vec::new();
    let mut prompt_logit_rows = Vec::new();
    let mut num_prefill_tokens = 0;
    let block_size = scheduler.block_manager().block_size();
    for group in &output.scheduled_groups {
        // Every sequence of a group shares the prompt: its first one provides the rows.
        let mut wanted = group
            .is_prefill
            .then(|| prompt_positions(&group.request_id))
            .flatten();
        for scheduled in output.seqs(group) {
            let sequence = scheduler
                .sequence(scheduled.seq_id)
                .ok_or_else(|| format!("scheduled sequence {} is unknown", scheduled.seq_id))?;
            let range = scheduled.start..scheduled.start + scheduled.num_tokens;
            let table = scheduler
                .block_manager()
                .block_table(scheduled.seq_id)
                .map_err(|error| error.to_string())?;
            let query_start = tokens.len();
            tokens.extend_from_slice(sequence.tokens().get(range.clone()).ok_or_else(|| {
                format!("sequence {} is shorter than its schedule", scheduled.seq_id)
            })?);
            positions.extend(range.clone().map(|p| p as u32));
            slots.extend(
                table
                    .slots(range.clone())
                    .map_err(|error| error.to_string())?
                    .into_iter()
                    .map(|s| s as i64),
            );
            seqs.push(SeqAttn {
                query_start,
                query_len: scheduled.num_tokens,
                context_len: range.end,
                block_table: table.blocks().to_vec(),
            });
            if group.is_prefill {
                num_prefill_tokens += scheduled.num_tokens;
            }
            if let Some(wanted) = wanted.take() {
                let positions = wanted.start.max(range.start)..wanted.end.min(range.end);
                if !positions.is_empty() {
                    prompt_rows.push(PromptRows {
                        request_id: group.request_id.clone(),
                        first_position: positions.start,
                        first_row: prompt_logit_rows.len(),
                        count: positions.len(),
                    });
                    prompt_logit_rows
                        .extend(positions.map(|p| (query_start + p - range.start) as u32));
                }
            }
            if scheduled.needs_logits {
                logit_rows.push((tokens.len() - 1) as u32);
                logit_seqs.push(scheduled.seq_id);
            }
        }
    }
    for rows in &mut prompt_rows {
        rows.first_row += logit_rows.len();
    }
    logit_rows.extend(prompt_logit_rows);
    let attn = AttnMetadata::new(block_size, slots, seqs).map_err(|error| error.to_string())?;
    let batch = ForwardBatch::new(tokens, positions, attn, logit_rows)
        .map_err(|error| error.to_string())?;
    Ok(PackedBatch {
        batch,
        logit_seqs,
        prompt_rows,
        num_prefill_tokens,
    })
}
