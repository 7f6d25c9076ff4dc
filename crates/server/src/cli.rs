//! Command-line flags, with vLLM's names where vLLM has the flag.

use std::net::IpAddr;
use std::path::PathBuf;

use bytesize::ByteSize;
use clap::{Parser, ValueEnum};

/// `cargo run --release -p server -- [FLAGS]`.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "vellum",
    version,
    about = "vellum: a PagedAttention LLM server with an OpenAI-compatible API"
)]
pub struct Args {
    /// Hugging Face model directory (config.json, safetensors, tokenizer.json). Without it the
    /// built-in demo model (random weights, output is not meaningful text) is served.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Size of the built-in random model served without `--model`: `tiny` (the demo) or `95m`
    /// (a Llama of hidden 768, 12 layers, 12 heads, intermediate 2048, for benchmarks).
    #[arg(long, value_enum, default_value = "tiny")]
    pub demo_size: DemoSizeArg,
    /// Name clients use in the `model` field; defaults to the directory's name.
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Weight and activation dtype; `auto` is float32 on the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    pub dtype: DtypeArg,
    /// Element type of the KV cache; `auto` follows `--dtype`. A 2-byte cache holds twice the
    /// tokens in the same memory and halves the bytes decode attention reads, at the cost of
    /// rounding K and V.
    #[arg(long, value_enum, default_value = "auto")]
    pub kv_cache_dtype: DtypeArg,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Memory for the KV cache (e.g. `2GiB`); default: `--kv-cache-fraction` of available memory.
    #[arg(long)]
    pub kv_cache_memory: Option<ByteSize>,
    /// Fraction of available memory for the KV cache when `--kv-cache-memory` is absent.
    #[arg(long, default_value_t = 0.1)]
    pub kv_cache_fraction: f64,
    /// CPU swap space for preempted sequences, in GiB.
    #[arg(long, default_value_t = 4.0)]
    pub swap_space: f64,
    /// Most sequences running in one step.
    #[arg(long, default_value_t = 256)]
    pub max_num_seqs: usize,
    /// Most tokens in one step; default 2048 with chunked prefill, else `max(max_model_len, 2048)`.
    #[arg(long)]
    pub max_num_batched_tokens: Option<usize>,
    /// Longest prompt + output; default: the model's maximum positions.
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// Reuse the KV of identical prompt prefixes across requests.
    #[arg(long, num_args = 0..=1, default_value_t = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_prefix_caching: bool,
    /// Mix prefill chunks and decode tokens in one step.
    #[arg(long, num_args = 0..=1, default_value_t = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_chunked_prefill: bool,
    /// How preempted groups come back: swap, recompute, or auto (single sequences recompute,
    /// multi-sequence groups swap).
    #[arg(long, value_enum, default_value = "auto")]
    pub preemption_mode: PreemptionModeArg,
    /// Order of the waiting queue.
    #[arg(long, value_enum, default_value = "fcfs")]
    pub scheduling_policy: SchedulingPolicyArg,
    /// Require `Authorization: Bearer <key>` on every `/v1` request.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Worker threads for the model and kernels; default: every core.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Most top logprobs a request may ask for per token (`logprobs`, `top_logprobs`,
    /// `prompt_logprobs`); more is a 400.
    #[arg(long, default_value_t = 20)]
    pub max_logprobs: usize,
    /// Waiting requests above which new ones are answered 503.
    #[arg(long, default_value_t = 1024)]
    pub max_waiting_requests: usize,
    /// Seconds between engine statistics log lines.
    #[arg(long, default_value_t = 5.0)]
    pub log_interval: f64,
}

/// `--dtype` and `--kv-cache-dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// `--dtype`: float32 on the CPU; `--kv-cache-dtype`: the model's dtype.
    Auto,
    /// 32-bit floats.
    Float32,
    /// IEEE half precision.
    Float16,
    /// bfloat16.
    Bfloat16,
}

/// `--demo-size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DemoSizeArg {
    /// The tiny demo model (2 layers, hidden 64).
    Tiny,
    /// A ~95 M-parameter random Llama.
    #[value(name = "95m")]
    Llama95m,
}

/// `--preemption-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PreemptionModeArg {
    /// Move the group's blocks to the CPU pool.
    Swap,
    /// Free the blocks and recompute later.
    Recompute,
    /// vLLM's rule: single-sequence groups recompute, others swap.
    Auto,
}

