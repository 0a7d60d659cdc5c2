//! The fleet: replicas of one service that share one latch and one judgement through Redis.
//!
//! Redis is a meeting point, never a dependency of serving: every call is bounded by a short
//! timeout, a replica that cannot reach it serves and judges alone, and the latch is
//! grow-only (see `wire::Latch`) so losing Redis can never un-latch a rollback. Each replica
//! keeps its latch in its own state file and writes it back when Redis has forgotten it.

pub mod store;
mod supervise;
mod view;
pub mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
use tokio::sync::Notify;

use crate::config::{mask_password, FleetConfig};
use crate::metrics::FleetMetrics;
use store::{Keys, Offer};
use wire::{Latch, RemoteLatch, ReplicaCard};

/// How long one Redis call may take before the replica goes on alone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A replica that keeps failing to connect says so at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The outcome of offering a latch change to the fleet.
#[derive(Debug)]
pub enum Claim {
    /// Ours was written (or was already there).
    Won,
    /// The fleet held a latch ranking at least as high: it wins.
    Lost(RemoteLatch),
    /// No fleet, or Redis out of reach: the decision stands alone for now.
    Alone,
}

/// The replica's side of the latch, as the fleet task sees it: it reads ours and hands over
/// the fleet's, never holding the control plane itself (which holds the fleet).
pub trait LatchHolder: Send + Sync + 'static {
    /// This replica's canary version, its latch, and its rollback record as JSON (or empty).
    fn latch_now(&self) -> (String, wire::Latch, String);
    /// A latch the fleet holds: applied when it ranks above ours.
    fn adopt(&self, remote: &wire::RemoteLatch) -> impl std::future::Future<Output = ()> + Send;
    /// Redis went out of reach (told once per outage).
    fn alone(&self, why: &str) -> impl std::future::Future<Output = ()> + Send;
}

pub struct Fleet {
    pub config: FleetConfig,
    keys: Keys,
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    up: AtomicBool,
    lost: Notify,
    metrics: FleetMetrics,
    cards: Mutex<Vec<ReplicaCard>>,
    /// The disagreement last logged, so each is logged once.
    logged: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn connection_info(config: &FleetConfig) -> Result<redis::ConnectionInfo, RedisError> {
    use redis::IntoConnectionInfo;
    let info = config.redis.as_str().into_connection_info()?;
    Ok(match &config.password {
        Some(pw) => {
            let settings = info.redis_settings().clone().set_password(pw);
            info.set_redis_settings(settings)
        }
        None => info,
    })
}

fn broken(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

fn client(config: &FleetConfig) -> Result<redis::Client, String> {
    if config.redis.starts_with("rediss://") {
        // redis-rs takes rustls' process-wide provider; ours is ring (see tls.rs).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let info = connection_info(config).map_err(|e| format!("fleet.redis: {e}"))?;
    match &config.redis_ca_file {
        None => redis::Client::open(info).map_err(|e| format!("fleet.redis: {e}")),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                format!("fleet.redis_ca_file: cannot read {} ({e})", path.display())
            })?;
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(info, certs)
                .map_err(|e| format!("fleet.redis_ca_file: {} ({e})", path.display()))
        }
    }
}

impl Fleet {
    pub fn new(config: FleetConfig, metrics: FleetMetrics) -> Result<Self, String> {
        let client = client(&config)?;
        metrics.redis_up.set(0);
        Ok(Fleet {
            keys: Keys::new(&config.name),
            config,
            client,
            conn: Mutex::new(None),
            up: AtomicBool::new(false),
            lost: Notify::new(),
            metrics,
            cards: Mutex::new(Vec::new()),
            logged: Mutex::new(None),
        })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn metrics(&self) -> &FleetMetrics {
        &self.metrics
    }

    fn conn(&self) -> Option<MultiplexedConnection> {
        lock(&self.conn).clone()
    }

    /// Runs one Redis call on the shared connection; a broken connection wakes the supervisor.
    async fn call<T, F>(&self, f: impl FnOnce(MultiplexedConnection) -> F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn()?;
        match f(conn).await {
            Ok(v) => Some(v),
            Err(e) => {
                if broken(&e) {
                    self.mark_down();
                } else {
                    tracing::warn!(error = %e, "fleet: a Redis call failed");
                }
                None
            }
        }
    }

    /// A call found the connection broken: tell the supervisor to reconnect.
    fn mark_down(&self) {
        if lock(&self.conn).take().is_some() {
            self.lost.notify_one();
        }
        self.went_down();
    }

    fn went_down(&self) {
        lock(&self.conn).take();
        self.up.store(false, Ordering::Release);
        self.metrics.redis_up.set(0);
        self.metrics.replicas.set(1);
    }

    async fn open(&self) -> Result<MultiplexedConnection, RedisError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
    }

