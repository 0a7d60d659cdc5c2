//! gRPC through the proxy, to a strict upstream: HTTP/2 only, refusing a call whose `host`
//! field differs from its `:authority` (RFC 9113 §8.3.1, as Python's `h2` and others do). Calls
//! keep their trailers, are judged by `grpc-status`, and go over h2c and over TLS to an
//! `https://` endpoint, each on one multiplexed connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::support::*;

/// What the upstream saw of one call.
#[derive(Clone, Debug)]
struct Call {
    authority: Option<String>,
    host: Option<HeaderValue>,
    te: Option<HeaderValue>,
}

#[derive(Default)]
struct Seen {
    calls: Mutex<Vec<Call>>,
    connections: AtomicUsize,
}

/// A strict gRPC upstream, h2c or (with `tls`) h2 by ALPN. Each call ends with the
/// `grpc-status` it asks for in `x-want-status` (default 0) and a `grpc-message` counting the
/// bytes it got, in trailers, or in the headers alone with `x-trailers-only`. With `lifetime`,
/// each connection is dropped that long after it was accepted, without a GOAWAY.
async fn strict_grpc_upstream_for(
    tls: Option<tokio_rustls::TlsAcceptor>,
    lifetime: Option<std::time::Duration>,
) -> (String, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let url = match tls {
        Some(_) => format!("https://localhost:{port}"),
        None => format!("http://127.0.0.1:{port}"),
    };
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            s.connections.fetch_add(1, Ordering::Relaxed);
            let (seen, tls) = (s.clone(), tls.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move { answer(req, &seen).await }
                });
                let h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                let serve = async {
                    let _ = match tls {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls) => h2.serve_connection(TokioIo::new(tls), svc).await,
                            Err(_) => return,
                        },
                        None => h2.serve_connection(TokioIo::new(stream), svc).await,
                    };
                };
                match lifetime {
                    Some(d) => drop(tokio::time::timeout(d, serve).await),
                    None => serve.await,
                }
            });
        }
    });
    (url, seen)
}

async fn strict_grpc_upstream(tls: Option<tokio_rustls::TlsAcceptor>) -> (String, Arc<Seen>) {
    strict_grpc_upstream_for(tls, None).await
}

type Frames = StreamBody<
    futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>,
>;

async fn answer(req: Request<Incoming>, seen: &Seen) -> Result<Response<Frames>, std::io::Error> {
    let call = Call {
        authority: req.uri().authority().map(|a| a.to_string()),
        host: req.headers().get("host").cloned(),
        te: req.headers().get("te").cloned(),
    };
    seen.calls.lock().unwrap().push(call.clone());
    if let Some(host) = &call.host {
        if Some(host.to_str().unwrap_or("")) != call.authority.as_deref() {
            // The stream is reset: the client sees no answer at all.
            return Err(std::io::Error::other("host differs from :authority"));
        }
    }
    let want = req.headers().get("x-want-status").cloned();
    let only = req.headers().contains_key("x-trailers-only");
    let got = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?;
    let status = want.unwrap_or_else(|| HeaderValue::from_static("0"));
    let message = HeaderValue::from_str(&format!("got {} bytes", got.to_bytes().len())).unwrap();
    let mut frames = Vec::new();
    if !only {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", status.clone());
        trailers.insert("grpc-message", message);
        frames.push(Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))));
        frames.push(Ok(Frame::trailers(trailers)));
    }
    let mut resp = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    if only {
        resp.headers_mut().insert("grpc-status", status);
    }
    Ok(resp)
}

/// A gRPC call to `url` (through the proxy) as user `user`, asking for `status`.
fn call(url: &str, user: usize, status: &str, only: bool) -> Request<Full<Bytes>> {
    let mut req = Request::post(url)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-user-id", format!("g{user}"))
        .header("x-want-status", status);
    if only {
        req = req.header("x-trailers-only", "1");
    }
    req.body(Full::new(Bytes::from_static(b"\0\0\0\0\x05hello")))
        .unwrap()
}

