//! One worker's idle upstream connections for the direct path, and where a connection goes
//! back once its response body ended cleanly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::uri::Authority;

use super::UpstreamConn;

/// Idle connections kept per endpoint and worker, as hyper's pool was configured.
const MAX_IDLE: usize = 1024;
/// A pooled connection's read buffer is dropped when it grew past this (large bodies).
const KEEP_BUF: usize = 16 * 1024;

/// One endpoint's idle connections, each with when it idles out (compared, not subtracted:
/// a `Duration` from two instants is checked arithmetic, several times per request).
type Idle = Vec<(UpstreamConn, Instant)>;

/// One worker's idle upstream connections, a slot per endpoint authority ever used (never
/// removed, so an exchange finds its way back by index); newest last.
pub struct IdleSet {
    slots: Mutex<Vec<(Authority, Idle)>>,
    /// `timeouts.idle`: a connection unused this long is closed rather than reused.
    timeout: Duration,
}

impl IdleSet {
    pub fn new(timeout: Duration) -> Self {
        IdleSet {
            slots: Mutex::new(Vec::new()),
            // Bounded so that an instant plus it cannot overflow.
            timeout: timeout.min(Duration::from_secs(100 * 365 * 86_400)),
        }
    }

    /// The newest idle connection to `authority`, if one is fresh, and the endpoint's slot (where
    /// the connection goes back: slots are never removed, so the index stays good).
    /// `now`: the exchange's start (one clock read per request serves all of its timing).
    pub fn checkout(&self, authority: &Authority, now: Instant) -> (Option<UpstreamConn>, usize) {
        let Ok(mut slots) = self.slots.lock() else {
            return (None, usize::MAX);
        };
        // Exact bytes: `Authority`'s own `==` ignores case, a byte at a time, on every request;
        // the same endpoint is always spelled the same (it comes from the config).
        let slot = match slots
            .iter()
            .position(|(a, _)| a.as_str() == authority.as_str())
        {
            Some(i) => i,
            None => {
                slots.push((authority.clone(), Vec::new()));
                slots.len() - 1
            }
        };
        let conns = &mut slots[slot].1;
        let Some((conn, expires)) = conns.pop() else {
            return (None, slot);
        };
        if now >= expires {
            // The newest is stale, so are the older ones.
            conns.clear();
            return (None, slot);
        }
        (Some(conn), slot)
    }

    /// `now`: when the exchange that used `conn` started, early by its duration: an idle
    /// connection is closed a little early rather than late.
    fn checkin(&self, slot: usize, mut conn: UpstreamConn, now: Instant) {
        if conn.buf.is_empty() {
            // An idle connection holds no read buffer (`bufpool`).
            crate::http::bufpool::put(std::mem::take(&mut conn.buf));
        } else if conn.buf.capacity() > KEEP_BUF {
            conn.buf = BytesMut::new();
        }
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        // Close what has idled out, oldest first, here rather than on a timer.
        for (_, conns) in slots.iter_mut() {
            let stale = conns
                .iter()
                .take_while(|(_, expires)| now >= *expires)
                .count();
            conns.drain(..stale);
        }
        if let Some((_, conns)) = slots.get_mut(slot) {
            if conns.len() < MAX_IDLE {
                conns.push((conn, now + self.timeout));
            }
        }
    }
}

/// Where a connection goes back once its response body ended cleanly.
pub struct Home {
    idle: Arc<IdleSet>,
    /// The endpoint's slot in the idle set.
    slot: usize,
    started: Instant,
}

impl Home {
    pub fn new(idle: Arc<IdleSet>, slot: usize, started: Instant) -> Self {
        Home {
            idle,
            slot,
            started,
        }
    }

    pub fn put(self, conn: UpstreamConn) {
        self.idle.checkin(self.slot, conn, self.started);
    }
}
