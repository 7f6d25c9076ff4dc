//! From command-line flags to a running engine thread and the HTTP state: load the model, size
//! the KV cache from a memory budget (refusing to start when `max_model_len` cannot fit), build
//! the scheduler, spawn the engine.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use attention_kernels::{Cpu, KvCachePools, KvCacheSpec, KvDtype};
use candle_core::{DType, Device};
use kv_block::{BlockManagerConfig, PagedBlockManager, PrefixCaching};
use models::{CausalLm, LlamaShape, LoadOptions, ModelTokenizer};
use sampling::ModelContext;
use scheduler::{Fcfs, Policy, PreemptionMode, Priority, Scheduler, SchedulerConfig};

use crate::api::{AppState, unix_now};
use crate::chat::ChatTemplate;
use crate::cli::{Args, DemoSizeArg, DtypeArg, PreemptionModeArg, SchedulingPolicyArg};
use crate::engine::core::{Engine, EngineParts};
use crate::engine::{EngineHandle, EngineStatus};
use crate::metrics::Metrics;

/// Name of the built-in 95 M-parameter benchmark model.
const BENCH_MODEL_NAME: &str = "vellum-demo-95m (random weights, output is not meaningful)";

/// A started engine and the HTTP state that talks to it.
pub struct Started {
    /// Shared state of the HTTP handlers.
    pub state: Arc<AppState>,
    /// The engine thread; it returns after [`EngineHandle::shutdown`].
    pub engine_thread: JoinHandle<()>,
}

/// Loads the model, sizes the caches and starts the engine thread. Every failure is a message
/// that says what went wrong and how to fix it.
pub fn start(args: &Args) -> Result<Started, String> {
    args.validate()?;
    if let Some(threads) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|error| format!("--threads {threads}: {error}"))?;
    }
    let dtype = resolve_dtype(args.dtype, DType::F32);
    let (model, tokenizer, root) = load(args.model.as_deref(), args.demo_size, dtype)?;
    let spec = model.spec().clone();
    let served_model_name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| match &args.model {
            Some(dir) => dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(root.clone()),
            None => "vellum-demo".to_string(),
        });
    let max_model_len = args.max_model_len.unwrap_or(spec.max_position_embeddings);
    if max_model_len > spec.max_position_embeddings {
        return Err(format!(
            "--max-model-len {max_model_len} is longer than the model's {} positions; lower it.",
            spec.max_position_embeddings
        ));
    }

    let cache_dtype = resolve_dtype(args.kv_cache_dtype, spec.dtype);
    let kv_dtype = KvDtype::from_candle(cache_dtype)
        .ok_or_else(|| format!("the KV cache cannot hold {cache_dtype:?}"))?;
    let cache_spec = KvCacheSpec::new(
        spec.num_layers,
        spec.num_kv_heads,
        spec.head_dim,
        args.block_size,
        kv_dtype,
    )
    .map_err(|error| error.to_string())?;
    let budget = match args.kv_cache_memory {
        Some(bytes) => bytes.as_u64() as usize,
        None => (available_memory()? as f64 * args.kv_cache_fraction) as usize,
    };
    let swap_budget = args.swap_space_bytes();
    let bytes_per_block = cache_spec.bytes_per_block();
    let device_blocks = cache_spec.blocks_for_budget(budget);
    let needed_blocks = max_model_len.div_ceil(args.block_size);
    if device_blocks < needed_blocks {
        return Err(format!(
            "The KV cache ({} blocks of {} tokens, {}) cannot hold one sequence of --max-model-len \
             {max_model_len} tokens ({needed_blocks} blocks). Raise --kv-cache-memory to at least \
             {} or lower --max-model-len to at most {}.",
            device_blocks,
            args.block_size,
            gib(device_blocks * bytes_per_block),
            gib(needed_blocks * bytes_per_block),
            device_blocks * args.block_size,
        ));
    }
    let pools = KvCachePools::from_budgets(cache_spec, budget, swap_budget)
        .map_err(|error| format!("could not allocate the KV cache: {error}"))?;
    let cpu_blocks = pools.cpu_swap.num_blocks();
    tracing::info!(
        "KV cache ({cache_dtype:?}): {device_blocks} blocks × {} tokens = {} tokens, {}; CPU swap: {cpu_blocks} blocks, {}",
        args.block_size,
        device_blocks * args.block_size,
        gib(device_blocks * bytes_per_block),
        gib(cpu_blocks * bytes_per_block),
    );

    let caching = if args.enable_prefix_caching {
        PrefixCaching::Enabled
    } else {
        PrefixCaching::Disabled
    };
    let block_manager = PagedBlockManager::new(
        BlockManagerConfig::new(device_blocks, cpu_blocks).with_block_size(args.block_size),
        caching,
    )
    .map_err(|error| error.to_string())?;
    let max_num_batched_tokens =
        args.max_num_batched_tokens
            .unwrap_or(if args.enable_chunked_prefill {
                2048
            } else {
                max_model_len.max(2048)
            });
    let preemption_mode = match args.preemption_mode {
        PreemptionModeArg::Swap => PreemptionMode::Swap,
        PreemptionModeArg::Recompute => PreemptionMode::Recompute,
        PreemptionModeArg::Auto => PreemptionMode::Auto,
    };
    let scheduler_config = SchedulerConfig::default()
        .with_max_num_seqs(args.max_num_seqs)
        .with_max_num_batched_tokens(max_num_batched_tokens)
        .with_max_model_len(max_model_len)
        .with_chunked_prefill(args.enable_chunked_prefill)
        .with_preemption_mode(preemption_mode);
    let policy: Box<dyn Policy> = match args.scheduling_policy {
        SchedulingPolicyArg::Fcfs => Box::new(Fcfs),
        SchedulingPolicyArg::Priority => Box::new(Priority),
    };
    let scheduler = Scheduler::new(scheduler_config, block_manager, policy)
        .map_err(|error| error.to_string())?;

    let chat_template = chat_template(&tokenizer);
    let tokenizer = Arc::new(tokenizer);
    let model_context = Arc::new(ModelContext {
        tokenizer: Arc::new(tokenizer.tokenizer.clone()),
        eos_token_ids: spec.eos_token_ids.clone(),
        max_model_len,
        vocab_size: spec.vocab_size,
    });
    let metrics = Arc::new(Metrics::new(&served_model_name));
    let status = Arc::new(EngineStatus::default());
    let (commands, receiver) = mpsc::channel();
    let engine = Engine::new(EngineParts {
        scheduler,
        model,
        backend: Box::new(Cpu::new()),
        pools,
        model_context,
        metrics: metrics.clone(),
        status: status.clone(),
        log_interval: Duration::from_secs_f64(args.log_interval),
    });
    status
        .alive
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let engine_thread = std::thread::Builder::new()
        .name("vellum-engine".into())
        .spawn(move || engine.run(receiver))
        .map_err(|error| format!("could not start the engine thread: {error}"))?;
    let state = Arc::new(AppState {
        engine: EngineHandle::new(commands, status),
        tokenizer,
        chat_template,
        served_model_name,
        model_root: root,
        max_model_len,
        vocab_size: spec.vocab_size,
        api_key: args.api_key.clone(),
        max_waiting_requests: args.max_waiting_requests,
        max_parallel_seqs: args.max_num_seqs.min(max_num_batched_tokens),
        max_logprobs: args.max_logprobs,
        metrics,
        created: unix_now(),
    });
    Ok(Started {
        state,
        engine_thread,
    })
}

