//! The binary: parse the command line, set up logging, load the config, run. Exit codes: 0 ok,
//! 1 runtime failure, 2 bad usage or invalid config; the admin subcommands add their own
//! (`admin::command::exit`, and `wait`'s in `admin::client::WaitOutcome`).

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

use canary_proxy::admin::{client, command};
use canary_proxy::app::App;
use canary_proxy::cli::{AdminArgs, Cli, Command, LogFormat};
use canary_proxy::config::{Config, ConfigError};
use clap::Parser;
use http::Method;
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
    // The demo speaks for itself on stdout; its logs show only the rollback's own ERROR line.
    let quiet = matches!(
        cli.command,
        Some(Command::Demo(_))
            | Some(Command::Status(_))
            | Some(Command::Rollback(_))
            | Some(Command::Resume(_))
            | Some(Command::Reset(_))
            | Some(Command::Reload(_))
            | Some(Command::Promote(_))
            | Some(Command::Pause(_))
            | Some(Command::Continue(_))
            | Some(Command::Wait(_))
    );
    init_tracing(cli.log_format, if quiet { "error" } else { "info" });
    // The tools that only print (not the proxy, nor the demo, which serves on sockets).
    let printer = quiet && !matches!(cli.command, Some(Command::Demo(_)));
    if printer || matches!(cli.command, Some(Command::Check(_))) {
        canary_proxy::sys::default_sigpipe();
    }
    match cli.command {
        Some(Command::Check(a)) => match load(&a.config, false) {
            Ok(c) => {
                print!("{}", c.render_masked());
                eprintln!("{}: valid", a.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => config_failed(&e),
        },
        Some(Command::Run(a)) => run(&a.config),
        Some(Command::Demo(a)) => runtime_then(|| async move {
            match canary_proxy::demo::run(canary_proxy::demo::DemoOptions {
                duration: a.duration,
                keep_running: a.keep_running,
                good: a.scenario == canary_proxy::cli::Scenario::Good,
            })
            .await
            {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(EXIT_RUNTIME),
                Err(e) => {
                    eprintln!("error: the demo failed: {e}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }),
        Some(Command::Status(a)) => admin(a, Method::GET, "/canary/status", None),
        Some(Command::Rollback(a)) => {
            let body = a.reason.map(|r| serde_json::json!({ "reason": r }));
            admin(a.admin, Method::POST, "/canary/rollback", body)
        }
        Some(Command::Resume(a)) => admin(a, Method::POST, "/canary/resume", None),
        Some(Command::Reset(a)) => admin(a, Method::POST, "/canary/metrics/reset", None),
        Some(Command::Reload(a)) => admin(a, Method::POST, "/canary/reload", None),
        Some(Command::Promote(a)) => {
            let body = serde_json::json!({ "force": a.force, "reason": a.reason });
            admin(a.admin, Method::POST, "/canary/promote", Some(body))
        }
        Some(Command::Pause(a)) => {
            let body = a.reason.map(|r| serde_json::json!({ "reason": r }));
            admin(a.admin, Method::POST, "/canary/pause", body)
        }
        Some(Command::Continue(a)) => admin(a, Method::POST, "/canary/continue", None),
        Some(Command::Wait(a)) => match target(&a.admin) {
            Ok(t) => runtime_then(|| async move {
                let outcome = client::wait(&t.admin, t.token.as_deref(), a.timeout, a.admin.json);
                ExitCode::from(outcome.await.exit_code())
            }),
            Err(code) => code,
        },
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

fn runtime_then<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f()),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Where an admin subcommand calls, from its flags, the environment and `--config`.
fn target(a: &AdminArgs) -> Result<command::Target, ExitCode> {
    command::target(
        a.admin.as_deref(),
        a.token.as_deref(),
        a.token_file.as_deref(),
        a.config.as_deref(),
    )
    .map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// One admin call: a summary (or the JSON) on stdout; a refusal on stderr, with an exit code
/// per kind of refusal (`admin::command::exit`).
fn admin(
    a: AdminArgs,
    method: Method,
    path: &'static str,
    body: Option<serde_json::Value>,
) -> ExitCode {
    let t = match target(&a) {
        Ok(t) => t,
        Err(code) => return code,
    };
    runtime_then(
        || async move { ExitCode::from(command::run(&t, a.json, method, path, body).await) },
    )
}

fn config_failed(e: &ConfigError) -> ExitCode {
    eprintln!("error: invalid config: {e}");
    ExitCode::from(EXIT_USAGE)
}

/// The config, its env overrides, the state folder and the TLS files it names: all a startup
/// error (exit 2). `starting`: the proxy will run (the state folder is created if need be).
fn load(path: &Path, starting: bool) -> Result<Config, ConfigError> {
    let env = |k: &str| std::env::var(k).ok();
    for (var, closest) in canary_proxy::config::unknown_vars(std::env::vars().map(|(k, _)| k)) {
        // On stderr for `check`, in the log for `run`: a typo is never silent.
        eprintln!(
            "warning: environment: {var} is not read by canary-proxy (did you mean {closest}?)"
        );
        tracing::warn!(variable = %var, did_you_mean = closest, "an unknown CANARY_* variable is ignored");
    }
    let config = Config::load(path, &env)?;
    let state = &config.state.path;
    canary_proxy::control::latch_file::probe(state, starting).map_err(|e| ConfigError {
        file: path.display().to_string(),
        key: "state.path".into(),
        expected: format!(
            "a file in a folder this process can write, so the rollback latch survives restarts; {} is not ({e})",
            state.display()
        ),
    })?;
    if let Some(files) = &config.proxy.tls {
        canary_proxy::server::tls::server_config(files).map_err(|e| ConfigError {
            file: path.display().to_string(),
            key: "proxy.tls".into(),
            expected: e,
        })?;
    }
    Ok(config)
}

fn run(path: &Path) -> ExitCode {
    let config = match load(path, true) {
        Ok(c) => c,
        Err(e) => return config_failed(&e),
    };
    raise_fd_limit(config.limits.max_connections);
    canary_proxy::sys::keep_heap_top();
    // This thread is the first worker and the control plane (admin, judge, reloads); the
    // other workers bring runtimes of their own (`proxy.workers`). One thread per event loop:
    // no work-stealing, no cross-thread wakeups on the request path.
    let runtime = match tokio::runtime::Builder::new_current_thread()
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
        if let Some(log) = app.access_log() {
            tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
                    return;
                };
                while usr1.recv().await.is_some() {
                    log.reopen();
                }
            });
        }
        let control = app.control();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the config");
                // A refused reload is logged by `reload`; the old config keeps serving.
                let _ = control.reload(None).await;
            }
        });
        app.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Every connection costs up to two descriptors (client and upstream): raise the soft limit
/// towards the hard one, as NGINX's worker_rlimit_nofile does, and say so when it is short.
fn raise_fd_limit(max_connections: usize) {
    let want = (max_connections as u64).saturating_mul(2) + 1024;
    let Some(open_files) = canary_proxy::sys::raise_open_files(want) else {
        return;
    };
    // A WARN only when the clients themselves may not fit; short of two sockets per client
    // (every client mid-request upstream at once) is worth knowing, not an alarm.
    let clients = (max_connections as u64) + 1024;
    if open_files < clients {
        tracing::warn!(
            open_files, needed = want,
            "the open-file limit is below limits.max_connections; accept errors will back off rather than crash (raise LimitNOFILE / ulimit -n, or lower limits.max_connections)"
        );
    } else if open_files < want {
        tracing::info!(
            open_files, needed = want,
            "the open-file limit holds limits.max_connections clients, but not each with an upstream socket at once"
        );
    }
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

fn init_tracing(format: LogFormat, default: &str) {
    // rustls warns once per handshake about a client that sends an IP as SNI (wrk and many
    // probes do); that is the client's business, not an operator's. A RUST_LOG that names
    // rustls decides for itself.
    let mut spec = std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_string());
    if !spec.contains("rustls") {
        spec.push_str(",rustls=error");
    }
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a person at a terminal: journald, kubectl logs and files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
