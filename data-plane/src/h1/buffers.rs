//! A worker-local free list of byte buffers. Requests borrow buffers for their
//! duration and give them back, so steady traffic does no large allocations and idle
//! connections hold none. Thread-local: workers are single-threaded runtimes, so the
//! list is never shared (on other runtimes it merely becomes per-thread).

use std::cell::RefCell;

use bytes::BytesMut;

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
