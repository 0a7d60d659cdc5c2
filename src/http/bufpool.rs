//! Read buffers shared by one worker's connections, in two sizes. An upstream connection takes
//! a full-sized one once its answer is there and gives it back when it idles, so neither an
//! idle connection nor one waiting for its answer costs a buffer. A client connection reads its
//! request's first bytes onto the stack and keeps them in a small one ([`first`]): the head
//! shares it for the whole exchange, and a full-sized buffer per request in flight was a
//! third of the proxy's memory at a thousand connections (`benches/load/idle.sh`, and at
//! 1,000 connections in flight: docs/PERFORMANCE.md).

use std::cell::RefCell;
use std::thread::LocalKey;

use bytes::BytesMut;

/// A fresh buffer's size, as hyper's: most heads fit in one read.
pub const SIZE: usize = 8 * 1024;
/// A request's first buffer: a head and a small body, and [`FIRST_ROOM`] more.
const FIRST: usize = 3 * 1024;
/// The room a request's first buffer keeps beyond its first read: the answer's wait notices a
/// hang-up in it and takes a pipelined head's start.
const FIRST_ROOM: usize = 512;
/// Free buffers kept per worker and size: after a burst, the rest go back to the allocator.
const KEEP: usize = 64;

type Free = RefCell<Vec<BytesMut>>;

/// A write buffer kept in the pool at most this large: heads and small answers gathered.
const WRITE_KEEP: usize = 16 * 1024;

thread_local! {
    static FREE: Free = const { RefCell::new(Vec::new()) };
    static FREE_FIRST: Free = const { RefCell::new(Vec::new()) };
    static FREE_WRITE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A pooled buffer of `size`, its room taken back in place if the heads split off it are gone.
fn pop(pool: &'static LocalKey<Free>, size: usize, least: usize) -> BytesMut {
    let mut buf = pool
        .with(|free| free.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(size));
    if buf.capacity() < least {
        buf.reserve(size);
    }
    buf
}

fn push(pool: &'static LocalKey<Free>, size: usize, buf: BytesMut) {
    if !buf.is_empty() || buf.capacity() == 0 || buf.capacity() > 2 * size {
        return;
    }
    pool.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP {
            free.push(buf);
        }
    });
}

/// A buffer with room for at least 1 KiB.
pub fn take() -> BytesMut {
    pop(&FREE, SIZE, 1024)
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
    push(&FREE, SIZE, buf)
}

/// A client request's first buffer, holding `got` (its first read): a small pooled one, or
/// one of its own for a read too large for that.
pub fn first(got: &[u8]) -> BytesMut {
    let least = got.len() + FIRST_ROOM;
    let mut buf = if least <= FIRST {
        pop(&FREE_FIRST, FIRST, least)
    } else {
        BytesMut::with_capacity(least)
    };
    buf.extend_from_slice(got);
    buf
}

/// Gives back a client's buffer once its requests are over (empty); a large one is dropped.
pub fn put_first(buf: BytesMut) {
    push(&FREE_FIRST, FIRST, buf)
}

/// A buffer to gather a head (and a small answer) in before it is written, empty. Taken per
/// write and given back when it is done, not kept per connection: with a thousand connections,
/// a buffer of each connection's own was cold in the cache at every request (one most recently
/// used, from here, is not), and memory a connection held between requests.
pub fn take_write() -> Vec<u8> {
    FREE_WRITE
        .with(|free| free.borrow_mut().pop())
        .unwrap_or_default()
}

/// Gives back a write buffer (emptied here); one grown large is dropped.
pub fn put_write(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > WRITE_KEEP {
        return;
    }
    buf.clear();
    FREE_WRITE.with(|free| {
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
    fn a_write_buffer_comes_back_empty_and_the_same_and_a_large_one_is_dropped() {
        let mut buf = take_write();
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let at = buf.as_ptr();
        put_write(buf);
        let again = take_write();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at, "the most recently used one");
        put_write(again);
        let before = FREE_WRITE.with(|f| f.borrow().len());
        put_write(Vec::with_capacity(WRITE_KEEP * 2));
        assert_eq!(FREE_WRITE.with(|f| f.borrow().len()), before);
    }

    #[test]
    fn at_most_keep_buffers_are_kept() {
        for _ in 0..KEEP + 10 {
            put(BytesMut::with_capacity(SIZE));
        }
        assert_eq!(free(), KEEP);
    }

    #[test]
    fn a_first_buffer_is_small_pooled_and_its_room_comes_back_once_its_head_is_gone() {
        let mut buf = first(b"GET / HTTP/1.1\r\n\r\n");
        assert!(buf.capacity() - buf.len() >= FIRST_ROOM);
        assert!(buf.capacity() <= FIRST, "not a full-sized buffer");
        let at = buf.as_ptr();
        let head = buf.split().freeze();
        put_first(buf);
        drop(head);
        let again = first(&[b'x'; FIRST - FIRST_ROOM]);
        assert_eq!(again.as_ptr(), at, "the same buffer, reclaimed in place");
        let large = first(&[b'x'; FIRST]);
        assert!(large.capacity() - large.len() >= FIRST_ROOM);
        put_first(large);
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