/// A call that must pass: HTTP 200 over HTTP/2 (from `cohort`, when given) with the
/// `grpc-status` it asked for, in its trailers or, trailers-only, its headers. The whole
/// answer, for what a test checks beyond.
async fn passes<C>(
    h2: &hyper_util::client::legacy::Client<C, Full<Bytes>>,
    req: Request<Full<Bytes>>,
    cohort: Option<&str>,
) -> http_body_util::Collected<Bytes>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let want = req.headers()["x-want-status"].clone();
    let only = req.headers().contains_key("x-trailers-only");
    let resp = h2.request(req).await.expect("the call passes");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    if let Some(cohort) = cohort {
        assert_eq!(resp.headers()["x-deployment-cohort"], cohort);
    }
    let at_headers = resp.headers().get("grpc-status").cloned();
    let collected = resp.into_body().collect().await.expect("the whole answer");
    let status = match only {
        true => at_headers,
        false => collected
            .trailers()
            .expect("trailers arrive")
            .get("grpc-status")
            .cloned(),
    };
    assert_eq!(status, Some(want));
    collected
}

fn canary_errors(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("canary_errors_total{cohort=\"canary\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_reaches_a_strict_upstream_with_the_clients_authority_and_its_trailers() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 0.0;
    let (url, seen) = strict_grpc_upstream(None).await;
    cfg.stable = vec![url];
    let proxy = cfg.start().await;
    let h2 = h2_client();
    for i in 0..20 {
        let req = call(&proxy.url("/pkg.Service/Method"), i, "0", false);
        let collected = passes(&h2, req, Some("stable")).await;
        assert_eq!(
            collected.trailers().unwrap()["grpc-message"],
            "got 10 bytes"
        );
        assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
    }
    let calls = seen.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 20);
    for c in &calls {
        assert_eq!(
            c.authority.as_deref(),
            Some(proxy.addr.to_string().as_str()),
            ":authority is the client's Host, not the endpoint's address"
        );
        assert_eq!(c.host, None, "no host field beside :authority");
        assert_eq!(c.te.as_ref().unwrap(), "trailers");
    }
    assert_eq!(
        seen.connections.load(Ordering::Relaxed),
        1,
        "the calls share one HTTP/2 connection"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_judged_by_their_grpc_status_not_the_http_200() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 100.0;
    cfg.canary = vec![strict_grpc_upstream(None).await.0];
    cfg.rollback = "evaluate_every = \"100ms\"\nmin_requests = 20".into();
    let proxy = cfg.start().await;
    let h2 = h2_client();
    let url = proxy.url("/pkg.Service/Method");
    let run = |i: usize, status: &'static str, only: bool| {
        let (h2, req) = (h2.clone(), call(&url, i, status, only));
        async move {
            // The judge may roll back between calls: the cohort is not checked.
            passes(&h2, req, None).await;
        }
    };
    // Status 0 and a status not in grpc_error_codes (NOT_FOUND, 5): no error.
    for i in 0..30 {
        run(i, if i % 2 == 0 { "0" } else { "5" }, false).await;
    }
    let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert_eq!(canary_errors(&m), 0, "{m}");
    // Trailers-only with UNAVAILABLE (14): errors, judged at the headers.
    for i in 30..35 {
        run(i, "14", true).await;
    }
    let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert_eq!(canary_errors(&m), 5, "{m}");
    assert_eq!(
        admin_json(&proxy, "/canary/status").await["state"],
        "active"
    );
    // INTERNAL (13) in the trailers of every call: rolled back, although every answer is 200.
    let mut i = 35;
    while admin_json(&proxy, "/canary/status").await["state"] != "rolled_back" {
        assert!(
            i < 2000,
            "a canary failing every gRPC call was never rolled back"
        );
        // The swap may come between the look at the state and this call: a call the stable
        // answers (a plain upstream, no gRPC trailers) is the rollback seen from the client.
        let resp = h2
            .request(call(&url, i, "13", false))
            .await
            .expect("the call passes");
        if resp.headers()["x-deployment-cohort"] == "stable" {
            break;
        }
        let collected = resp.into_body().collect().await.expect("the whole answer");
        let trailers = collected.trailers().expect("trailers arrive");
        assert_eq!(trailers["grpc-status"], "13");
        i += 1;
    }
    let last = admin_json(&proxy, "/canary/status").await["last_rollback"].clone();
    assert_eq!(last["trigger"], "error_rate", "{last}");
    proxy.stop().await;
}

