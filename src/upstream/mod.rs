//! Pools of upstream endpoints: round-robin choice with passive health (an endpoint that
//! refuses connections is skipped for a back-off of 5 s doubling to 60 s), and the pooled
//! keep-alive client that talks to them.

pub mod body;
pub mod direct;
pub mod error;
pub mod h2;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use http::HeaderValue;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::cohort::Cohort;
use crate::config::{EndpointConfig, Timeouts};
use crate::metrics::CohortMetrics;
use body::UpstreamBody;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

const BACKOFF_FIRST: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The pooled client shared by every pool: keep-alive per endpoint, `TCP_NODELAY`, the
/// connect timeout, and the idle timeout of `timeouts.idle`.
/// HTTP/1.1 only: gRPC has its own client (`h2`).
pub fn client(timeouts: &Timeouts, tls: rustls::ClientConfig) -> UpstreamClient {
    let connector = tcp_connector(timeouts);
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let connector = builder.enable_http1().wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(timeouts.idle)
        .pool_max_idle_per_host(1024)
        // hyper grows a read buffer up to ~400 KiB per connection on large bodies; bounded
        // here, since bodies stream through in frames anyway.
        .http1_max_buf_size(64 * 1024)
        .build(connector)
}

/// TCP for both hyper-based clients: `TCP_NODELAY`, the connect timeout, keep-alive probes;
/// the scheme is left to the TLS layer around it.
fn tcp_connector(timeouts: &Timeouts) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(timeouts.connect));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.enforce_http(false);
    connector
}

pub struct Endpoint {
    pub config: EndpointConfig,
    /// Milliseconds since the pool's epoch before which this endpoint is skipped.
    skip_until_ms: AtomicU64,
    failures: AtomicU32,
}

impl Endpoint {
    pub fn url(&self) -> &str {
        &self.config.url
    }
}

/// One cohort's endpoints and what it answers with.
pub struct Pool {
    pub cohort: Cohort,
    pub version: String,
    pub version_header: HeaderValue,
    /// `X-Deployment-Cohort` and `X-Deployment-Version` as header lines, for answers whose head
    /// is written as it came (`direct::RawHead`).
    pub exposed_lines: bytes::Bytes,
    pub endpoints: Box<[Endpoint]>,
    pub metrics: CohortMetrics,
    next: AtomicUsize,
    epoch: Instant,
}

impl Pool {
    pub fn new(
        cohort: Cohort,
        version: &str,
        endpoints: &[EndpointConfig],
        metrics: CohortMetrics,
    ) -> Self {
        let version_header =
            HeaderValue::from_str(version).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        let mut exposed_lines = Vec::new();
        for (name, value) in [
            (
                crate::http::headers::X_DEPLOYMENT_COHORT.as_str(),
                cohort.as_str().as_bytes(),
            ),
            (
                crate::http::headers::X_DEPLOYMENT_VERSION.as_str(),
                version_header.as_bytes(),
            ),
        ] {
            exposed_lines.extend_from_slice(name.as_bytes());
            exposed_lines.extend_from_slice(b": ");
            exposed_lines.extend_from_slice(value);
            exposed_lines.extend_from_slice(b"\r\n");
        }
        Pool {
            cohort,
            version: version.to_string(),
            version_header,
            exposed_lines: exposed_lines.into(),
            endpoints: endpoints
                .iter()
                .map(|c| Endpoint {
                    config: c.clone(),
                    skip_until_ms: AtomicU64::new(0),
                    failures: AtomicU32::new(0),
                })
                .collect(),
            metrics,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The next endpoint in turn that is not backing off, other than `not`. When every
    /// candidate is backing off, the next in turn anyway: a pool is never empty by choice.
    pub fn pick(&self, not: Option<usize>) -> usize {
        let n = self.endpoints.len();
        if n == 1 {
            return 0;
        }
        let start = self.next.fetch_add(1, Relaxed);
        let now = self.now_ms();
        let mut fallback = None;
        for k in 0..n {
            let i = (start + k) % n;
            if Some(i) == not {
                continue;
            }
            if self.endpoints[i].skip_until_ms.load(Relaxed) <= now {
                return i;
            }
            fallback.get_or_insert(i);
        }
        fallback.unwrap_or(start % n)
    }

    /// A refused connect: skip the endpoint for a back-off that doubles while it keeps failing.
    pub fn mark_failed(&self, i: usize) {
        let e = &self.endpoints[i];
        let failures = e.failures.fetch_add(1, Relaxed).min(8);
        let backoff = BACKOFF_FIRST.saturating_mul(1 << failures).min(BACKOFF_MAX);
        e.skip_until_ms
            .store(self.now_ms() + backoff.as_millis() as u64, Relaxed);
    }

    /// A connect that worked: the endpoint is healthy again. Reads before writing, so the
    /// common case touches no shared cache line.
    pub fn mark_ok(&self, i: usize) {
        let e = &self.endpoints[i];
        if e.failures.load(Relaxed) != 0 {
            e.failures.store(0, Relaxed);
            e.skip_until_ms.store(0, Relaxed);
        }
    }

    /// Whether endpoint `i` is now skipped.
    pub fn is_backing_off(&self, i: usize) -> bool {
        self.endpoints[i].skip_until_ms.load(Relaxed) > self.now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Pool {
        let eps: Vec<EndpointConfig> = (0..n)
            .map(|i| EndpointConfig::parse(&format!("http://127.0.0.1:{}", 9000 + i)).unwrap())
            .collect();
        let m = crate::metrics::Metrics::new();
        Pool::new(Cohort::Stable, "v1", &eps, m.cohort("stable", "v1"))
    }

    #[test]
    fn round_robin_skips_failed_endpoints_until_every_one_failed() {
        let p = pool(3);
        let picks: Vec<usize> = (0..6).map(|_| p.pick(None)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        p.mark_failed(1);
        assert!(p.is_backing_off(1));
        let picks: Vec<usize> = (0..6).map(|_| p.pick(None)).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        p.mark_failed(0);
        p.mark_failed(2);
        let picks: Vec<usize> = (0..3).map(|_| p.pick(None)).collect();
        assert_eq!(picks.len(), 3, "all skipped: tried anyway");
        p.mark_ok(1);
        assert!(!p.is_backing_off(1));
        assert_eq!(p.pick(None), 1);
    }

    #[test]
    fn a_retry_goes_to_another_endpoint() {
        let p = pool(2);
        for _ in 0..4 {
            assert_eq!(p.pick(Some(0)), 1);
            assert_eq!(p.pick(Some(1)), 0);
        }
    }
}
