//! The fleet task: keeps one connection and the latch subscription up, with back-off, and
//! reconciles the latch whenever it (re)connects.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{FutureExt, StreamExt};
use redis::RedisError;

use super::wire::RemoteLatch;
use super::{
    lock, mask_password, Claim, Fleet, LatchHolder, BACKOFF_MAX, BACKOFF_MIN, CONNECT_TIMEOUT,
    RESPONSE_TIMEOUT, WARN_EVERY,
};

impl Fleet {
    /// Keeps the connection and the latch subscription up until `stop`: connects with
    /// back-off, subscribes, then reconciles the latch (ours written back if Redis lost it,
    /// the fleet's adopted if it is ahead), then applies every published change.
    pub async fn run(
        self: Arc<Self>,
        control: Arc<impl LatchHolder>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        let mut backoff = BACKOFF_MIN;
        let mut warned: Option<Instant> = None;
        let shown = mask_password(&self.config.redis);
        loop {
            let attempt = tokio::select! {
                _ = &mut stop => return,
                r = self.subscribe() => r,
            };
            let mut messages = match attempt {
                Ok(m) => m,
                Err(e) => {
                    if warned.is_none_or(|w| w.elapsed() >= WARN_EVERY) {
                        tracing::warn!(redis = %shown, error = %e, retry_in = ?backoff, "fleet: Redis is out of reach; serving and judging alone");
                        warned = Some(Instant::now());
                    }
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
            // A wake-up left from the connection before is not about this one.
            let _ = self.lost.notified().now_or_never();
            self.reconcile(&*control).await;
            tracing::info!(redis = %shown, fleet = %self.config.name, replica = %self.config.replica, "fleet: connected");
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = self.lost.notified() => break,
                    m = messages.next() => match m {
                        Some(msg) => match serde_json::from_slice::<RemoteLatch>(msg.get_payload_bytes()) {
                            Ok(remote) => control.adopt(&remote).await,
                            Err(e) => tracing::warn!(error = %e, "fleet: an unreadable latch message"),
                        },
                        None => break,
                    }
                }
            }
            self.went_down();
            tracing::warn!(redis = %shown, "fleet: lost Redis; serving and judging alone until it is back (the latch stays as it is)");
            control.alone("lost Redis").await;
            warned = Some(Instant::now());
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSubStream, RedisError> {
        let timed_out = || RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        let conn = self.open().await?;
        let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| timed_out())??;
        tokio::time::timeout(RESPONSE_TIMEOUT, pubsub.subscribe(self.keys.channel()))
            .await
            .map_err(|_| timed_out())??;
        *lock(&self.conn) = Some(conn);
        self.up.store(true, Ordering::Release);
        self.metrics.redis_up.set(1);
        Ok(pubsub.into_on_message())
    }

    /// Once, at start, before serving: open a connection just long enough to read the latch.
    pub async fn first_read(&self, control: &impl LatchHolder) {
        match self.open().await {
            Ok(conn) => {
                *lock(&self.conn) = Some(conn);
                self.up.store(true, Ordering::Release);
                self.metrics.redis_up.set(1);
                self.reconcile(control).await;
            }
            Err(e) => {
                tracing::warn!(redis = %mask_password(&self.config.redis), error = %e, "fleet: Redis is out of reach at start; serving and judging alone until it is back");
                control.alone("Redis is out of reach at start").await;
            }
        }
    }

    /// Offers our latch: Redis keeps the higher of the two, and we adopt it if it is theirs.
    pub async fn reconcile(&self, control: &impl LatchHolder) {
        let (version, latch, record) = control.latch_now();
        if let Claim::Lost(remote) = self.claim(&version, latch, &record).await {
            control.adopt(&remote).await;
        } else if latch.rolled_back && self.is_up() {
            tracing::debug!(canary_version = %version, "fleet: our latch is in Redis");
        }
    }
}