/// The dtype `arg` names, `auto` being `auto`.
fn resolve_dtype(arg: DtypeArg, auto: DType) -> DType {
    match arg {
        DtypeArg::Auto => auto,
        DtypeArg::Float32 => DType::F32,
        DtypeArg::Float16 => DType::F16,
        DtypeArg::Bfloat16 => DType::BF16,
    }
}

/// The model, its tokenizer and where they came from.
fn load(
    dir: Option<&Path>,
    demo_size: DemoSizeArg,
    dtype: DType,
) -> Result<(Arc<dyn CausalLm>, ModelTokenizer, String), String> {
    let Some(dir) = dir else {
        let model = match demo_size {
            DemoSizeArg::Tiny => models::demo_model(dtype, &Device::Cpu),
            DemoSizeArg::Llama95m => models::random_llama(
                &LlamaShape::bench_95m(),
                models::DEMO_SEED,
                dtype,
                &Device::Cpu,
                BENCH_MODEL_NAME,
            ),
        }
        .map_err(|error| error.to_string())?;
        let name = model.spec().name.clone();
        tracing::warn!("no --model given: serving the built-in {name}");
        let tokenizer = models::demo_tokenizer().map_err(|error| error.to_string())?;
        return Ok((Arc::new(model), tokenizer, name));
    };
    let spinner = indicatif::ProgressBar::new_spinner()
        .with_message(format!("loading weights from {}", dir.display()));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let options = LoadOptions {
        dtype: Some(dtype),
        device: Device::Cpu,
    };
    let model = models::load_model(dir, &options).map_err(|error| error.to_string());
    spinner.finish_and_clear();
    let model = model?;
    let tokenizer = ModelTokenizer::from_dir(dir).map_err(|error| error.to_string())?;
    tracing::info!("loaded {} from {}", model.spec().name, dir.display());
    Ok((Arc::new(model), tokenizer, dir.display().to_string()))
}

fn chat_template(tokenizer: &ModelTokenizer) -> Option<ChatTemplate> {
    let source = tokenizer.chat_template.as_deref()?;
    let token = |special: &Option<models::SpecialToken>| {
        special
            .as_ref()
            .map(|token| token.text.clone())
            .unwrap_or_default()
    };
    match ChatTemplate::new(source, &token(&tokenizer.bos), &token(&tokenizer.eos)) {
        Ok(template) => Some(template),
        Err(error) => {
            tracing::warn!("the chat template does not compile, chat is disabled: {error}");
            None
        }
    }
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn available_memory() -> Result<usize, String> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .map_err(|error| format!("cannot read /proc/meminfo ({error}); pass --kv-cache-memory"))?;
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| "no MemAvailable in /proc/meminfo; pass --kv-cache-memory".to_string())
}

fn gib(bytes: usize) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}
