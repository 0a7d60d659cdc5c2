//! Test helpers: real upstreams written with hyper on 127.0.0.1:0, the real proxy started
//! through its library entry point (or the real binary), and a plain HTTP client.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use canary_proxy::app::App;
use canary_proxy::config::Config;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub at: std::time::Instant,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request arrived")
    }
}

pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A deterministic byte pattern, so a download can be checked without holding it.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) * 31 % 251) as u8)
        .collect()
}

/// An upstream that answers by path:
/// `/status/N` with status N, `/sleep/MS` after MS ms, `/upload` with the body's SHA-256 and
/// length, `/download/N` with N pattern bytes streamed, `/hop` with hop-by-hop headers,
/// anything else 200 "NAME". Every response carries `x-upstream: NAME`.
/// How an upstream misbehaves on `/`: every Nth request fails with 500, one identity always
/// fails, every answer is delayed.
#[derive(Debug, Clone, Default)]
pub struct Behavior {
    pub fail_every: u64,
    pub fail_identity: Option<String>,
    pub delay_ms: u64,
}

pub async fn spawn_upstream(name: &str) -> Upstream {
    spawn_upstream_with(name, Behavior::default()).await
}

pub async fn spawn_upstream_with(name: &str, behavior: Behavior) -> Upstream {
    let behavior = Arc::new((behavior, std::sync::atomic::AtomicU64::new(0)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (name_c, seen_c) = (name.to_string(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (name, seen, behavior) = (name_c.clone(), seen_c.clone(), behavior.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (name, seen, behavior) = (name.clone(), seen.clone(), behavior.clone());
                    async move {
                        if req.uri().path() == "/" {
                            if let Some(r) = misbehave(&name, &seen, &behavior, &req).await {
                                return Ok::<_, Infallible>(r);
                            }
                        }
                        Ok::<_, Infallible>(answer(&name, &seen, req).await)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        name: name.to_string(),
        seen,
    }
}

async fn misbehave(
    name: &str,
    seen: &Mutex<Vec<Seen>>,
    behavior: &(Behavior, std::sync::atomic::AtomicU64),
    req: &Request<Incoming>,
) -> Option<Response<Body>> {
    let (b, count) = behavior;
    if b.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(b.delay_ms)).await;
    }
    let n = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let id = req.headers().get("x-user-id").and_then(|v| v.to_str().ok());
    let fail = (b.fail_every > 0 && n % b.fail_every == 0)
        || (id.is_some() && id == b.fail_identity.as_deref());
    if !fail {
        return None;
    }
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: "/".into(),
        headers: req.headers().clone(),
        at: std::time::Instant::now(),
    });
    let mut r = Response::new(full(format!("{name} failed")));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r.headers_mut().insert("x-upstream", name.parse().unwrap());
    Some(r)
}

async fn answer(name: &str, seen: &Mutex<Vec<Seen>>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: req.headers().clone(),
        at: std::time::Instant::now(),
    });
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (head, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut resp = match head {
        "status" => {
            let mut r = Response::new(full(format!("{name} status {arg}")));
            *r.status_mut() = StatusCode::from_u16(arg.parse().unwrap_or(500)).unwrap();
            r
        }
        "sleep" => {
            tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(0))).await;
            Response::new(full(name.to_string()))
        }
        "upload" => {
            let mut body = req.into_body();
            let mut h = Sha256::new();
            let mut len = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            h.update(d);
                            len += d.len() as u64;
                        }
                    }
                    Err(_) => return Response::new(full("body failed")),
                }
            }
            Response::new(full(format!("{len} {}", hex(&h.finalize()))))
        }
        "download" => {
            let total: u64 = arg.parse().unwrap_or(0);
            let chunks = (0..total.div_ceil(65536)).map(move |i| {
                let len = (total - i * 65536).min(65536) as usize;
                Ok::<_, Infallible>(Frame::data(Bytes::from(pattern(i * 65536, len))))
            });
            let stream = futures_stream(chunks);
            Response::new(StreamBody::new(stream).boxed())
        }
        "hop" => {
            let mut r = Response::new(full(name.to_string()));
            let h = r.headers_mut();
            h.insert("connection", "x-up-secret".parse().unwrap());
            h.insert("x-up-secret", "1".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("x-up-kept", "1".parse().unwrap());
            r
        }
        _ => Response::new(full(name.to_string())),
    };
    resp.headers_mut()
        .insert("x-upstream", name.parse().unwrap());
    resp
}

/// A stream over an iterator, yielding between items so a large body is produced lazily.
fn futures_stream<I, T>(iter: I) -> impl futures_core_like::Stream<Item = T>
where
    I: Iterator<Item = T> + Send + Unpin + 'static,
{
    futures_core_like::IterStream(iter)
}

pub mod futures_core_like {
    //! The one `Stream` we need, without another dependency: http-body-util's `StreamBody`
    //! takes any `futures_core::Stream`, which tokio-stream re-exports.
    use std::pin::Pin;
    use std::task::{Context, Poll};
    pub use tokio_stream::Stream;

    pub struct IterStream<I>(pub I);

