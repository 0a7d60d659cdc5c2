//! The binary: parse the command line, set up logging, load the config, run. The only place
//! that maps failures to exit codes: 0 ok, 1 runtime failure, 2 bad usage or invalid config.

use std::path::Path;
use std::process::ExitCode;

use canary_proxy::app::App;
use canary_proxy::cli::{Cli, Command, LogFormat};
use canary_proxy::config::Config;
use clap::Parser;
use tracing_subscriber::EnvFilter;

const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.log_format);
    let env = |k: &str| std::env::var(k).ok();
    match cli.command {
        Some(Command::Check(a)) => match Config::load(&a.config, &env) {
            Ok(c) => {
                print!("{}", c.render_masked());
                eprintln!("{}: valid", a.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => config_failed(&e),
        },
        Some(Command::Run(a)) => run(&a.config),
        None => {
            match cli.config {
                Some(path) => run(&path),
                None => {
                    eprintln!("error: a config file is needed: canary-proxy run --config FILE (see --help)");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
    }
}

fn config_failed(e: &canary_proxy::config::ConfigError) -> ExitCode {
    eprintln!("error: invalid config: {e}");
    ExitCode::from(EXIT_USAGE)
}

fn run(path: &Path) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let config = match Config::load(path, &env) {
        Ok(c) => c,
        Err(e) => return config_failed(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(async {
        let app = match App::bind(config, Some(path.to_path_buf())).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        app.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
