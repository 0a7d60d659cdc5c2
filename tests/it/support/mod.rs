//! Test helpers: real upstreams written with hyper on 127.0.0.1:0, the real proxy started
//! through its library entry point (or the real binary), and a plain HTTP client.

#![allow(dead_code)]

mod binary;
mod browser;
mod receiver;
mod recorder;
mod redis_server;
mod upstream;
pub use binary::*;
pub use browser::*;
pub use receiver::*;
pub use recorder::*;
pub use redis_server::*;
pub use upstream::*;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use canary_proxy::app::App;
use canary_proxy::config::Config;
use http::{HeaderMap, Request};
use http_body_util::BodyExt;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

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
    /// The body of `[rollout]`; when set, no `traffic_percent` is written.
    pub rollout: Option<String>,
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
            rollout: None,
        }
    }

    /// The real proxy with this config, in-process.
    pub async fn start(&self) -> TestProxy {
        start_proxy(&self.toml()).await
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
# Two event loops on every machine, so the tests always cross the SO_REUSEPORT split.
workers = 2
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
{percent}
identity = [{identity}]
salt = {salt:?}
expose_headers = {expose}

[timeouts]
request = "{timeout}"
connect = "1s"
{extra}
{rollout}
"#,
            trusted = list(&self.trusted),
            stable = list(&self.stable),
            canary = list(&self.canary),
            enabled = self.enabled,
            percent = match self.rollout {
                Some(_) => String::new(),
                None => format!("traffic_percent = {:?}", self.percent),
            },
            rollout = match &self.rollout {
                Some(r) => format!("[rollout]\n{r}"),
                None => String::new(),
            },
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
/// Two upstreams and an in-process proxy sending `percent` of identities to the canary.
pub async fn proxy_at(percent: f64) -> (TestProxy, Upstream, Upstream) {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = percent;
    (cfg.start().await, s, k)
}

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
    start_proxy_env(toml, dir, &[]).await
}

/// As `start_proxy_in`, with environment variables as the config loader sees them.
pub async fn start_proxy_env(
    toml: &str,
    dir: tempfile::TempDir,
    env: &[(&str, &str)],
) -> TestProxy {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let config =
        Config::from_toml_str(toml, "test.toml", dir.path(), &lookup).expect("valid test config");
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

/// POSTs to an admin path without a token and asserts it was accepted.
pub async fn post_ok(admin: SocketAddr, path: &str) {
    let got = admin_post(admin, path, None, "").await;
    assert_eq!(got.status, 200, "POST {path}: {}", got.body);
}

/// A client that speaks HTTP/2 only (h2c with prior knowledge).
pub fn h2_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}
