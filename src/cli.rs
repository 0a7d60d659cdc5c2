//! The command line, as clap types. No logic.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "canary-proxy",
    version,
    about = "A reverse proxy for canary releases"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The config file, when no subcommand is given (same as `run --config FILE`).
    #[arg(long, short)]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run(ConfigArg),
    /// Validate the config (and env overrides) and print the effective config.
    Check(ConfigArg),
    /// A self-contained showcase on loopback: a canary degrades and is rolled back.
    Demo(DemoArgs),
    /// Show the canary's state, split and last rollback.
    Status(AdminArgs),
    /// Roll the canary back now.
    Rollback(RollbackArgs),
    /// Re-arm a rolled-back canary (clears the window).
    Resume(AdminArgs),
    /// Clear the window: a new stage with a fresh judgement.
    Reset(AdminArgs),
    /// Make the proxy re-read its config file.
    Reload(AdminArgs),
    /// Advance the rollout one step now (a shut gate needs --force).
    Promote(PromoteArgs),
    /// Hold the rollout at its step (the judge still rolls back).
    Pause(RollbackArgs),
    /// Clear a pause, or give a step held by max_bake another max_bake.
    Continue(AdminArgs),
    /// Follow the rollout until it ends: exit 0 complete, 1 rolled back, 3 holding, 4 timeout.
    Wait(WaitArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The TOML config file.
    #[arg(long, short)]
    pub config: PathBuf,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("a duration such as \"30s\": {e}"))
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long the demo runs (at least 10s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Leave everything running afterwards, to explore the admin port.
    #[arg(long)]
    pub keep_running: bool,
    /// `bad`: the canary turns bad mid-ramp and is rolled back; `good`: a healthy canary is
    /// ramped through every step to complete.
    #[arg(long, value_enum, default_value_t = Scenario::Bad)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Bad,
    Good,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The admin port's URL [default: the config's admin.listen, else http://127.0.0.1:9090].
    #[arg(long, env = "CANARY_ADMIN_URL")]
    pub admin: Option<String>,
    /// The admin token, for calls that change something (visible in `ps`: prefer
    /// --token-file, CANARY_ADMIN_TOKEN or --config).
    #[arg(long, env = "CANARY_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the admin token (surrounding whitespace trimmed).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The proxy's config file: its admin address and token are used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Print the JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Why: kept in the rollback record and the audit log.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Promote although the gate is shut (the audit line says forced).
    #[arg(long)]
    pub force: bool,
    /// Why: kept in the audit log.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// How long to follow the rollout before giving up (exit 4).
    #[arg(long, default_value = "2h", value_parser = parse_duration)]
    pub timeout: Duration,
}
