//! `SamplingParams`: vLLM's request-level decoding settings, their defaults and their validation.
//!
//! The wire form ([`SamplingParams`]) keeps vLLM's field names, types and defaults (v0.4–v0.6.2,
//! including the in-engine beam-search fields removed in v0.6.3) so a server can deserialise it
//! straight from a request body. [`SamplingParams::validate`] checks it with vLLM's exact error
//! messages and returns a [`ValidatedParams`], the only form the rest of this crate accepts.
//! Everything vLLM adjusts silently is applied the same way but reported as a [`ParamWarning`].

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use thiserror::Error;

use crate::TokenId;

/// Temperatures below this are greedy sampling (vLLM's `_SAMPLING_EPS`).
pub const SAMPLING_EPS: f64 = 1e-5;

/// Temperatures in `(0, MIN_TEMPERATURE)` are raised to it (vLLM v0.6 `_MAX_TEMP`), with a warning.
pub const MIN_TEMPERATURE: f64 = 1e-2;

/// Bound of the OpenAI `logit_bias` values; larger magnitudes are clamped with a warning.
pub const MAX_LOGIT_BIAS: f32 = 100.0;

/// Beam search's `early_stopping`: JSON `true`, `false` or `"never"`.
///
/// Invariant: only these three values deserialise; anything else fails with vLLM's message
/// `early_stopping must be True, False, or 'never', got …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// Stop as soon as `beam_width` finished hypotheses exist.
    True,
    /// Stop when the worst kept hypothesis beats the best running beam at the current length.
    #[default]
    False,
    /// Stop only when no running beam can still beat the worst kept hypothesis at any length.
    Never,
}

impl Serialize for EarlyStopping {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            EarlyStopping::True => serializer.serialize_bool(true),
            EarlyStopping::False => serializer.serialize_bool(false),
            EarlyStopping::Never => serializer.serialize_str("never"),
        }
    }
}

