//! The soak: the real binary under hundreds of concurrent keep-alive clients with mixed sizes,
//! with a reload, a rollback and a resume in the middle. Reports resident memory at the start and
//! the end, and checks that every request sent got a response, counted on both sides.
//!
//! Not part of `cargo test`. Run: `cargo bench --bench soak -- --seconds 300 --clients 500`
//! (defaults: 300 s, 500 clients; `--steady` leaves out the reload, rollback and resume).
//! Traffic stays on 127.0.0.1 and stops by itself.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An upstream: `/small` 2 bytes, `/medium` 16 KiB, `/large` 256 KiB, `POST /upload` the size.
async fn upstream(received: Arc<AtomicU64>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let received = received.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let received = received.clone();
                    async move {
                        received.fetch_add(1, Relaxed);
                        let body = match req.uri().path() {
                            "/medium" => Bytes::from(vec![b'm'; 16 * 1024]),
                            "/large" => Bytes::from(vec![b'l'; 256 * 1024]),
                            "/upload" => {
                                let n = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes().len())
                                    .unwrap_or(0);
                                Bytes::from(n.to_string())
                            }
                            _ => Bytes::from_static(b"ok"),
                        };
                        Ok::<_, Infallible>(Response::new(Full::new(body)))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn config(
    stable: SocketAddr,
    canary: SocketAddr,
    percent: f64,
    proxy_port: u16,
    admin_port: u16,
) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
         [stable]\nversion = \"v1\"\nendpoints = [\"http://{stable}\"]\n\
         [canary]\nversion = \"v2\"\nendpoints = [\"http://{canary}\"]\ntraffic_percent = {percent:?}\n\
         [limits]\nmax_connections = 4000\n"
    )
}

async fn admin_post(admin: SocketAddr, path: &str) -> u16 {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{admin}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    client
        .request(req)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    answered: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
}

