//! Scheduler limits and modes.

use crate::error::SchedulerError;

/// How a running group is evicted when the device pool runs out of blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreemptionMode {
    /// Move the group's blocks to the CPU pool and bring them back later (falls back to
    /// recompute for a group the CPU pool cannot hold).
    Swap,
    /// Free the group's blocks and recompute prompt plus generated tokens on re-admission.
    Recompute,
    /// vLLM's rule: groups that run a single sequence recompute, the others swap.
    Auto,
}

/// Budgets and switches of one scheduler.
///
/// Invariants (checked by [`SchedulerConfig::validate`]): every limit is at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most sequences holding device blocks at once (default 256).
    pub max_num_seqs: usize,
    /// Most tokens computed in one step, prefill chunks and decode tokens together
    /// (default 2048).
    pub max_num_batched_tokens: usize,
    /// Most tokens a sequence may hold, prompt included (default 2048).
    pub max_model_len: usize,
    /// Mix decode tokens and prefill chunks in one token budget (vLLM ≥ 0.4
    /// `enable_chunked_prefill`); off gives the paper's prefill-only and decode-only steps.
    pub chunked_prefill: bool,
    /// How groups are preempted (default [`PreemptionMode::Auto`]).
    pub preemption_mode: PreemptionMode,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_num_seqs: 256,
            max_num_batched_tokens: 2048,
            max_model_len: 2048,
            chunked_prefill: false,
            preemption_mode: PreemptionMode::Auto,
        }
    }
}

impl SchedulerConfig {
    /// The same configuration with another sequence limit.
    pub fn with_max_num_seqs(self, max_num_seqs: usize) -> Self {
        Self {
            max_num_seqs,
            ..self
        }
    }

    /// The same configuration with another token budget per step.
    pub fn with_max_num_batched_tokens(self, max_num_batched_tokens: usize) -> Self {
        Self {
            max_num_batched_tokens,
            ..self
        }
    }

    /// The same configuration with another maximum sequence length.
    pub fn with_max_model_len(self, max_model_len: usize) -> Self {
        Self {
            max_model_len,
            ..self
        }
    }

    /// The same configuration with chunked prefill on or off.
    pub fn with_chunked_prefill(self, chunked_prefill: bool) -> Self {
        Self {
            chunked_prefill,
            ..self
        }
    }

    /// The same configuration with another preemption mode.
    pub fn with_preemption_mode(self, preemption_mode: PreemptionMode) -> Self {
        Self {
            preemption_mode,
            ..self
        }
    }

    /// Longest prompt a new request may carry: `max_model_len`, and with chunked prefill off
    /// also the token budget (a whole prompt must fit one step), as in vLLM.
    pub fn prompt_limit(&self) -> usize {
        if self.chunked_prefill {
            self.max_model_len
        } else {
            self.max_model_len.min(self.max_num_batched_tokens)
        }
    }

    /// Checks that every limit is at least 1.
    pub fn validate(&self) -> Result<(), SchedulerError> {
        if self.max_num_seqs == 0 {
            return Err(SchedulerError::InvalidConfig(
                "max_num_seqs must be at least 1",
            ));
        }
        if self.max_num_batched_tokens == 0 {
            return Err(SchedulerError::InvalidConfig(
                "max_num_batched_tokens must be at least 1",
            ));
        }
        if self.max_model_len == 0 {
            return Err(SchedulerError::InvalidConfig(
                "max_model_len must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_limit_follows_chunking() {
        let config = SchedulerConfig::default()
            .with_max_model_len(100)
            .with_max_num_batched_tokens(60);
        assert_eq!(config.prompt_limit(), 60);
        assert_eq!(config.with_chunked_prefill(true).prompt_limit(), 100);
    }

    #[test]
    fn validation_rejects_zero_limits() {
        assert!(SchedulerConfig::default().validate().is_ok());
        for config in [
            SchedulerConfig::default().with_max_num_seqs(0),
            SchedulerConfig::default().with_max_num_batched_tokens(0),
            SchedulerConfig::default().with_max_model_len(0),
        ] {
            assert!(matches!(
                config.validate(),
                Err(SchedulerError::InvalidConfig(_))
            ));
        }
    }
}