impl<'de> Deserialize<'de> for EarlyStopping {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EarlyStoppingVisitor;
        impl Visitor<'_> for EarlyStoppingVisitor {
            type Value = EarlyStopping;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or \"never\"")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<EarlyStopping, E> {
                Ok(if v {
                    EarlyStopping::True
                } else {
                    EarlyStopping::False
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EarlyStopping, E> {
                if v == "never" {
                    Ok(EarlyStopping::Never)
                } else {
                    Err(E::custom(format!(
                        "early_stopping must be True, False, or 'never', got {v}."
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EarlyStopping, E> {
                Err(E::custom(format!(
                    "early_stopping must be True, False, or 'never', got {v}."
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EarlyStopping, E> {
                Err(E::custom(format!(
                    "early_stopping must be True, False, or 'never', got {v}."
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<EarlyStopping, E> {
                Err(E::custom(format!(
                    "early_stopping must be True, False, or 'never', got {v}."
                )))
            }
        }
        deserializer.deserialize_any(EarlyStoppingVisitor)
    }
}

/// Deserialises `stop` from a string, a list of strings or `null` (vLLM accepts all three).
fn deserialize_stop<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(deserializer)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// A request's decoding settings with vLLM's names and defaults (wire form, not yet validated).
///
/// Integer fields are signed so that out-of-range values reach [`SamplingParams::validate`] and get
/// vLLM's message instead of a deserialisation error. Float fields are `f64` like Python's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Number of sequences returned (≥ 1).
    pub n: i64,
    /// Number of sequences generated, of which the `n` best are returned; `None` means `n`.
    pub best_of: Option<i64>,
    /// Penalty subtracted once from every token already in the output, in `[-2, 2]`.
    pub presence_penalty: f64,
    /// Penalty subtracted per occurrence of a token in the output, in `[-2, 2]`.
    pub frequency_penalty: f64,
    /// Multiplicative penalty on tokens of the prompt or the output, in `(0, 2]`.
    pub repetition_penalty: f64,
    /// Softmax temperature, ≥ 0; below `1e-5` means greedy.
    pub temperature: f64,
    /// Nucleus sampling mass, in `(0, 1]`.
    pub top_p: f64,
    /// Keep the `top_k` most likely tokens; `-1` disables.
    pub top_k: i64,
    /// Drop tokens with probability below `min_p` × the top probability, in `[0, 1]`.
    pub min_p: f64,
    /// Per-request random seed; `-1` means none.
    pub seed: Option<i64>,
    /// Stop strings (a single string or a list in JSON).
    #[serde(deserialize_with = "deserialize_stop")]
    pub stop: Vec<String>,
    /// Token ids that stop the sequence (the id becomes the stop reason).
    pub stop_token_ids: Vec<TokenId>,
    /// Keep the matched stop string (or the stop token's text) in the output text.
    pub include_stop_str_in_output: bool,
    /// Keep generating after EOS.
    pub ignore_eos: bool,
    /// Maximum number of generated tokens per sequence; `None` means up to `max_model_len`.
    pub max_tokens: Option<i64>,
    /// EOS and stop token ids are masked until this many tokens were generated.
    pub min_tokens: i64,
    /// Number of top log-probabilities returned per generated token (plus the sampled one).
    pub logprobs: Option<i64>,
    /// Number of top log-probabilities returned per prompt token.
    pub prompt_logprobs: Option<i64>,
    /// Additive bias per token id, applied to the raw logits; clamped to `[-100, 100]`.
    pub logit_bias: HashMap<TokenId, f32>,
    /// Drop special tokens from the detokenized text.
    pub skip_special_tokens: bool,
    /// In-engine beam search (vLLM ≤ 0.6.2) with `best_of` as the beam width.
    pub use_beam_search: bool,
    /// Beam score exponent: `cumulative_logprob / length^length_penalty`.
    pub length_penalty: f64,
    /// Beam search stopping rule.
    pub early_stopping: EarlyStopping,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            n: 1,
            best_of: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            temperature: 1.0,
            top_p: 1.0,
            top_k: -1,
            min_p: 0.0,
            seed: None,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            include_stop_str_in_output: false,
            ignore_eos: false,
            max_tokens: Some(16),
            min_tokens: 0,
            logprobs: None,
            prompt_logprobs: None,
            logit_bias: HashMap::new(),
            skip_special_tokens: true,
            use_beam_search: false,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::False,
        }
    }
}

/// A rejected `SamplingParams`; the `Display` text is vLLM's `ValueError` message (HTTP 400).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ParamsError {
    /// `n < 1`.
    #[error("n must be at least 1, got {0}.")]
    NTooSmall(i64),
    /// `best_of < n`.
    #[error("best_of must be greater than or equal to n, got n={n} and best_of={best_of}.")]
    BestOfBelowN {
        /// Requested `n`.
        n: i64,
        /// Requested `best_of`.
        best_of: i64,
    },
    /// `presence_penalty` outside `[-2, 2]`.
    #[error("presence_penalty must be in [-2, 2], got {0:?}.")]
    PresencePenalty(f64),
    /// `frequency_penalty` outside `[-2, 2]`.
    #[error("frequency_penalty must be in [-2, 2], got {0:?}.")]
    FrequencyPenalty(f64),
    /// `repetition_penalty` outside `(0, 2]`.
    #[error("repetition_penalty must be in (0, 2], got {0:?}.")]
    RepetitionPenalty(f64),
    /// Negative, NaN or infinite temperature.
    #[error("temperature must be non-negative, got {0:?}.")]
    Temperature(f64),
    /// `top_p` outside `(0, 1]`.
    #[error("top_p must be in (0, 1], got {0:?}.")]
    TopP(f64),
    /// `top_k` is 0 or below -1.
    #[error("top_k must be -1 (disable), or at least 1, got {0}.")]
    TopK(i64),
    /// `min_p` outside `[0, 1]`.
    #[error("min_p must be in [0, 1], got {0:?}.")]
    MinP(f64),
    /// `max_tokens < 1`.
    #[error("max_tokens must be at least 1, got {0}.")]
    MaxTokens(i64),
    /// `min_tokens < 0`.
    #[error("min_tokens must be greater than or equal to 0, got {0}.")]
    MinTokensNegative(i64),
    /// `min_tokens > max_tokens`.
    #[error("min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.")]
    MinTokensAboveMax {
        /// Requested `min_tokens`.
        min_tokens: i64,
        /// Requested `max_tokens`.
        max_tokens: i64,
    },
    /// Negative `logprobs`.
    #[error("logprobs must be non-negative, got {0}.")]
    Logprobs(i64),
    /// Negative `prompt_logprobs`.
    #[error("prompt_logprobs must be non-negative, got {0}.")]
    PromptLogprobs(i64),
    /// An empty stop string.
    #[error("stop cannot contain an empty string.")]
    EmptyStop,
    /// A NaN or infinite `logit_bias` value (not a vLLM check: JSON cannot carry these).
    #[error("logit_bias for token {token} must be a finite number, got {bias:?}.")]
    LogitBias {
        /// The biased token.
        token: TokenId,
        /// The rejected bias.
        bias: f32,
    },
    /// Greedy sampling with `best_of > 1` (vLLM's message, missing space included).
    #[error("best_of must be 1 when using greedy sampling.Got {0}.")]
    GreedyBestOf(i64),
    /// Beam search with a beam width of 1.
    #[error("best_of must be greater than 1 when using beam search. Got {0}.")]
    BeamWidth(i64),
    /// Beam search with a non-zero temperature.
    #[error("temperature must be 0 when using beam search.")]
    BeamTemperature,
    /// Beam search with `top_p < 1`.
    #[error("top_p must be 1 when using beam search.")]
    BeamTopP,
    /// Beam search with top-k enabled.
    #[error("top_k must be -1 when using beam search.")]
    BeamTopK,
    /// Beam search with a NaN or infinite `length_penalty` (not a vLLM check).
    #[error("length_penalty must be a finite number, got {0:?}.")]
    LengthPenaltyNotFinite(f64),
    /// `early_stopping` set without beam search.
    #[error("early_stopping is not effective and must be False when not using beam search.")]
    EarlyStoppingWithoutBeam,
    /// `length_penalty` set without beam search.
    #[error(
        "length_penalty is not effective and must be the default value of 1.0 when not using beam search."
    )]
    LengthPenaltyWithoutBeam,
}

/// An adjustment validation made to the request, which the server should log or surface.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamWarning {
    /// A temperature in `(0, 0.01)` was raised to `0.01` (vLLM v0.6 does this to avoid inf/NaN).
    TemperatureRaised {
        /// The requested temperature.
        requested: f64,
        /// The temperature used.
        used: f64,
    },
    /// Greedy sampling ignores this truncation setting; it was reset to its neutral value.
    IgnoredUnderGreedy {
        /// `top_p`, `top_k` or `min_p`.
        field: &'static str,
        /// The requested value.
        requested: f64,
    },
    /// A logit bias outside `[-100, 100]` was clamped (OpenAI's range).
    LogitBiasClamped {
        /// The biased token.
        token: TokenId,
        /// The requested bias.
        requested: f32,
        /// The bias used.
        used: f32,
    },
}

impl fmt::Display for ParamWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamWarning::TemperatureRaised { requested, used } => write!(
                f,
                "temperature {requested:?} is less than {used:?}, which may cause numerical errors nan or inf in tensors. We have maxed it out to {used:?}."
            ),
            ParamWarning::IgnoredUnderGreedy { field, requested } => write!(
                f,
                "{field}={requested:?} has no effect with greedy sampling (temperature < {SAMPLING_EPS:?}) and was reset."
            ),
            ParamWarning::LogitBiasClamped {
                token,
                requested,
                used,
            } => write!(
                f,
                "logit_bias for token {token} was clamped from {requested:?} to {used:?}."
            ),
        }
    }
}

/// How the next tokens of a group are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplingType {
    /// Argmax of the processed logits (temperature < `1e-5`).
    Greedy,
    /// Random draw from an RNG seeded by the engine.
    Random,
    /// Random draw from the request's own RNG seeded by `seed`.
    RandomSeeded,
    /// In-engine beam search with `best_of` beams.
    Beam,
}

/// Parameters that passed [`SamplingParams::validate`].
///
/// Invariants: every range check of vLLM holds; `best_of ≥ n ≥ 1`; greedy requests have neutral
/// `top_p`/`top_k`/`min_p` and `best_of == 1`; beam requests have `best_of ≥ 2`, temperature 0,
/// no truncation and a finite length penalty; a positive temperature is at least `0.01`; logit
/// biases are finite and within `[-100, 100]`; `seed == -1` was turned into `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedParams {
    params: SamplingParams,
}

impl std::ops::Deref for ValidatedParams {
    type Target = SamplingParams;
    fn deref(&self) -> &SamplingParams {
        &self.params
    }
}

/// Converts a validated non-negative count to `usize` (saturating on exotic targets).
fn count(v: i64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl ValidatedParams {
    /// Number of sequences returned.
    pub fn n(&self) -> usize {
        count(self.params.n)
    }

    /// Number of sequences generated (the beam width under beam search); `≥ n()`.
    pub fn best_of(&self) -> usize {
        count(self.params.best_of.unwrap_or(self.params.n))
    }

    /// `Some(k)` when top-k truncation is enabled.
    pub fn top_k(&self) -> Option<usize> {
        (self.params.top_k > 0).then(|| count(self.params.top_k))
    }

    /// The generation limit, `None` when only `max_model_len` bounds it.
    pub fn max_tokens(&self) -> Option<usize> {
        self.params.max_tokens.map(count)
    }

    /// EOS and stop token ids are masked until this many tokens exist.
    pub fn min_tokens(&self) -> usize {
        count(self.params.min_tokens)
    }

    /// Number of top logprobs requested per generated token.
    pub fn logprobs(&self) -> Option<usize> {
        self.params.logprobs.map(count)
    }

    /// Number of top logprobs requested per prompt token.
    pub fn prompt_logprobs(&self) -> Option<usize> {
        self.params.prompt_logprobs.map(count)
    }

    /// The seed of the request's own RNG, if any.
    pub fn seed(&self) -> Option<u64> {
        self.params.seed.map(|s| s as u64)
    }

    /// Which sampler the request uses.
    pub fn sampling_type(&self) -> SamplingType {
        if self.params.use_beam_search {
            SamplingType::Beam
        } else if self.params.temperature < SAMPLING_EPS {
            SamplingType::Greedy
        } else if self.params.seed.is_some() {
            SamplingType::RandomSeeded
        } else {
            SamplingType::Random
        }
    }

    /// The wire form after validation's adjustments.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }
}

/// `true` when `v` lies in `[lo, hi]` (false for NaN).
fn within(v: f64, lo: f64, hi: f64) -> bool {
    (lo..=hi).contains(&v)
}

/// `true` when `v` lies in `(lo, hi]` (false for NaN).
fn within_left_open(v: f64, lo: f64, hi: f64) -> bool {
    v > lo && v <= hi
}

impl SamplingParams {
    /// Validates the parameters in vLLM's order with vLLM's messages, applies vLLM's adjustments
    /// and reports each of them as a [`ParamWarning`].
    ///
    /// Vocabulary-dependent checks (logit-bias ids) happen at sampling time, where the vocabulary
    /// size is known.
    pub fn validate(mut self) -> Result<(ValidatedParams, Vec<ParamWarning>), ParamsError> {
        let mut warnings = Vec::new();
        if self.seed == Some(-1) {
            self.seed = None;
        }
        if self.temperature > 0.0 && self.temperature < MIN_TEMPERATURE {
            warnings.push(ParamWarning::TemperatureRaised {
                requested: self.temperature,
                used: MIN_TEMPERATURE,
            });
            self.temperature = MIN_TEMPERATURE;
        }
        self.verify_ranges()?;
        self.clamp_logit_bias(&mut warnings)?;
        if self.use_beam_search {
            self.verify_beam_search()?;
        } else {
            self.verify_non_beam_search()?;
            if self.temperature < SAMPLING_EPS {
                self.reset_truncation_for_greedy(&mut warnings);
                let best_of = self.best_of.unwrap_or(self.n);
                if best_of > 1 {
                    return Err(ParamsError::GreedyBestOf(best_of));
                }
            }
        }
        Ok((ValidatedParams { params: self }, warnings))
    }

    fn verify_ranges(&self) -> Result<(), ParamsError> {
        if self.n < 1 {
            return Err(ParamsError::NTooSmall(self.n));
        }
        if let Some(best_of) = self.best_of
            && best_of < self.n
        {
            return Err(ParamsError::BestOfBelowN { n: self.n, best_of });
        }
        if !within(self.presence_penalty, -2.0, 2.0) {
            return Err(ParamsError::PresencePenalty(self.presence_penalty));
        }
        if !within(self.frequency_penalty, -2.0, 2.0) {
            return Err(ParamsError::FrequencyPenalty(self.frequency_penalty));
        }
        if !within_left_open(self.repetition_penalty, 0.0, 2.0) {
            return Err(ParamsError::RepetitionPenalty(self.repetition_penalty));
        }
        if !within(self.temperature, 0.0, f64::MAX) {
            return Err(ParamsError::Temperature(self.temperature));
        }
        if !within_left_open(self.top_p, 0.0, 1.0) {
            return Err(ParamsError::TopP(self.top_p));
        }
        if self.top_k < -1 || self.top_k == 0 {
            return Err(ParamsError::TopK(self.top_k));
        }
        if !within(self.min_p, 0.0, 1.0) {
            return Err(ParamsError::MinP(self.min_p));
        }
        if let Some(max_tokens) = self.max_tokens
            && max_tokens < 1
        {
            return Err(ParamsError::MaxTokens(max_tokens));
        }
        if self.min_tokens < 0 {
            return Err(ParamsError::MinTokensNegative(self.min_tokens));
        }
        if let Some(max_tokens) = self.max_tokens
            && self.min_tokens > max_tokens
        {
            return Err(ParamsError::MinTokensAboveMax {
                min_tokens: self.min_tokens,
                max_tokens,
            });
        }
        if let Some(k) = self.logprobs
            && k < 0
        {
            return Err(ParamsError::Logprobs(k));
        }
        if let Some(k) = self.prompt_logprobs
            && k < 0
        {
            return Err(ParamsError::PromptLogprobs(k));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(ParamsError::EmptyStop);
        }
        Ok(())
    }

    fn clamp_logit_bias(&mut self, warnings: &mut Vec<ParamWarning>) -> Result<(), ParamsError> {
        let mut tokens: Vec<TokenId> = self.logit_bias.keys().copied().collect();
        tokens.sort_unstable();
        for token in tokens {
            let bias = self.logit_bias[&token];
            if !bias.is_finite() {
                return Err(ParamsError::LogitBias { token, bias });
            }
            let used = bias.clamp(-MAX_LOGIT_BIAS, MAX_LOGIT_BIAS);
            if used != bias {
                warnings.push(ParamWarning::LogitBiasClamped {
                    token,
                    requested: bias,
                    used,
                });
                self.logit_bias.insert(token, used);
            }
        }
        Ok(())
    }

    fn verify_beam_search(&self) -> Result<(), ParamsError> {
        let best_of = self.best_of.unwrap_or(self.n);
        if best_of == 1 {
            return Err(ParamsError::BeamWidth(best_of));
        }
        if self.temperature > SAMPLING_EPS {
            return Err(ParamsError::BeamTemperature);
        }
        if self.top_p < 1.0 - SAMPLING_EPS {
            return Err(ParamsError::BeamTopP);
        }
        if self.top_k != -1 {
            return Err(ParamsError::BeamTopK);
        }
        if !self.length_penalty.is_finite() {
            return Err(ParamsError::LengthPenaltyNotFinite(self.length_penalty));
        }
        Ok(())
    }

    fn verify_non_beam_search(&self) -> Result<(), ParamsError> {
        if self.early_stopping != EarlyStopping::False {
            return Err(ParamsError::EarlyStoppingWithoutBeam);
        }
        if !within(self.length_penalty, 1.0 - SAMPLING_EPS, 1.0 + SAMPLING_EPS) {
            return Err(ParamsError::LengthPenaltyWithoutBeam);
        }
        Ok(())
    }

    fn reset_truncation_for_greedy(&mut self, warnings: &mut Vec<ParamWarning>) {
        if self.top_p != 1.0 {
            warnings.push(ParamWarning::IgnoredUnderGreedy {
                field: "top_p",
                requested: self.top_p,
            });
            self.top_p = 1.0;
        }
        if self.top_k != -1 {
            warnings.push(ParamWarning::IgnoredUnderGreedy {
                field: "top_k",
                requested: self.top_k as f64,
            });
            self.top_k = -1;
        }
        if self.min_p != 0.0 {
            warnings.push(ParamWarning::IgnoredUnderGreedy {
                field: "min_p",
                requested: self.min_p,
            });
            self.min_p = 0.0;
        }
    }
}
