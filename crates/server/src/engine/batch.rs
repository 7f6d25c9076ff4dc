//! Builds the model's packed batch from the scheduler's output: token ids, positions, slot
//! mapping, block tables and the rows that need logits. Only this step's tokens are copied;
//! the history stays in the KV cache.

use attention_kernels::{AttnMetadata, SeqAttn};
use kv_block::{BlockManager, SeqId};
use models::ForwardBatch;
use scheduler::{Scheduler, SchedulerOutput};

/// A packed batch and, for each logits row, the sequence it belongs to.
pub struct PackedBatch {
    /// What the model runs.
    pub batch: ForwardBatch,
    /// `logit_seqs[i]` is the sequence whose next token row `i` of the logits predicts.
    pub logit_seqs: Vec<SeqId>,
    /// Prompt (prefill) tokens in this step.
    pub num_prefill_tokens: usize,
}

/// Packs every scheduled sequence of `output`.
pub fn pack<M: BlockManager>(
    scheduler: &Scheduler<M>,
    output: &SchedulerOutput,
) -> Result<PackedBatch, String> {
    let num_tokens = output.num_batched_tokens;
    let mut tokens = Vec::with_capacity(num_tokens);
    let mut positions = Vec::with_capacity(num_tokens);
    let mut slots = Vec::with_capacity(num_tokens);
    let mut seqs = Vec::with_capacity(output.scheduled_seqs.len());
    let mut logit_rows = Vec::new();
    let mut logit_seqs = Vec::new();
    let mut num_prefill_tokens = 0;
    let block_size = scheduler.block_manager().block_size();
    for group in &output.scheduled_groups {
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
            if scheduled.needs_logits {
                logit_rows.push((tokens.len() - 1) as u32);
                logit_seqs.push(scheduled.seq_id);
            }
        }
    }
    let attn = AttnMetadata::new(block_size, slots, seqs).map_err(|error| error.to_string())?;
    let batch = ForwardBatch::new(tokens, positions, attn, logit_rows)
        .map_err(|error| error.to_string())?;
    Ok(PackedBatch {
        batch,
        logit_seqs,
        num_prefill_tokens,
    })
}