    /// Offers a latch change; the fleet's answer says whose decision stands.
    pub async fn claim(&self, version: &str, latch: Latch, record: &str) -> Claim {
        let offer = Offer {
            version,
            latch,
            record,
            by: &self.config.replica,
            at_ms: now_ms(),
        };
        let (keys, offer) = (&self.keys, &offer);
        let merged = self
            .call(|mut c| async move { store::merge(&mut c, keys, offer).await })
            .await;
        match merged {
            None => Claim::Alone,
            Some((true, _)) => Claim::Won,
            Some((false, remote)) if remote.latch() == latch && remote.by == offer.by => Claim::Won,
            Some((false, remote)) => Claim::Lost(remote),
        }
    }

    /// Offers our rollout step (and a pause change); the fleet's, or `None` without Redis.
    pub async fn offer_step(
        &self,
        version: &str,
        offer: &wire::StepWire,
        pause: wire::PauseOp<'_>,
    ) -> Option<wire::StepWire> {
        let keys = &self.keys;
        self.call(|mut c| async move { store::step(&mut c, keys, version, offer, pause).await })
            .await
    }

    /// Publishes this replica's slice `k` and returns the others' (by replica name).
    pub async fn exchange_slice(
        &self,
        at: (&str, u64, u64),
        mine: &wire::SliceWire,
        grace: Duration,
    ) -> Option<Vec<(String, wire::SliceWire)>> {
        let payload = serde_json::to_string(mine).expect("a slice serialises");
        // Slices are read once, `grace` after their end; the TTL only clears them away.
        let ttl = Duration::from_millis(at.1 * 10).max(Duration::from_secs(10));
        let (keys, me) = (&self.keys, self.config.replica.as_str());
        self.call(
            |mut c| async move { store::push_slice(&mut c, keys, at, me, &payload, ttl).await },
        )
        .await?;
        tokio::time::sleep(grace).await;
        let all = self
            .call(|mut c| async move { store::read_slices(&mut c, keys, at).await })
            .await?;
        Some(
            all.into_iter()
                .filter(|(r, _)| r != me)
                .filter_map(|(r, text)| serde_json::from_str(&text).ok().map(|w| (r, w)))
                .collect(),
        )
    }

    /// Renews our card (alive for three slices) and refreshes the fleet view.
    pub async fn heartbeat(&self, card: &ReplicaCard, every: Duration) {
        let text = serde_json::to_string(card).expect("a card serialises");
        let ttl = (every * 3).max(Duration::from_secs(3));
        let (keys, me) = (&self.keys, self.config.replica.as_str());
        let got = self
            .call(|mut c| async move { store::heartbeat(&mut c, keys, me, &text, ttl).await })
            .await;
        if let Some(texts) = got {
            let mut cards: Vec<ReplicaCard> = texts
                .iter()
                .filter_map(|t| serde_json::from_str(t).ok())
                .collect();
            cards.sort_by(|a, b| a.replica.cmp(&b.replica));
            self.metrics.replicas.set(cards.len().max(1) as i64);
            // Logged once it holds for two slices: a rollback spreading is a disagreement of
            // a few milliseconds, not news.
            let before = view::disagreement(&lock(&self.cards));
            let now = view::disagreement(&cards);
            let mut logged = lock(&self.logged);
            if now.is_some() && now == before && *logged != now {
                tracing::warn!(
                    warning = now.as_deref().unwrap_or(""),
                    "fleet: replicas disagree"
                );
            }
            if now.is_none() || now == before {
                *logged = now;
            }
            *lock(&self.cards) = cards;
        }
    }

    /// At a clean stop: leave the fleet view now (a killed replica's card expires instead).
    pub async fn leave(&self) {
        let (keys, me) = (&self.keys, self.config.replica.as_str());
        self.call(|mut c| async move { store::leave(&mut c, keys, me).await })
            .await;
    }
}