/// h2 over TLS on both sides: the proxy terminates TLS (ALPN h2) and calls an `https://`
/// endpoint that speaks h2 by ALPN, trusted through `proxy.upstream_ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_reaches_an_https_upstream_and_is_judged() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = crate::tls::test_pki();
    std::fs::write(dir.path().join("server.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("server.key"), &key).unwrap();
    std::fs::write(dir.path().join("upstream-ca.pem"), &ca).unwrap();
    let acceptor = crate::tls::acceptor(&cert, &key, b"h2");
    let (url, seen) = strict_grpc_upstream(Some(acceptor)).await;

    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 100.0;
    cfg.canary = vec![url];
    let toml = cfg.toml().replace(
        "[admin]",
        "upstream_ca_file = \"upstream-ca.pem\"\n\n\
         [proxy.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n\n[admin]",
    );
    let proxy = start_proxy_in(&toml, dir).await;
    let h2 = crate::tls::client_trusting(&ca, &[b"h2"]);
    let front = format!("localhost:{}", proxy.addr.port());
    let target = format!("https://{front}/pkg.Service/Method");
    for (i, status) in ["0", "13", "0", "13", "13"].into_iter().enumerate() {
        passes(&h2, call(&target, i, status, false), Some("canary")).await;
    }
    let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert_eq!(canary_errors(&m), 3, "the three INTERNAL calls: {m}");
    let calls = seen.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 5);
    assert!(
        calls
            .iter()
            .all(|c| c.authority.as_deref() == Some(front.as_str()) && c.host.is_none()),
        "{calls:?}"
    );
    assert_eq!(seen.connections.load(Ordering::Relaxed), 1);
    proxy.stop().await;
}

/// A gRPC canary whose port is closed: its calls are served by stable (nothing was sent), and
/// counted as the canary's refused connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_to_a_dead_canary_is_served_by_stable() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 100.0;
    let (url, seen) = strict_grpc_upstream(None).await;
    cfg.stable = vec![url];
    let (closed, _held) = closed_port().await;
    cfg.canary = vec![closed];
    let proxy = cfg.start().await;
    let h2 = h2_client();
    for i in 0..5 {
        let req = call(&proxy.url("/pkg.Service/Method"), i, "0", false);
        passes(&h2, req, Some("stable")).await;
    }
    assert_eq!(seen.calls.lock().unwrap().len(), 5);
    let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert!(
        m.contains(r#"canary_upstream_failures_total{cohort="canary",kind="connect"} 5"#),
        "{m}"
    );
    proxy.stop().await;
}

/// An upstream that drops each connection soon after accepting it: the next call finds its
/// connection closed and goes on a new one, never a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_after_the_upstream_dropped_its_connection_goes_on_a_new_one() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 0.0;
    let lifetime = std::time::Duration::from_millis(200);
    let (url, seen) = strict_grpc_upstream_for(None, Some(lifetime)).await;
    cfg.stable = vec![url];
    let proxy = cfg.start().await;
    let h2 = h2_client();
    for i in 0..3 {
        let req = call(&proxy.url("/pkg.Service/Method"), i, "0", false);
        passes(&h2, req, Some("stable")).await;
        tokio::time::sleep(lifetime * 2).await;
    }
    assert_eq!(seen.calls.lock().unwrap().len(), 3);
    assert_eq!(seen.connections.load(Ordering::Relaxed), 3, "one per call");
    let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert!(
        m.contains(r#"canary_errors_total{cohort="stable",version="v1.1.0"} 0"#),
        "{m}"
    );
    proxy.stop().await;
}
