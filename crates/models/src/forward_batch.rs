//! The packed batch of one engine step.

use attention_kernels::AttnMetadata;

use crate::error::{ModelError, Result};

/// Everything the model needs for one step besides the weights and the cache: the packed token
/// ids of all scheduled sequences (prefill chunks and decode tokens mixed, no padding), their
/// positions, the attention metadata, and the rows whose logits are wanted.
///
/// Invariants (enforced by [`ForwardBatch::new`]): `tokens`, `positions` and the metadata's
/// slot mapping have the same length; every row covered by a sequence of the metadata has the
/// position the metadata implies (`context_len - query_len + i`); every logit row is a valid row.
#[derive(Debug, Clone)]
pub struct ForwardBatch {
    tokens: Vec<u32>,
    positions: Vec<u32>,
    attn: AttnMetadata,
    logit_rows: Vec<u32>,
}

impl ForwardBatch {
    /// Validates and builds a batch (see the type's invariants).
    pub fn new(
        tokens: Vec<u32>,
        positions: Vec<u32>,
        attn: AttnMetadata,
        logit_rows: Vec<u32>,
    ) -> Result<Self> {
        let invalid = |message: String| Err(ModelError::InvalidBatch(message));
        if tokens.len() != positions.len() || tokens.len() != attn.num_tokens() {
            return invalid(format!(
                "{} tokens, {} positions and {} slots must agree",
                tokens.len(),
                positions.len(),
                attn.num_tokens()
            ));
        }
        for (index, seq) in attn.seqs().iter().enumerate() {
            let first = seq.first_query_position();
            for offset in 0..seq.query_len {
                let row = seq.query_start + offset;
                if positions[row] as usize != first + offset {
                    return invalid(format!(
                        "row {row} (sequence {index}) has position {} but the metadata implies {}",
                        positions[row],
                        first + offset
                    ));
                }
            }
        }
        if let Some(row) = logit_rows.iter().find(|&&r| r as usize >= tokens.len()) {
            return invalid(format!(
                "logit row {row} outside the batch of {} tokens",
                tokens.len()
            ));
        }
        Ok(Self {
            tokens,
            positions,
            attn,
            logit_rows,
        })
    }

    /// The packed token ids.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The position of every packed token.
    pub fn positions(&self) -> &[u32] {
        &self.positions
    }

    /// The attention metadata shared by every layer.
    pub fn attn(&self) -> &AttnMetadata {
        &self.attn
    }

    /// The rows whose logits are returned, in this order.
    pub fn logit_rows(&self) -> &[u32] {
        &self.logit_rows
    }
}
