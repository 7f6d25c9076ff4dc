//! `vellum`: serve a model behind an OpenAI-compatible API. `--help` lists the flags.

use clap::Parser;
use server::cli::Args;

fn main() -> std::process::ExitCode {
    // candle runs its larger element-wise ops on a thread pool of its own whose idle workers
    // spin for about a millisecond, on the cores rayon's workers need for the next product or
    // attention call. One pool owns the cores: candle's ops run inline (unless the user says
    // otherwise), the products and kernels on rayon (`--threads`).
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: no other thread exists yet (the runtime starts below).
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    keep_freed_memory();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(serve()),
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// glibc hands freed blocks above its mmap threshold (128 KiB at first) back to the system, so a
/// step's activations (megabytes each) were mapped and page-faulted afresh on every step: about
/// 7 % of a 3,000-token prefill. Raise the threshold to glibc's maximum, 32 MiB, and keep up to
/// 512 MiB of freed memory for the next step instead of trimming it.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before any other thread exists; mallopt only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

async fn serve() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let started = match server::startup::start(&args) {
        Ok(started) => started,
        Err(message) => {
            tracing::error!("{message}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let address = std::net::SocketAddr::new(args.host, args.port);
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!("cannot listen on {address}: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(
        "serving {} on http://{address}",
        started.state.served_model_name
    );
    match server::serve(listener, started, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("server error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}
