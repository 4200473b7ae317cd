//! Worker-local free lists: byte buffers, response read buffers whose pieces are handed
//! on as `Bytes` (kept until those are gone), and header maps. Requests borrow them for
//! their duration and give them back, so steady traffic does no large allocations and
//! idle connections hold none. Thread-local: workers are single-threaded runtimes, so the
//! list is never shared (on other runtimes it merely becomes per-thread).

use std::cell::RefCell;

use bytes::BytesMut;
use http::HeaderMap;

/// Read buffers: one socket read of a body, and room for most request heads.
pub const READ_SIZE: usize = 16 * 1024;
/// Heads we write.
const SMALL_SIZE: usize = 1024;
/// Buffers that grew past this (a huge head) are freed, not kept.
const MAX_KEPT: usize = 128 * 1024;
const MAX_FREE: usize = 512;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static FREE_SMALL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static FREE_SHARED: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static FREE_MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with at least [`READ_SIZE`] capacity.
pub fn take() -> Vec<u8> {
    FREE.with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Vec::with_capacity(READ_SIZE))
}

/// An empty buffer for writing a head.
pub fn take_small() -> Vec<u8> {
    FREE_SMALL
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Vec::with_capacity(SMALL_SIZE))
}

/// Returns a buffer to the free list it fits.
pub fn give(mut buf: Vec<u8>) {
    let cap = buf.capacity();
    if !(SMALL_SIZE..=MAX_KEPT).contains(&cap) {
        return;
    }
    buf.clear();
    let list = if cap >= READ_SIZE { &FREE } else { &FREE_SMALL };
    list.with_borrow_mut(|l| {
        if l.len() < MAX_FREE {
            l.push(buf);
        }
    });
}

/// An empty buffer with room for `size` bytes whose contents are handed on as `Bytes`
/// (an upstream response read by the engine's client): a given-back one whose handed-on
/// pieces are all dropped by now (its storage is then reclaimed whole), else a new one.
/// A burst of responses otherwise allocates and frees as many read buffers at once.
pub fn take_shared(size: usize) -> BytesMut {
    FREE_SHARED
        .with_borrow_mut(|l| {
            while let Some(mut buf) = l.pop() {
                buf.clear();
                // Fails while a piece handed on is still alive: that storage is freed
                // when the last piece goes.
                if buf.try_reclaim(size) {
                    return Some(buf);
                }
            }
            None
        })
        .unwrap_or_else(|| BytesMut::with_capacity(size))
}

/// Gives back a buffer from [`take_shared`] (its storage may still be shared).
pub fn give_shared(buf: BytesMut) {
    FREE_SHARED.with_borrow_mut(|l| {
        if l.len() < MAX_FREE {
            l.push(buf);
        }
    });
}

/// Header maps kept: a map's table is about 100 bytes per field of capacity.
const MAX_FREE_MAPS: usize = 256;
/// Maps that grew past this many fields are freed, not kept.
const MAX_KEPT_FIELDS: usize = 64;

/// An empty header map with room for `fields` without growing: a given-back one (its
/// table kept) or a new one. An HTTP/2 request's and an upstream response's head each
/// take one, so steady traffic allocates no map tables.
pub fn take_map(fields: usize) -> HeaderMap {
    let mut map = FREE_MAPS.with_borrow_mut(Vec::pop).unwrap_or_default();
    map.reserve(fields);
    map
}

/// Gives back a map whose fields are no longer needed (they are dropped here).
pub fn give_map(mut map: HeaderMap) {
    if map.capacity() > MAX_KEPT_FIELDS {
        return;
    }
    map.clear();
    FREE_MAPS.with_borrow_mut(|l| {
        if l.len() < MAX_FREE_MAPS {
            l.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_come_back_empty_with_their_table_and_big_ones_are_not_kept() {
        // Its own thread: the free lists are thread-local.
        std::thread::spawn(|| {
            let mut map = take_map(24);
            let room = map.capacity();
            assert!(room >= 24);
            map.insert("x-a", http::HeaderValue::from_static("1"));
            give_map(map);
            let again = take_map(10);
            assert!(again.is_empty());
            assert_eq!(again.capacity(), room, "the table is reused");

            let big = take_map(MAX_KEPT_FIELDS + 1);
            give_map(big);
            give_map(again);
            assert_eq!(
                FREE_MAPS.with_borrow(Vec::len),
                1,
                "only the small one is kept"
            );

            // Response read buffers: reclaimed once the pieces handed on are gone.
            let mut buf = take_shared(8192);
            let start = buf.as_ptr();
            buf.extend_from_slice(b"head and body");
            let piece = buf.split_to(4).freeze();
            give_shared(buf);
            let fresh = take_shared(8192);
            assert_ne!(fresh.as_ptr(), start, "still shared: a new buffer");
            drop(fresh);
            let mut buf = take_shared(8192);
            let start = buf.as_ptr();
            buf.extend_from_slice(b"head and body");
            let piece2 = buf.split_to(4).freeze();
            give_shared(buf);
            drop((piece, piece2));
            assert_eq!(
                take_shared(8192).as_ptr(),
                start,
                "all pieces gone: reclaimed"
            );
        })
        .join()
        .unwrap();
    }
}
