//! `canary-proxy demo`: the whole idea on one machine, in one process, on loopback ephemeral
//! ports. A healthy stable upstream, a canary upstream, the real proxy with a built-in config
//! that ramps the canary 10 -> 25 -> 50 -> 100 %, and a traffic generator with many user ids.
//! By default the canary turns bad mid-ramp (errors and added latency) and is rolled back;
//! with `--scenario good` it stays healthy and is ramped to `complete`. It prints live
//! progress once a second, each step and the rollback as they happen, and a summary.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::admin::report;
use crate::app::App;
use crate::config::Config;

pub const MIN_DURATION: Duration = Duration::from_secs(10);

pub struct DemoOptions {
    pub duration: Duration,
    pub keep_running: bool,
    /// A healthy canary ramped to `complete`, instead of one that turns bad mid-ramp.
    pub good: bool,
}

/// An upstream that answers "ok" after a few milliseconds; once `bad` is set, one request in
/// five fails with 503 and every answer takes 250 ms longer.
async fn upstream(name: &'static str, bad: Arc<AtomicBool>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let count = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (bad, count) = (bad.clone(), count.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let (bad, count) = (bad.clone(), count.clone());
                    async move {
                        let n = count.fetch_add(1, Relaxed);
                        let degraded = bad.load(Relaxed);
                        let wait = 2 + n % 7 + if degraded { 250 } else { 0 };
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                        let mut resp =
                            Response::new(Full::new(Bytes::from(format!("{name} ok\n"))));
                        if degraded && n % 5 == 0 {
                            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn demo_config(stable: SocketAddr, canary: SocketAddr, state: &std::path::Path) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[stable]
version = "v1.1.0"
endpoints = ["http://{stable}"]
[canary]
version = "v1.2.0-canary"
endpoints = ["http://{canary}"]
identity = ["header:x-user-id", "ip"]
[rollback]
window = "30s"
evaluate_every = "250ms"
min_requests = 100
max_error_rate = 2.0
max_latency = "200ms"
[rollout]
steps = [10, 25, 50, 100]
bake = "2s"
max_bake = "1m"
[state]
path = "{state}"
"#,
        state = state.display()
    )
}

/// Sends `rate` requests a second until `stop`, each with one of 5,000 user ids, without
/// waiting for answers (open loop, at most 512 in flight): a slow canary cannot throttle the
/// stable's traffic the way a closed loop of workers would.
fn traffic(proxy: SocketAddr, rate: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(512));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let per_tick = (rate / 100).max(1) as u64;
        let mut i = 0u64;
        while !stop.load(Relaxed) {
            tick.tick().await;
            for _ in 0..per_tick {
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    break;
                };
                let user = (i * 7919) % 5000;
                i += 1;
                let client = client.clone();
                tokio::spawn(async move {
                    let req = Request::get(format!("http://{proxy}/checkout"))
                        .header("x-user-id", format!("user-{user}"))
                        .body(Empty::new());
                    if let Ok(req) = req {
                        if let Ok(resp) = client.request(req).await {
                            let _ = resp.into_body().collect().await;
                        }
                    }
                    drop(permit);
                });
            }
        }
    })
}

/// Requests and errors answered so far per cohort (stable, canary), from the proxy's counters.
#[derive(Clone, Copy, Default)]
struct Totals([(f64, f64); 2]);

