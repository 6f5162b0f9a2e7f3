//! `bitriver`: parse the config, set up logging, run the node (or a CLI command).

use bitriver_node::config::{self, LogFormat};
use bitriver_node::run::{self, Listeners, Shutdown};
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("BITRIVER_LIVE_LOG").unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() {
    let cli = config::parse_cli();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bitriver: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Some(command) = cli.command {
        init_tracing(LogFormat::Text);
        if let Err(e) = runtime.block_on(bitriver_node::cli::run(command)) {
            eprintln!("bitriver: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let config = match cli.config.validate() {
        Ok(c) => c,
        Err(e) => config::exit_with_config_error(&e),
    };
    init_tracing(config.log_format);
    raise_open_file_limit();
    let result = runtime.block_on(async move {
        let listeners = Listeners::bind(&config).await?;
        run::run(config, listeners, signals()).await
    });
    if let Err(e) = result {
        tracing::error!(error = format!("{e:#}"), "bitriver stopped");
        eprintln!("bitriver: {e:#}");
        std::process::exit(1);
    }
}

/// Lifts the soft open-file limit to the hard one: every viewer connection at the edge holds two
/// descriptors (see `cache::direct`), and the cache keeps large bodies in memfds. Distribution
/// defaults (a soft limit of 1,024) would cap a node at a few hundred viewers.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(soft = ?limit.maximum, "raised the open-file limit"),
            Err(error) => tracing::warn!(%error, soft = ?limit.current, "could not raise the open-file limit"),
        }
    }
}

/// SIGTERM drains; SIGINT (Ctrl-C) exits at once: acknowledged catalog writes are already durable.
async fn signals() -> Shutdown {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        unreachable!("pending never resolves");
    };
    tokio::select! {
        _ = term.recv() => {
            tracing::info!("SIGTERM: draining");
            Shutdown::Graceful
        }
        _ = int.recv() => {
            tracing::info!("SIGINT: exiting");
            std::process::exit(130);
        }
    }
}
