//! Read buffers shared by one worker's connections. A connection holds a buffer while it has
//! something in hand (a request being read or answered, an upstream answer being read), and
//! gives it back while it idles, so idle keep-alive connections, client or upstream, cost no
//! buffer each (measured with `benches/load/idle.sh`: docs/PERFORMANCE.md).

use std::cell::RefCell;

use bytes::BytesMut;

/// A fresh buffer's size, as hyper's: most heads fit in one read.
pub const SIZE: usize = 8 * 1024;
/// Free buffers kept per worker: after a burst, the rest go back to the allocator.
const KEEP: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A buffer with room for at least 1 KiB.
pub fn take() -> BytesMut {
    let mut buf = FREE
        .with(|free| free.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(SIZE));
    if buf.capacity() < 1024 {
        // Its room went to heads split off it; if they are gone, this takes it back in place.
        buf.reserve(SIZE);
    }
    buf
}

/// Room for a read of at least 1 KiB: a buffer from the pool if `buf` has none (its connection
/// idled without one), else more room.
pub fn make_room(buf: &mut BytesMut) {
    if buf.capacity() == 0 {
        *buf = take();
    } else if buf.capacity() - buf.len() < 1024 {
        buf.reserve(SIZE);
    }
}

/// Gives back an empty buffer; one still holding bytes, or one grown large, is dropped.
pub fn put(buf: BytesMut) {
    if !buf.is_empty() || buf.capacity() == 0 || buf.capacity() > 2 * SIZE {
        return;
    }
    FREE.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP {
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_without_a_new_allocation() {
        let buf = take();
        let at = buf.as_ptr();
        put(buf);
        let again = take();
        assert_eq!(again.as_ptr(), at);
        assert!(again.capacity() >= 1024);
    }

    fn free() -> usize {
        FREE.with(|free| free.borrow().len())
    }

    #[test]
    fn a_buffer_with_bytes_in_it_or_grown_large_is_not_kept() {
        let before = free();
        let mut buf = take();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        put(buf);
        assert_eq!(free(), before);
        put(BytesMut::with_capacity(4 * SIZE));
        assert_eq!(free(), before);
        put(BytesMut::with_capacity(SIZE));
        assert_eq!(free(), before + 1);
    }

    #[test]
    fn make_room_lends_a_pooled_buffer_to_an_empty_one_and_grows_a_full_one() {
        let pooled = take();
        let at = pooled.as_ptr();
        put(pooled);
        let mut idle = BytesMut::new();
        make_room(&mut idle);
        assert_eq!(idle.as_ptr(), at, "the pooled buffer, not a new one");
        let mut full = BytesMut::with_capacity(1100);
        full.extend_from_slice(&[b'x'; 1000]);
        make_room(&mut full);
        assert!(full.capacity() - full.len() >= 1024);
        assert_eq!(&full[..], &[b'x'; 1000][..]);
    }

    #[test]
    fn at_most_keep_buffers_are_kept() {
        for _ in 0..KEEP + 10 {
            put(BytesMut::with_capacity(SIZE));
        }
        assert_eq!(free(), KEEP);
    }

    #[test]
    fn room_split_off_comes_back_once_the_heads_are_gone() {
        let mut buf = take();
        let at = buf.as_ptr();
        buf.extend_from_slice(&[b'x'; SIZE - 100]);
        let head = buf.split().freeze();
        drop(head);
        put(buf);
        let again = take();
        assert!(again.capacity() >= 1024);
        assert_eq!(again.as_ptr(), at, "reclaimed in place");
    }
}