/// `--scheduling-policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SchedulingPolicyArg {
    /// First come, first served; the latest arrival is preempted first.
    Fcfs,
    /// Lower `priority` value first, then arrival.
    Priority,
}

impl Args {
    /// Checks the ranges clap cannot express; the message names the flag and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.block_size == 0 || !self.block_size.is_power_of_two() || self.block_size > 256 {
            return Err(format!(
                "--block-size {} is not supported: use a power of two from 1 to 256 (default 16)",
                self.block_size
            ));
        }
        if !(self.kv_cache_fraction > 0.0 && self.kv_cache_fraction <= 0.95) {
            return Err(format!(
                "--kv-cache-fraction {} must be in (0, 0.95]",
                self.kv_cache_fraction
            ));
        }
        if !(self.swap_space >= 0.0 && self.swap_space.is_finite()) {
            return Err(format!(
                "--swap-space {} must be a non-negative number of GiB",
                self.swap_space
            ));
        }
        if self.max_num_seqs == 0 {
            return Err("--max-num-seqs must be at least 1".into());
        }
        if self.max_num_batched_tokens == Some(0) {
            return Err("--max-num-batched-tokens must be at least 1".into());
        }
        if self.max_model_len == Some(0) {
            return Err("--max-model-len must be at least 1".into());
        }
        if self.threads == Some(0) {
            return Err("--threads must be at least 1".into());
        }
        if !(self.log_interval > 0.0 && self.log_interval.is_finite()) {
            return Err("--log-interval must be a positive number of seconds".into());
        }
        Ok(())
    }

    /// The swap space in bytes.
    pub fn swap_space_bytes(&self) -> usize {
        (self.swap_space * (1u64 << 30) as f64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> Result<Args, String> {
        let args = Args::try_parse_from(std::iter::once("vellum").chain(flags.iter().copied()))
            .map_err(|error| error.to_string())?;
        args.validate()?;
        Ok(args)
    }

    #[test]
    fn defaults_match_the_documentation() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.model, None);
        assert_eq!(args.host.to_string(), "127.0.0.1");
        assert_eq!(args.port, 8000);
        assert_eq!(args.block_size, 16);
        assert!(args.enable_prefix_caching && args.enable_chunked_prefill);
        assert_eq!(args.preemption_mode, PreemptionModeArg::Auto);
        assert_eq!(args.swap_space_bytes(), 4 << 30);
        assert_eq!(args.max_logprobs, 20);
    }

    #[test]
    fn vllm_flag_spellings_parse() {
        let args = parse(&[
            "--model",
            "/m",
            "--served-model-name",
            "m",
            "--port",
            "9000",
            "--dtype",
            "bfloat16",
            "--kv-cache-dtype",
            "float16",
            "--kv-cache-memory",
            "2GiB",
            "--swap-space",
            "0.5",
            "--max-num-seqs",
            "8",
            "--max-num-batched-tokens",
            "512",
            "--max-model-len",
            "1024",
            "--enable-prefix-caching",
            "false",
            "--enable-chunked-prefill",
            "--preemption-mode",
            "swap",
            "--scheduling-policy",
            "priority",
            "--api-key",
            "k",
            "--threads",
            "2",
        ])
        .unwrap();
        assert_eq!(args.kv_cache_memory, Some(ByteSize::gib(2)));
        assert!(!args.enable_prefix_caching);
        assert!(args.enable_chunked_prefill);
        assert_eq!(args.dtype, DtypeArg::Bfloat16);
        assert_eq!(args.kv_cache_dtype, DtypeArg::Float16);
        assert_eq!(args.swap_space_bytes(), 1 << 29);
    }

    #[test]
    fn bad_values_are_explained() {
        for (flags, needle) in [
            (&["--block-size", "12"][..], "power of two"),
            (&["--max-num-seqs", "0"], "--max-num-seqs"),
            (&["--swap-space=-1"], "--swap-space"),
            (&["--kv-cache-fraction", "2"], "--kv-cache-fraction"),
            (&["--preemption-mode", "never"], "invalid value"),
        ] {
            let error = parse(flags).unwrap_err();
            assert!(error.contains(needle), "{flags:?}: {error}");
        }
    }
}
