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
