//! Memory back to the system after a burst of connections. Each connection's task, buffers
//! and upstream connection are freed when it closes, but glibc's allocator keeps the freed
//! pages for reuse: after a burst of connections came and went the process stayed at its
//! peak until the next burst reused it. Once the open connections have fallen to half a
//! recent peak (and by at least `MIN_DROP`), the free pages are handed back (`malloc_trim`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// A fall of fewer connections than this is not worth a trim (a few hundred kilobytes).
const MIN_DROP: usize = 256;
/// How often the open connections are counted (one atomic load).
const EVERY: Duration = Duration::from_secs(1);

/// The open connections' recent peak: when a trim is due.
#[derive(Debug, Default)]
pub struct Burst {
    peak: usize,
}

impl Burst {
    /// Counts `open` connections; true when the burst is over and a trim is due (the peak then
    /// starts again from `open`).
    pub fn sample(&mut self, open: usize) -> bool {
        self.peak = self.peak.max(open);
        if self.peak >= open + MIN_DROP && open <= self.peak / 2 {
            self.peak = open;
            return true;
        }
        false
    }
}

/// Watches the proxy's open connections (`slots` holds `max` permits, one per connection)
/// until `stop`, trimming after each burst.
pub async fn return_after_bursts(
    slots: Arc<Semaphore>,
    max: usize,
    stop: impl Future<Output = ()>,
) {
    let mut burst = Burst::default();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let open = max.saturating_sub(slots.available_permits());
        if burst.sample(open) {
            tracing::debug!(open, "connection burst over: returning free memory");
            // It walks the allocator's arenas: not on the runtime's thread.
            tokio::task::spawn_blocking(crate::sys::malloc_trim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_trimmed_once_it_has_fallen_to_half_its_peak() {
        let mut b = Burst::default();
        for open in [10, 400, 1000, 900, 600] {
            assert!(!b.sample(open), "{open} is more than half the peak");
        }
        assert!(b.sample(500), "half of 1,000");
        // The peak starts again: a quiet proxy is not trimmed every second.
        for open in [500, 400, 300, 260] {
            assert!(
                !b.sample(open),
                "{open}: less than {MIN_DROP} below the new peak"
            );
        }
        assert!(b.sample(200), "300 below 500, and under half of it");
    }

    #[test]
    fn small_numbers_never_trim() {
        let mut b = Burst::default();
        for open in [0, 200, 10, 255, 0, 100, 0] {
            assert!(!b.sample(open), "{open}");
        }
    }
}
