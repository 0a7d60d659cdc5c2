//! The fleet's keys in Redis and the few commands on them. Every key starts with
//! `canary-proxy:{name}:` so several services can share one Redis.
//!
//! - `latch:{version}` (hash, 30 days after its last use): the grow-only latch; changed only by
//!   `MERGE` below.
//! - `latch` (channel): every change of a latch, as `RemoteLatch` JSON.
//! - `slices:{version}:{every_ms}:{k}` (hash, TTL): replica -> `SliceWire` for wall-clock slice k.
//! - `replica:{replica}` (string, TTL): that replica's `ReplicaCard`; `replicas` (set) names them.
//! - `rollout:{version}` (hash, 30 days after its last use): the rollout's step, grow-only within
//!   a latch generation (a resume starts a higher one), and the fleet-wide pause; changed only
//!   by `STEP` below.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, RedisResult, Script};

use super::wire::{Latch, PauseOp, RemoteLatch, StepWire};

/// Sets the latch only if the offered one ranks higher, and publishes the change; returns
/// whether it did and the latch as it now stands. One script, so two replicas deciding at
/// once leave one record: the first write wins, the second reads it back.
const MERGE: &str = r#"
local g = tonumber(ARGV[1])
local l = tonumber(ARGV[2])
local cur = redis.call('HMGET', KEYS[1], 'generation', 'rolled_back')
local cg = tonumber(cur[1] or '-1')
local cl = tonumber(cur[2] or '0')
local won = 0
if g > cg or (g == cg and l > cl) then
  redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'rolled_back', ARGV[2],
    'record', ARGV[3], 'by', ARGV[4], 'at_ms', ARGV[5])
  won = 1
end
-- Offered every slice by every replica, so a version still in use never expires; one retired
-- a month ago goes (and would be written back, were it ever used again).
redis.call('PEXPIRE', KEYS[1], 2592000000)
local h = redis.call('HMGET', KEYS[1], 'generation', 'rolled_back', 'record', 'by', 'at_ms')
local msg = cjson.encode({version = ARGV[6], generation = tonumber(h[1]),
  rolled_back = tonumber(h[2]) == 1, record = h[3] or '', by = h[4] or '', at_ms = h[5] or ''})
if won == 1 then
  redis.call('PUBLISH', KEYS[2], msg)
end
return {won, msg}
"#;

/// Raises the rollout's step only: (generation, step) must rank higher to be written, and a
/// higher step clears the pause (a promotion clears it). `ARGV[5]` sets or clears the pause at
/// the step that stands ("keep" leaves it); a clear (`continue`) also says when, so a step
/// held by `max_bake` gets its new `max_bake` on every replica. Returns the rollout as it now
/// stands.
const STEP: &str = r#"
local g = tonumber(ARGV[1])
local s = tonumber(ARGV[2])
local cur = redis.call('HMGET', KEYS[1], 'generation', 'step')
local cg = tonumber(cur[1] or '-1')
local cs = tonumber(cur[2] or '-1')
if g > cg or (g == cg and s > cs) then
  redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'step', ARGV[2], 'since_ms', ARGV[3],
    'by', ARGV[4])
  redis.call('HDEL', KEYS[1], 'paused', 'continued_ms')
end
local h = redis.call('HMGET', KEYS[1], 'generation', 'step')
if tonumber(h[1]) == g and tonumber(h[2]) == s then
  if ARGV[5] == 'set' then
    redis.call('HSET', KEYS[1], 'paused', ARGV[6])
  elseif ARGV[5] == 'clear' then
    redis.call('HDEL', KEYS[1], 'paused')
    redis.call('HSET', KEYS[1], 'continued_ms', ARGV[7])
  end
end
redis.call('PEXPIRE', KEYS[1], 2592000000)
local r = redis.call('HMGET', KEYS[1], 'generation', 'step', 'since_ms', 'by', 'paused',
  'continued_ms')
return {r[1], r[2], r[3] or '0', r[4] or '', r[5] or '', r[6] or '0'}
"#;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(name: &str) -> Self {
        Keys {
            prefix: format!("canary-proxy:{name}"),
        }
    }

    pub fn channel(&self) -> String {
        format!("{}:latch", self.prefix)
    }

    fn latch(&self, version: &str) -> String {
        format!("{}:latch:{version}", self.prefix)
    }

    fn rollout(&self, version: &str) -> String {
        format!("{}:rollout:{version}", self.prefix)
    }

    fn slices(&self, version: &str, every_ms: u64, k: u64) -> String {
        format!("{}:slices:{version}:{every_ms}:{k}", self.prefix)
    }

    fn replica(&self, replica: &str) -> String {
        format!("{}:replica:{replica}", self.prefix)
    }

    fn replicas(&self) -> String {
        format!("{}:replicas", self.prefix)
    }
}