    impl<I: Iterator + Unpin> Stream for IterStream<I> {
        type Item = I::Item;
        fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<I::Item>> {
            Poll::Ready(self.0.next())
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A proxy config in TOML, for tests to start from.
pub struct Cfg {
    pub stable: Vec<String>,
    pub canary: Vec<String>,
    pub percent: f64,
    pub enabled: bool,
    pub salt: String,
    pub identity: Vec<String>,
    pub expose_headers: bool,
    pub trusted: Vec<String>,
    pub extra: String,
    pub request_timeout: String,
    pub token: String,
    pub rollback: String,
}

impl Cfg {
    pub fn new(stable: &Upstream, canary: &Upstream) -> Self {
        Cfg {
            stable: vec![stable.url()],
            canary: vec![canary.url()],
            percent: 50.0,
            enabled: true,
            salt: String::new(),
            identity: vec![
                "header:x-user-id".into(),
                "cookie:session_id".into(),
                "ip".into(),
            ],
            expose_headers: true,
            trusted: vec![],
            extra: String::new(),
            request_timeout: "30s".into(),
            token: String::new(),
            rollback: String::new(),
        }
    }

    pub fn toml(&self) -> String {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            r#"
[proxy]
listen = "127.0.0.1:0"
trusted_proxies = [{trusted}]

[admin]
listen = "127.0.0.1:0"
token = {token:?}

[rollback]
{rollback}

[stable]
version = "v1.1.0"
endpoints = [{stable}]

[canary]
version = "v1.2.0-canary"
endpoints = [{canary}]
enabled = {enabled}
traffic_percent = {percent:?}
identity = [{identity}]
salt = {salt:?}
expose_headers = {expose}

[timeouts]
request = "{timeout}"
connect = "1s"
{extra}
"#,
            trusted = list(&self.trusted),
            stable = list(&self.stable),
            canary = list(&self.canary),
            enabled = self.enabled,
            percent = self.percent,
            identity = list(&self.identity),
            salt = self.salt,
            expose = self.expose_headers,
            timeout = self.request_timeout,
            token = self.token,
            rollback = self.rollback,
            extra = self.extra,
        )
    }
}

/// The real proxy, in-process, on ephemeral ports.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub control: Arc<canary_proxy::control::Control>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestProxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(d) = self.done.take() {
            let _ = d.await;
        }
    }
}

pub async fn start_proxy(toml: &str) -> TestProxy {
    // Each proxy keeps its state file in a folder of its own.
    let dir = tempfile::tempdir().unwrap();
    start_proxy_in(toml, dir).await
}

pub async fn start_proxy_in(toml: &str, dir: tempfile::TempDir) -> TestProxy {
    let config =
        Config::from_toml_str(toml, "test.toml", dir.path(), &|_| None).expect("valid test config");
    let app = App::bind(config, None).await.expect("binds");
    let (addr, admin, control) = (app.proxy_addr(), app.admin_addr(), app.control());
    let (tx, rx) = oneshot::channel();
    let done = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    TestProxy {
        addr,
        admin,
        control,
        stop: Some(tx),
        done: Some(done),
        _dir: dir,
    }
}

pub type Client =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// A response read whole.
pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(client: &Client, req: Request<Body>) -> Got {
    let resp = client.request(req).await.expect("the proxy answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("whole body")
        .to_bytes();
    Got {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(client: &Client, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(client, b.body(full(Bytes::new())).unwrap()).await
}

/// Counts of values, for split checks.
pub fn tally<'a>(items: impl IntoIterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    let mut m = HashMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

/// The real binary, started on a config file, with the addresses it logged.
pub struct Binary {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A field of /proc/PID/status in kB, such as "VmRSS" or "VmHWM".
    pub fn status_kb(&self, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        text.lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_canary-proxy")
}

/// Runs `canary-proxy run --config PATH` and waits for its "serving" line.
pub fn spawn_binary(config: &std::path::Path, env: &[(&str, &str)]) -> Binary {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env_remove("CANARY_ADMIN_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("canary-proxy serving") {
                let _ = tx.send(line.clone());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no serving line; logs: {:?}", lines.lock().unwrap()));
    let field = |name: &str| -> SocketAddr {
        let plain = strip_ansi(&line);
        let at = plain.find(&format!("{name}=")).expect("address in the log") + name.len() + 1;
        plain[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (addr, admin) = (field("proxy"), field("admin"));
    Binary {
        child,
        addr,
        admin,
        stderr: lines,
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Sends `n` requests from `concurrency` tasks, ids `{prefix}{i}`, to `path`; returns the
/// (status, cohort) of each.
pub async fn drive(
    proxy: &TestProxy,
    n: usize,
    concurrency: usize,
    prefix: &str,
    path: &str,
) -> Vec<(u16, String)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, url, prefix, c) = (next.clone(), proxy.url(path), prefix.to_string(), client());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return out;
                }
                let got = get(&c, &url, &[("x-user-id", &format!("{prefix}{i}"))]).await;
                out.push((
                    got.status,
                    got.header("x-deployment-cohort").unwrap_or("").to_string(),
                ));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// GET an admin path as JSON.
pub async fn admin_json(proxy: &TestProxy, path: &str) -> serde_json::Value {
    let got = get(&client(), &proxy.admin_url(path), &[]).await;
    assert_eq!(got.status, 200, "{path}: {}", got.body);
    serde_json::from_str(&got.body).expect("admin answers JSON")
}

/// POST to an admin path with an optional token and body.
pub async fn admin_post(admin: SocketAddr, path: &str, token: Option<&str>, body: &str) -> Got {
    let mut b =
        Request::post(format!("http://{admin}{path}")).header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    send(
        &client(),
        b.body(full(Bytes::from(body.to_string()))).unwrap(),
    )
    .await
}

/// Polls the status until `state` or `limit` passes.
pub async fn wait_for_state(proxy: &TestProxy, state: &str, limit: Duration) -> serde_json::Value {
    let until = std::time::Instant::now() + limit;
    loop {
        let s = admin_json(proxy, "/canary/status").await;
        if s["state"] == state || std::time::Instant::now() > until {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
