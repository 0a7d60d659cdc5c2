//! TLS: termination on the proxy port with a test CA (rcgen), over HTTP/1.1 and h2 by ALPN,
//! and an `https://` upstream trusted through `proxy.upstream_ca_file`.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::support::*;

/// A CA, and a certificate for localhost signed by it: (ca pem, cert pem, key pem).
pub(crate) fn test_pki() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

pub(crate) fn client_trusting(
    ca_pem: &str,
    alpn: &[&[u8]],
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let h2 = alpn == [b"h2".as_slice()];
    let connector = if h2 {
        b.enable_http2().build()
    } else {
        b.enable_http1().build()
    };
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build(connector)
}

/// An upstream's TLS side: the certificate and key (PEM) and the one ALPN protocol it speaks.
pub(crate) fn acceptor(cert: &str, key: &str, alpn: &[u8]) -> tokio_rustls::TlsAcceptor {
    let certs = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    server.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(server))
}

/// An `https://localhost` upstream (HTTP/1.1) answering with `answer`, its CA written to
/// `dir/upstream-ca.pem`; its port.
pub(crate) async fn tls_upstream<F, Fut, B>(dir: &Path, answer: F) -> u16
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (ca, cert, key) = test_pki();
    std::fs::write(dir.join("upstream-ca.pem"), &ca).unwrap();
    let acceptor = acceptor(&cert, &key, b"http/1.1");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = service_fn(move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

/// A proxy whose stable pool is `https://localhost:PORT`, trusted through the CA that `dir`'s
/// `upstream-ca.pem` holds; and its config.
pub(crate) async fn proxy_to_tls_upstream(port: u16, dir: tempfile::TempDir) -> (TestProxy, Cfg) {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 0.0;
    cfg.stable = vec![format!("https://localhost:{port}")];
    let toml = cfg.toml().replace(
        "[admin]",
        "upstream_ca_file = \"upstream-ca.pem\"\n\n[admin]",
    );
    (start_proxy_in(&toml, dir).await, cfg)
}

fn write_pki(dir: &Path) -> String {
    let (ca, cert, key) = test_pki();
    std::fs::write(dir.join("server.pem"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key).unwrap();
    ca
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_over_http1_and_h2() {
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write_pki(dir.path());
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 0.0;
    let toml = cfg.toml().replace(
        "[admin]",
        "[proxy.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n\n[admin]",
    );
    let proxy = start_proxy_in(&toml, dir).await;
    let url = format!("https://localhost:{}/secure", proxy.addr.port());
    for alpn in [&[b"http/1.1".as_slice()][..], &[b"h2".as_slice()][..]] {
        let c = client_trusting(&ca, alpn);
        let resp = c
            .request(Request::get(&url).body(Full::new(Bytes::new())).unwrap())
            .await
            .expect("a TLS answer");
        assert_eq!(resp.status(), 200);
        let want = if alpn == [b"h2".as_slice()] {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(resp.version(), want);
        assert_eq!(
            &resp.into_body().collect().await.unwrap().to_bytes()[..],
            b"stable"
        );
        assert_eq!(s.last().headers["x-forwarded-proto"], "https");
    }
    // Plain HTTP on the TLS port is not served.
    assert!(client()
        .request(
            Request::get(format!("http://127.0.0.1:{}/", proxy.addr.port()))
                .body(http_body_util::Empty::new().map_err(|e| match e {}).boxed())
                .unwrap()
        )
        .await
        .is_err());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_trusted_through_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    // Echoes the fields the proxy forwards: a GET our HTTP/1 server read without a header map
    // reaches hyper's client with one built from its head.
    let port = tls_upstream(dir.path(), |req: Request<Incoming>| async move {
        let field = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let echo = format!(
            "secure upstream {} {} {} {}",
            field("x-custom"),
            field("x-forwarded-for"),
            field("x-deployment-cohort"),
            field("keep-alive"),
        );
        http::Response::new(Full::new(Bytes::from(echo)))
    })
    .await;
    let (proxy, cfg) = proxy_to_tls_upstream(port, dir).await;
    let got = get(
        &client(),
        &proxy.url("/"),
        &[("x-custom", "c1"), ("keep-alive", "timeout=5")],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body, "secure upstream c1 127.0.0.1 stable -");
    proxy.stop().await;

    // Without the CA, the upstream's certificate is not trusted: 502.
    let toml = cfg.toml();
    let proxy = start_proxy(&toml).await;
    assert_eq!(get(&client(), &proxy.url("/"), &[]).await.status, 502);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_an_ip_as_sni_costs_no_warning_line() {
    // wrk and many probes put the IP in SNI, which RFC 6066 forbids; rustls logs a WARN per
    // handshake for it, which is the client's business, not an operator's.
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    write_pki(dir.path());
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 0.0;
    let toml = cfg.toml().replace(
        "[admin]",
        "[proxy.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n\n[admin]",
    );
    let config = dir.path().join("canary.toml");
    std::fs::write(&config, toml).unwrap();
    let proxy = spawn_binary(&config, &[]);
    let connect = format!("127.0.0.1:{}", proxy.addr.port());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("openssl")
            .args(["s_client", "-connect", &connect, "-servername", "127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl (Debian package openssl) is needed")
    })
    .await
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("BEGIN CERTIFICATE")
            || String::from_utf8_lossy(&out.stdout).contains("Server certificate"),
        "the handshake happened: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let logs = proxy.logs();
    assert!(
        !logs
            .lines()
            .any(|l| l.contains(" WARN ") && l.contains("rustls")),
        "{logs}"
    );
}