/// What one write of the latch offers.
pub struct Offer<'a> {
    pub version: &'a str,
    pub latch: Latch,
    pub record: &'a str,
    pub by: &'a str,
    pub at_ms: u64,
}

pub async fn merge(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    offer: &Offer<'_>,
) -> RedisResult<(bool, RemoteLatch)> {
    let (won, msg): (i64, String) = Script::new(MERGE)
        .key(keys.latch(offer.version))
        .key(keys.channel())
        .arg(offer.latch.generation)
        .arg(offer.latch.rolled_back as u8)
        .arg(offer.record)
        .arg(offer.by)
        .arg(offer.at_ms)
        .arg(offer.version)
        .invoke_async(conn)
        .await?;
    let remote = serde_json::from_str(&msg).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::Parse,
            "the fleet's latch is not readable",
            e.to_string(),
        ))
    })?;
    Ok((won == 1, remote))
}

/// Offers this replica's rollout step (and a pause change); the rollout as the fleet holds it.
pub async fn step(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    version: &str,
    offer: &StepWire,
    pause: PauseOp<'_>,
) -> RedisResult<StepWire> {
    let (op, text, at) = match pause {
        PauseOp::Keep => ("keep", "", 0),
        PauseOp::Set(why) => ("set", why, 0),
        PauseOp::Clear(at_ms) => ("clear", "", at_ms),
    };
    let (g, s, since, by, paused, continued): (String, String, String, String, String, String) =
        Script::new(STEP)
            .key(keys.rollout(version))
            .arg(offer.generation)
            .arg(offer.step)
            .arg(offer.since_ms)
            .arg(&offer.by)
            .arg(op)
            .arg(text)
            .arg(at)
            .invoke_async(conn)
            .await?;
    let num = |t: &str| t.parse::<u64>().unwrap_or(0);
    Ok(StepWire {
        generation: num(&g),
        step: num(&s) as usize,
        since_ms: num(&since),
        by,
        paused: (!paused.is_empty()).then_some(paused),
        continued_ms: num(&continued),
    })
}

pub async fn push_slice(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    (version, every_ms, k): (&str, u64, u64),
    replica: &str,
    payload: &str,
    ttl: Duration,
) -> RedisResult<()> {
    let key = keys.slices(version, every_ms, k);
    redis::pipe()
        .atomic()
        .hset(&key, replica, payload)
        .ignore()
        .pexpire(&key, ttl.as_millis() as i64)
        .ignore()
        .query_async(conn)
        .await
}

pub async fn read_slices(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    (version, every_ms, k): (&str, u64, u64),
) -> RedisResult<HashMap<String, String>> {
    conn.hgetall(keys.slices(version, every_ms, k)).await
}

/// A replica that stops cleanly takes its card away at once rather than letting it expire.
pub async fn leave(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    replica: &str,
) -> RedisResult<()> {
    redis::pipe()
        .atomic()
        .del(keys.replica(replica))
        .ignore()
        .srem(keys.replicas(), replica)
        .ignore()
        .query_async(conn)
        .await
}

/// Renews this replica's card and returns every live replica's (a card expires with its TTL,
/// so a killed replica leaves the view on its own).
pub async fn heartbeat(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    replica: &str,
    card: &str,
    ttl: Duration,
) -> RedisResult<Vec<String>> {
    let ttl_ms = ttl.as_millis() as i64;
    let (names,): (Vec<String>,) = redis::pipe()
        .atomic()
        .pset_ex(keys.replica(replica), card, ttl_ms as u64)
        .ignore()
        .sadd(keys.replicas(), replica)
        .ignore()
        .pexpire(keys.replicas(), ttl_ms * 20)
        .ignore()
        .smembers(keys.replicas())
        .query_async(conn)
        .await?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let card_keys: Vec<String> = names.iter().map(|n| keys.replica(n)).collect();
    let cards: Vec<Option<String>> = redis::cmd("MGET").arg(&card_keys).query_async(conn).await?;
    let gone: Vec<&String> = names
        .iter()
        .zip(&cards)
        .filter(|(_, c)| c.is_none())
        .map(|(n, _)| n)
        .collect();
    if !gone.is_empty() {
        let _: RedisResult<()> = conn.srem(keys.replicas(), gone).await;
    }
    Ok(cards.into_iter().flatten().collect())
}
