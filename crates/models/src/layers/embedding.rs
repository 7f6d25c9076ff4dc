//! Token embeddings, plus learned position embeddings for OPT and GPT-2.

use candle_core::Tensor;

use crate::config::{ModelConfig, PositionScheme};
use crate::error::Result;
use crate::weight_source::{Init, WeightSource};

/// Standard deviation of invented embedding rows.
const INIT_STD: f64 = 0.02;

/// Token (and optionally position) embedding lookup.
///
/// Invariant: `tokens` is `[vocab, hidden]`; `positions`, when present, is
/// `[max_positions + offset, hidden]` and is read at `position + offset`.
#[derive(Debug, Clone)]
pub(crate) struct Embeddings {
    tokens: Tensor,
    positions: Option<(Tensor, u32)>,
}

impl Embeddings {
    /// Loads `<token_name>.weight` and, for learned positions, `<position_name>.weight`.
    pub(crate) fn load(
        source: &dyn WeightSource,
        config: &ModelConfig,
        token_name: &str,
        position_name: Option<&str>,
    ) -> Result<Self> {
        let tokens = source.tensor(
            &format!("{token_name}.weight"),
            &[config.vocab_size, config.hidden_size],
            Init::Noise(INIT_STD),
        )?;
        let positions = match (config.positions, position_name) {
            (PositionScheme::Learned { offset }, Some(name)) => {
                let rows = config.max_position_embeddings + offset;
                let table = source.tensor(
                    &format!("{name}.weight"),
                    &[rows, config.hidden_size],
                    Init::Noise(INIT_STD),
                )?;
                Some((table, offset as u32))
            }
            _ => None,
        };
        Ok(Self { tokens, positions })
    }

    /// The token embedding matrix, `[vocab, hidden]` (reused by tied output projections).
    pub(crate) fn token_matrix(&self) -> &Tensor {
        &self.tokens
    }

    /// Embeds `tokens: [T]` at `positions: [T]` (both u32, already range-checked).
    pub(crate) fn forward(&self, tokens: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let x = self.tokens.index_select(tokens, 0)?;
        Ok(match &self.positions {
            None => x,
            Some((table, offset)) => {
                let rows = (positions + f64::from(*offset))?;
                (x + table.index_select(&rows, 0)?)?
            }
        })
    }
}