impl Totals {
    fn read(prometheus: &str) -> Self {
        let sum = |name: &str, cohort: &str| -> f64 {
            prometheus
                .lines()
                .filter(|l| l.starts_with(&format!("{name}{{cohort=\"{cohort}\"")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Totals(["stable", "canary"].map(|c| {
            (
                sum("canary_requests_total", c),
                sum("canary_errors_total", c),
            )
        }))
    }

    /// (requests, error %) of `cohort` (0 stable, 1 canary) since `before`.
    fn since(&self, before: &Totals, cohort: usize) -> (f64, f64) {
        let (n, e) = (
            self.0[cohort].0 - before.0[cohort].0,
            self.0[cohort].1 - before.0[cohort].1,
        );
        (n, if n > 0.0 { 100.0 * e / n } else { 0.0 })
    }
}

/// One second of traffic as it was (rates and error shares of that second, from the counters),
/// with the window's p99 and the trigger closest to firing.
fn line(elapsed: Duration, m: &Value, now: &Totals, last: &Totals, dt: f64) -> String {
    let (stable, canary) = (now.since(last, 0), now.since(last, 1));
    // The trigger closest to firing, by its larger scope.
    let closest = ["error_rate", "relative_error", "latency"]
        .iter()
        .map(|t| {
            let e = &m["evidence"][*t];
            let f = |k: &str| e[k].as_f64().unwrap_or(0.0);
            let (c, w) = (
                f("cumulative") - f("threshold_cumulative"),
                f("window") - f("threshold_window"),
            );
            if c >= w {
                (c, *t, f("cumulative"), f("threshold_cumulative"))
            } else {
                (w, *t, f("window"), f("threshold_window"))
            }
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or((0.0, "", 0.0, 0.0));
    format!(
        "{:>5.1}s  {:<11}  split {:>4.1} % | stable {:>6.0} req/s {:>5.2} % err p99 {:>5.0} ms | canary {:>5.0} req/s {:>5.2} % err p99 {:>5.0} ms | closest: {} {:.1} of {:.2}",
        elapsed.as_secs_f64(),
        m["state"].as_str().unwrap_or("?"),
        100.0 * canary.0 / (canary.0 + stable.0).max(1e-9),
        stable.0 / dt,
        stable.1,
        m["stable_p99_latency"].as_f64().unwrap_or(0.0) * 1000.0,
        canary.0 / dt,
        canary.1,
        m["canary_p99_latency"].as_f64().unwrap_or(0.0) * 1000.0,
        closest.1,
        closest.2,
        closest.3,
    )
}

/// One line per step the rollout takes, and when it completes or holds.
fn step_line(elapsed: Duration, status: &Value) -> String {
    let r = &status["rollout"];
    let at = elapsed.as_secs_f64();
    match status["state"].as_str() {
        Some("complete") => format!(
            "{at:>5.1}s  COMPLETE: the last step's gate opened; the canary serves {} % and waits to be made the stable",
            status["traffic_percent"]
        ),
        Some("holding") => format!(
            "{at:>5.1}s  HOLDING: {}",
            r["hold_reason"].as_str().unwrap_or("?")
        ),
        _ => format!(
            "{at:>5.1}s  STEP {} of {}: {} % of users now go to the canary (the gate opened: the evidence rules out a canary twice beyond its limits)",
            r["step"].as_u64().unwrap_or(0) + 1,
            r["steps"].as_array().map_or(0, Vec::len),
            status["traffic_percent"]
        ),
    }
}

/// Runs the demo; `Ok(true)` when it showed what its scenario should (a rollback, or a ramp
/// to complete).
pub async fn run(opts: DemoOptions) -> anyhow::Result<bool> {
    let duration = opts.duration.max(MIN_DURATION);
    let bad = Arc::new(AtomicBool::new(false));
    let stable = upstream("stable", Arc::new(AtomicBool::new(false))).await?;
    let canary = upstream("canary", bad.clone()).await?;
    let dir = std::env::temp_dir().join(format!("canary-proxy-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let toml = demo_config(stable, canary, &dir.join("state.json"));
    let config = Config::from_toml_str(&toml, "(demo)", &dir, &|_| None)?;
    let app = App::bind(config, None).await?;
    let (proxy, admin, control) = (app.proxy_addr(), app.admin_addr(), app.control());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async move {
        let _ = stop_rx.await;
    }));

    println!("canary-proxy demo: stable v1.1.0 and canary v1.2.0-canary behind the proxy; the proxy ramps the canary 10 -> 25 -> 50 -> 100 %");
    println!("  proxy http://{proxy}   dashboard http://{admin}/   metrics http://{admin}/metrics");
    // The bad canary turns bad at its second step, or at 60 % of the run on a slow machine.
    let mut turn_bad = duration.mul_f64(0.6);
    if opts.good {
        println!("  the canary stays healthy: each step advances once its gate opens (2 s bake)\n");
    } else {
        println!("  the canary turns bad at its second step (20 % errors, +250 ms); the judge should roll it back\n");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let workers = traffic(proxy, 2000, stop.clone());
    let started = Instant::now();
    let totals = || Totals::read(&control.metrics().encode());
    let (mut last, mut last_at) = (totals(), Instant::now());
    let mut at_degrade = Totals::default();
    let mut rolled_back_at = None;
    let mut complete_at = None;
    let mut seen = (String::new(), 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while started.elapsed() < duration {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let status = report::status(&control);
        let now = (
            status["state"].as_str().unwrap_or("").to_string(),
            status["rollout"]["step"].as_u64().unwrap_or(0),
        );
        if now != seen
            && now.0 != "rolled_back"
            && (now.1 != seen.1 || now.0 == "complete" || now.0 == "holding")
        {
            println!("{}", step_line(started.elapsed(), &status));
        }
        seen = now;
        if complete_at.is_none() && status["state"] == "complete" {
            complete_at = Some(started.elapsed());
            if opts.good {
                break;
            }
        }
        let second_step = status["rollout"]["step"].as_u64().unwrap_or(0) >= 1;
        if !opts.good && !bad.load(Relaxed) && (second_step || started.elapsed() >= turn_bad) {
            bad.store(true, Relaxed);
            turn_bad = started.elapsed();
            at_degrade = totals();
            println!(
                "{:>5.1}s  the canary degrades now",
                started.elapsed().as_secs_f64()
            );
        }
        // The record follows the swap by a moment: wait for it, so the line has its figures.
        if rolled_back_at.is_none()
            && status["state"] == "rolled_back"
            && status["last_rollback"].is_object()
        {
            let at = started.elapsed();
            rolled_back_at = Some(at);
            let lr = &status["last_rollback"];
            let c = &lr["figures"]["canary"];
            let (n, pct) = totals().since(&at_degrade, 1);
            if !bad.load(Relaxed) {
                // Said plainly: a rollback of a canary that has not changed is a false one.
                println!(
                    "{:>5.1}s  ROLLED BACK by the {} trigger BEFORE the canary degraded: a false rollback (the whole window: {} canary requests, {:.2} % errors, p99 {:.0} ms).",
                    at.as_secs_f64(), lr["trigger"].as_str().unwrap_or("?"), c["requests"],
                    c["error_rate"].as_f64().unwrap_or(0.0), c["p99_latency"].as_f64().unwrap_or(0.0) * 1000.0,
                );
                continue;
            }
            println!(
                "{:>5.1}s  ROLLED BACK by the {} trigger, {:.1}s after the canary degraded: since then {:.0} canary requests, {:.1} % errors, p99 {:.0} ms (the whole window: {} requests, {:.2} % errors). Every new request now goes to stable.",
                at.as_secs_f64(), lr["trigger"].as_str().unwrap_or("?"), (at.saturating_sub(turn_bad)).as_secs_f64(),
                n, pct, c["p99_latency"].as_f64().unwrap_or(0.0) * 1000.0,
                c["requests"], c["error_rate"].as_f64().unwrap_or(0.0),
            );
        }
        if last_at.elapsed() >= Duration::from_millis(990) {
            let (m, now) = (report::metrics(&control), totals());
            let dt = last_at.elapsed().as_secs_f64();
            println!("{}", line(started.elapsed(), &m, &now, &last, dt));
            (last, last_at) = (now, Instant::now());
        }
    }
    stop.store(true, Relaxed);
    let _ = workers.await;
    let all = totals();
    println!(
        "\nsummary: {:.0} requests to stable, {:.0} to the canary in {:.0}s",
        all.0[0].0,
        all.0[1].0,
        started.elapsed().as_secs_f64()
    );
    let shown = if opts.good {
        match complete_at {
            Some(at) => println!("  the healthy canary was ramped through every step to complete in {:.1}s, on evidence alone", at.as_secs_f64()),
            None => println!("  the canary did NOT complete its ramp: the demo did not show what it should"),
        }
        complete_at.is_some()
    } else {
        match rolled_back_at {
            Some(at) => println!("  the canary was rolled back {:.1}s after it degraded, and stayed rolled back (the latch)", (at.saturating_sub(turn_bad)).as_secs_f64()),
            None => println!("  the canary was NOT rolled back: the demo did not show what it should"),
        }
        rolled_back_at.is_some()
    };
    if opts.keep_running {
        println!("\nstill running (Ctrl-C to stop):");
        println!("  dashboard  http://{admin}/");
        println!("  status     http://{admin}/canary/status   metrics http://{admin}/metrics");
        println!("  proxy      http://{proxy}/");
        println!("  try: canary-proxy status --admin http://{admin}");
        let gentle = Arc::new(AtomicBool::new(false));
        let _trickle = traffic(proxy, 40, gentle.clone());
        let _ = tokio::signal::ctrl_c().await;
        gentle.store(true, Relaxed);
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(shown)
}
