//! HTTP/2 frames (RFC 9113 §4 and §6): the 9-byte frame header, the frame types, flags,
//! settings and error codes, and writers for the frames the server sends.

use bytes::{BufMut, BytesMut};

/// The client connection preface (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub(crate) const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value. We never raise ours, so it is also the
/// largest frame a client may send us.
pub(crate) const DEFAULT_MAX_FRAME: usize = 16_384;
pub(crate) const MAX_WINDOW: i64 = (1 << 31) - 1;
/// SETTINGS_INITIAL_WINDOW_SIZE's initial value (and every connection's first window).
pub(crate) const DEFAULT_WINDOW: i64 = 65_535;

pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const PRIORITY: u8 = 0x2;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PUSH_PROMISE: u8 = 0x5;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const WINDOW_UPDATE: u8 = 0x8;
pub(crate) const CONTINUATION: u8 = 0x9;

pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const ACK: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;
pub(crate) const PADDED: u8 = 0x8;
pub(crate) const PRIORITY_FLAG: u8 = 0x20;

pub(crate) const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub(crate) const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub(crate) const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub(crate) const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub(crate) const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub(crate) const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// An error code (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reason(pub u32);

impl Reason {
    pub(crate) const NO_ERROR: Reason = Reason(0x0);
    pub(crate) const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub(crate) const INTERNAL_ERROR: Reason = Reason(0x2);
    pub(crate) const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub(crate) const STREAM_CLOSED: Reason = Reason(0x5);
    pub(crate) const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub(crate) const REFUSED_STREAM: Reason = Reason(0x7);
    pub(crate) const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub(crate) const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    /// Reads the 9-byte header at the start of `b` (at least 9 bytes). The stream
    /// identifier's reserved bit is ignored (RFC 9113 §4.1).
    pub(crate) fn parse(b: &[u8]) -> Head {
        Head {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

pub(crate) fn put_head(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len < 1 << 24);
    let len = u32::try_from(len).unwrap_or(0);
    dst.put_slice(&len.to_be_bytes()[1..]);
    dst.put_u8(kind);
    dst.put_u8(flags);
    dst.put_u32(stream);
}

pub(crate) fn put_settings(dst: &mut BytesMut, settings: &[(u16, u32)]) {
    put_head(dst, settings.len() * 6, SETTINGS, 0, 0);
    for &(id, value) in settings {
        dst.put_u16(id);
        dst.put_u32(value);
    }
}

pub(crate) fn put_settings_ack(dst: &mut BytesMut) {
    put_head(dst, 0, SETTINGS, ACK, 0);
}

pub(crate) fn put_window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    put_head(dst, 4, WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment);
}

pub(crate) fn put_rst_stream(dst: &mut BytesMut, stream: u32, reason: Reason) {
    put_head(dst, 4, RST_STREAM, 0, stream);
    dst.put_u32(reason.0);
}

pub(crate) fn put_goaway(dst: &mut BytesMut, last_stream: u32, reason: Reason) {
    put_head(dst, 8, GOAWAY, 0, 0);
    dst.put_u32(last_stream);
    dst.put_u32(reason.0);
}

pub(crate) fn put_ping_ack(dst: &mut BytesMut, payload: &[u8]) {
    put_head(dst, payload.len(), PING, ACK, 0);
    dst.put_slice(payload);
}

pub(crate) fn put_data(dst: &mut BytesMut, stream: u32, data: &[u8], end_stream: bool) {
    put_head(
        dst,
        data.len(),
        DATA,
        if end_stream { END_STREAM } else { 0 },
        stream,
    );
    dst.put_slice(data);
}

/// A header block as HEADERS (and CONTINUATION frames when it is larger than the
/// peer's largest frame), `END_STREAM` on the HEADERS frame when `end_stream`.
pub(crate) fn put_headers(
    dst: &mut BytesMut,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let mut chunks = block.chunks(max_frame.max(1));
    let first = chunks.next().unwrap_or(&[]);
    let rest = block.len() > first.len();
    let mut flags = if end_stream { END_STREAM } else { 0 };
    if !rest {
        flags |= END_HEADERS;
    }
    put_head(dst, first.len(), HEADERS, flags, stream);
    dst.put_slice(first);
    let mut chunks = chunks.peekable();
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        put_head(dst, chunk.len(), CONTINUATION, flags, stream);
        dst.put_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_header_round_trips_and_the_reserved_bit_is_ignored() {
        let mut b = BytesMut::new();
        put_head(&mut b, 0x01_02_03, HEADERS, END_HEADERS | END_STREAM, 7);
        assert_eq!(&b[..], &[1, 2, 3, 1, 5, 0, 0, 0, 7]);
        let h = Head::parse(&b);
        assert_eq!(
            h,
            Head {
                len: 0x01_02_03,
                kind: HEADERS,
                flags: 5,
                stream: 7
            }
        );
        b[5] |= 0x80;
        assert_eq!(Head::parse(&b).stream, 7);
    }

    #[test]
    fn a_large_header_block_is_split_into_continuation_frames() {
        type Frames = &'static [(u8, u8, usize)];
        let cases: &[(usize, usize, Frames)] = &[
            // (block length, max frame, expected (kind, flags, len) per frame)
            (0, 16, &[(HEADERS, END_HEADERS | END_STREAM, 0)]),
            (16, 16, &[(HEADERS, END_HEADERS | END_STREAM, 16)]),
            (
                40,
                16,
                &[
                    (HEADERS, END_STREAM, 16),
                    (CONTINUATION, 0, 16),
                    (CONTINUATION, END_HEADERS, 8),
                ],
            ),
        ];
        for &(len, max, want) in cases {
            let block = vec![b'x'; len];
            let mut b = BytesMut::new();
            put_headers(&mut b, 3, &block, true, max);
            let mut got = Vec::new();
            let mut at = 0;
            while at < b.len() {
                let h = Head::parse(&b[at..]);
                assert_eq!(h.stream, 3);
                got.push((h.kind, h.flags, h.len));
                at += HEADER_LEN + h.len;
            }
            assert_eq!(got, want, "block of {len} in frames of {max}");
        }
    }
}