/// One client on one keep-alive connection until `until`.
async fn client(proxy: SocketAddr, id: u64, until: Instant, tally: Arc<Tally>) {
    let mut i = 0u64;
    'reconnect: while Instant::now() < until {
        let Ok(stream) = TcpStream::connect(proxy).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok((mut send, conn)) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await
        else {
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < until {
            i += 1;
            let (method, path, body) = match i % 20 {
                0 => ("GET", "/large", Bytes::new()),
                1..=3 => ("GET", "/medium", Bytes::new()),
                4 => ("POST", "/upload", Bytes::from(vec![b'u'; 32 * 1024])),
                _ => ("GET", "/small", Bytes::new()),
            };
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", "soak")
                .header("x-user-id", format!("c{id}-{}", i % 50))
                .body(Full::new(body))
                .unwrap();
            if send.ready().await.is_err() {
                continue 'reconnect;
            }
            tally.sent.fetch_add(1, Relaxed);
            match send.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let n = resp
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes().len())
                        .unwrap_or(0);
                    tally.answered.fetch_add(1, Relaxed);
                    tally.bytes.fetch_add(n as u64, Relaxed);
                    if status.is_success() {
                        tally.ok.fetch_add(1, Relaxed)
                    } else {
                        tally.failed.fetch_add(1, Relaxed)
                    };
                }
                Err(_) => {
                    tally.failed.fetch_add(1, Relaxed);
                    continue 'reconnect;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::main]
async fn main() {
    let seconds = arg("--seconds", 300);
    let clients = arg("--clients", 500);
    let (s_count, c_count) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (stable, canary) = (
        upstream(s_count.clone()).await,
        upstream(c_count.clone()).await,
    );
    let dir = std::env::temp_dir().join(format!("canary-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (pp, ap) = (free_port(), free_port());
    let path = dir.join("soak.toml");
    std::fs::write(&path, config(stable, canary, 50.0, pp, ap)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_canary-proxy"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("the proxy starts");
    let (proxy, admin): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{pp}").parse().unwrap(),
        format!("127.0.0.1:{ap}").parse().unwrap(),
    );
    for _ in 0..100 {
        if TcpStream::connect(proxy).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tally = Arc::new(Tally::default());
    let tasks: Vec<_> = (0..clients)
        .map(|id| tokio::spawn(client(proxy, id, until, tally.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds.min(10) / 2)).await;
    let rss_start = rss_kb(pid, "VmRSS");
    println!(
        "soak: {clients} keep-alive clients for {seconds}s; proxy RSS after warm-up {rss_start} kB"
    );

    let at = |f: f64| started + Duration::from_secs_f64(seconds as f64 * f);
    // RSS once a second, for the whole run.
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        while Instant::now() < until {
            samples.push(rss_kb(pid, "VmRSS"));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        samples
    });
    // `--steady`: no reload, rollback or resume, to tell their effect on memory apart.
    if !std::env::args().any(|a| a == "--steady") {
        tokio::time::sleep_until(at(0.4).into()).await;
        std::fs::write(&path, config(stable, canary, 30.0, pp, ap)).unwrap();
        println!(
            "  {:>4.0}s reload (50 % -> 30 %): {}",
            started.elapsed().as_secs_f64(),
            admin_post(admin, "/canary/reload").await
        );
        tokio::time::sleep_until(at(0.6).into()).await;
        println!(
            "  {:>4.0}s rollback: {}",
            started.elapsed().as_secs_f64(),
            admin_post(admin, "/canary/rollback").await
        );
        tokio::time::sleep_until(at(0.8).into()).await;
        println!(
            "  {:>4.0}s resume: {}",
            started.elapsed().as_secs_f64(),
            admin_post(admin, "/canary/resume").await
        );
    }
    for t in tasks {
        let _ = t.await;
    }
    let samples = sampler.await.unwrap_or_default();
    let rss_end = rss_kb(pid, "VmRSS");
    let peak = rss_kb(pid, "VmHWM");
    // Flat means: the second half of the run does not keep growing.
    let half = &samples[samples.len() / 2..];
    let (lo, hi) = (
        half.iter().min().copied().unwrap_or(0),
        half.iter().max().copied().unwrap_or(0),
    );
    let marks: Vec<String> = (1..=5)
        .map(|k| {
            samples
                .get(samples.len() * k / 5 - 1)
                .map(|v| format!("{v}"))
                .unwrap_or_default()
        })
        .collect();
    println!(
        "proxy RSS over the run (kB, at each fifth): {}",
        marks.join(" ")
    );
    println!(
        "second half: {lo}..{hi} kB ({:+.1} %)",
        (hi as f64 - lo as f64) * 100.0 / lo.max(1) as f64
    );
    let (sent, answered, ok, failed) = (
        tally.sent.load(Relaxed),
        tally.answered.load(Relaxed),
        tally.ok.load(Relaxed),
        tally.failed.load(Relaxed),
    );
    let upstream_seen = s_count.load(Relaxed) + c_count.load(Relaxed);
    println!("requests: sent {sent}, answered {answered} ({ok} 2xx, {failed} failed), upstreams received {upstream_seen}");
    println!(
        "throughput: {:.0} req/s, {:.1} MB/s to clients",
        answered as f64 / seconds as f64,
        tally.bytes.load(Relaxed) as f64 / seconds as f64 / 1e6
    );
    println!(
        "proxy RSS: start {rss_start} kB, end {rss_end} kB, peak {peak} kB ({:+.1} % start to end)",
        (rss_end as f64 - rss_start as f64) * 100.0 / rss_start.max(1) as f64
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let lost = sent - answered;
    println!("lost requests: {lost}; proxy exit: {status}");
    if lost > 0 || failed > 0 || upstream_seen != answered || !status.success() {
        println!("SOAK FAILED");
        std::process::exit(1);
    }
    println!("SOAK PASSED");
}
