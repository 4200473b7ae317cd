//! HPACK (RFC 7541): the header block decoder of one connection and a table-free
//! response encoder.
//!
//! Decoding borrows: a field's name is handed to the caller as a slice of the static
//! table, the dynamic table or the block itself, and its value as a [`Value`] over the
//! same; only Huffman-coded strings are decoded into one of two scratch buffers the
//! [`Decoder`] owns and reuses. The one allocation is a new dynamic table entry (name and
//! value in one [`Bytes`]). A caller that keeps a value asks for it as `Bytes`
//! ([`Value::to_bytes`]): a table value is then shared (a reference count increment, or
//! `Bytes::from_static`), and only a value from the block itself is copied. (The first
//! share of an entry also allocates `bytes`' shared header, once per entry.)
//!
//! Encoding never uses the dynamic table (no incremental indexing, and we never send a
//! size update), so we need not track the peer's SETTINGS_HEADER_TABLE_SIZE: every
//! field is a literal without indexing (never-indexed when sensitive) whose name is a
//! static-table index when it can be, and strings go raw, without Huffman.
//!
//! Invariant: a decode error of any kind is a connection error of type
//! COMPRESSION_ERROR (RFC 9113 §4.3): after one, the dynamic table is no longer in step
//! with the peer's and the decoder must not be used again.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::huffman;

/// Added to name + value length for an entry's size (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// Continuation bytes an integer may have beyond its prefix: 5 carry 35 bits, enough for
/// any u32 (the largest value we accept).
const MAX_INTEGER_CONTINUATIONS: u32 = 5;

/// RFC 7541 Appendix A; HPACK index `i` is `STATIC_TABLE[i - 1]`.
static STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Why a header block could not be decoded. Every variant is a connection error of type
/// COMPRESSION_ERROR (RFC 9113 §4.3).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecodeError {
    #[error("HPACK index {0} is 0 or past the end of the static and dynamic tables")]
    InvalidIndex(usize),
    #[error("HPACK integer above u32::MAX or with more than 5 continuation bytes")]
    IntegerOverflow,
    #[error("HPACK block ends inside a field representation")]
    Truncated,
    #[error("HPACK string has an invalid Huffman code (EOS or bad padding)")]
    InvalidHuffman,
    #[error("HPACK dynamic table size update to {size} above our limit of {max}")]
    TableSizeTooLarge { size: usize, max: usize },
    #[error("HPACK dynamic table size update after the first field of the block")]
    TableSizeUpdateNotAtStart,
}

/// A decoded field value: borrowed from the static table, a dynamic table entry or the
/// block (or a scratch buffer, when Huffman-coded).
#[derive(Debug, Clone)]
pub(crate) struct Value<'a>(Source<'a>);

#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    Static(&'static [u8]),
    /// A dynamic table entry's bytes and where its value starts in them.
    Entry(&'a Bytes, usize),
    Literal(&'a [u8]),
}

impl Value<'_> {
    /// A value from the block (or, in tests, from anywhere): `to_bytes` copies it.
    #[cfg(test)]
    pub(crate) fn literal(value: &[u8]) -> Value<'_> {
        Value(Source::Literal(value))
    }

    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self.0 {
            Source::Static(v) | Source::Literal(v) => v,
            Source::Entry(bytes, start) => &bytes[start..],
        }
    }

    /// The value as `Bytes`: shared with the table entry (no copy) when it is one, else
    /// copied.
    #[inline]
    pub(crate) fn to_bytes(&self) -> Bytes {
        match self.0 {
            Source::Static(v) => Bytes::from_static(v),
            Source::Entry(bytes, start) => bytes.slice(start..),
            Source::Literal(v) => Bytes::copy_from_slice(v),
        }
    }
}

/// HPACK decoder state of one connection (the dynamic table).
#[derive(Debug)]
pub(crate) struct Decoder {
    table: DynamicTable,
    /// Our SETTINGS_HEADER_TABLE_SIZE: the largest size update the peer may send.
    max_table_size: usize,
    /// Huffman-decoded literal names and values (reused, never shrunk).
    name_scratch: Vec<u8>,
    value_scratch: Vec<u8>,
}

impl Decoder {
    /// `max_table_size`: our SETTINGS_HEADER_TABLE_SIZE (we advertise the default, 4096).
    /// The dynamic table starts at that size (as if the peer applied it from the start,
    /// exact for the default).
    pub(crate) fn new(max_table_size: usize) -> Self {
        Self {
            table: DynamicTable {
                entries: VecDeque::new(),
                size: 0,
                max_size: max_table_size,
            },
            max_table_size,
            name_scratch: Vec::new(),
            value_scratch: Vec::new(),
        }
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION payloads joined), calling
    /// `field(name, value)` for each field in order (a field with incremental indexing
    /// after its entry is inserted, so its value is shared with the entry). Always processes the whole block (the
    /// dynamic table must stay in step with the peer's even when the caller will refuse
    /// the request), so the callback cannot stop it.
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], Value<'_>),
    ) -> Result<(), DecodeError> {
        let Self {
            table,
            max_table_size,
            name_scratch,
            value_scratch,
        } = self;
        let mut r = Reader { buf: block, pos: 0 };
        // Size updates are allowed only before the first field (RFC 7541 §4.2).
        let mut at_start = true;
        while let Some(&first) = block.get(r.pos) {
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let (name, value) = table.field(r.integer(7)?)?;
                field(name, value);
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                let index = r.integer(6)?;
                let name = if index == 0 {
                    string(&mut r, name_scratch)?
                } else {
                    table.field(index)?.0
                };
                let value = string(&mut r, value_scratch)?;
                // Inserted first, so the caller gets the value shared with the entry.
                match table.admits(name, value).then(|| Entry::new(name, value)) {
                    Some(entry) => {
                        table.insert(entry);
                        let entry = table.newest();
                        field(entry.name(), entry.value());
                    }
                    None => {
                        field(name, Value(Source::Literal(value)));
                        // An entry larger than the table empties it (§4.4).
                        table.clear();
                    }
                }
            } else if first & 0x20 != 0 {
                // Dynamic table size update (§6.3).
                if !at_start {
                    return Err(DecodeError::TableSizeUpdateNotAtStart);
                }
                let size = r.integer(5)?;
                if size > *max_table_size {
                    return Err(DecodeError::TableSizeTooLarge {
                        size,
                        max: *max_table_size,
                    });
                }
                table.set_max_size(size);
                continue;
            } else {
                // Literal without indexing (§6.2.2) or never indexed (§6.2.3): the same
                // to a decoder that forwards nothing compressed.
                let index = r.integer(4)?;
                let name = if index == 0 {
                    string(&mut r, name_scratch)?
                } else {
                    table.field(index)?.0
                };
                let value = string(&mut r, value_scratch)?;
                field(name, Value(Source::Literal(value)));
            }
            at_start = false;
        }
        Ok(())
    }

    /// The dynamic table, newest first, and its size (tests check RFC 7541's listings).
    #[cfg(test)]
    fn table(&self) -> (Vec<(String, String)>, usize) {
        let entries = self
            .table
            .entries
            .iter()
            .map(|e| {
                let (n, v) = e.field();
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        (entries, self.table.size)
    }
}

/// A cursor over a header block.
struct Reader<'b> {
    buf: &'b [u8],
    pos: usize,
}

impl<'b> Reader<'b> {
    /// An integer with a `prefix_bits`-bit prefix (§5.1), starting at the current byte
    /// (whose other bits the caller has read).
    #[inline]
    fn integer(&mut self, prefix_bits: u32) -> Result<usize, DecodeError> {
        let mask = (1u8 << prefix_bits) - 1;
        let first = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        let prefix = first & mask;
        if prefix < mask {
            return Ok(usize::from(prefix));
        }
        let mut value = u64::from(mask);
        for i in 0..MAX_INTEGER_CONTINUATIONS {
            let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
            self.pos += 1;
            value += u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return u32::try_from(value)
                    .map(|v| v as usize)
                    .map_err(|_| DecodeError::IntegerOverflow);
            }
        }
        Err(DecodeError::IntegerOverflow)
    }

    /// The next `len` bytes.
    #[inline]
    fn take(&mut self, len: usize) -> Result<&'b [u8], DecodeError> {
        let end = self.pos.checked_add(len).ok_or(DecodeError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }
}

/// A string literal (§5.2): borrowed from the block when raw, decoded into `scratch`
/// when Huffman-coded.
#[inline]
fn string<'s, 'b: 's>(
    r: &mut Reader<'b>,
    scratch: &'s mut Vec<u8>,
) -> Result<&'s [u8], DecodeError> {
    let huffman = r.buf.get(r.pos).is_some_and(|&b| b & 0x80 != 0);
    let len = r.integer(7)?;
    let bytes = r.take(len)?;
    if !huffman {
        return Ok(bytes);
    }
    huffman::decode(bytes, scratch)
        .map_err(|huffman::InvalidHuffman| DecodeError::InvalidHuffman)?;
    Ok(scratch)
}

/// The dynamic table (§2.3.2, §4): newest entry at the front.
#[derive(Debug)]
struct DynamicTable {
    entries: VecDeque<Entry>,
    /// Sum of the entries' sizes (§4.1).
    size: usize,
    /// The current maximum, set by size updates (at most our setting).
    max_size: usize,
}

impl DynamicTable {
    /// The field at HPACK index `index` (§2.3.3): static table, then dynamic.
    #[inline]
    fn field(&self, index: usize) -> Result<(&[u8], Value<'_>), DecodeError> {
        if let Some(&(name, value)) = STATIC_TABLE.get(index.wrapping_sub(1)) {
            return Ok((name, Value(Source::Static(value))));
        }
        index
            .checked_sub(STATIC_TABLE.len() + 1)
            .and_then(|i| self.entries.get(i))
            .map(|e| (e.name(), e.value()))
            .ok_or(DecodeError::InvalidIndex(index))
    }

    /// The entry inserted last (the table must not be empty).
    fn newest(&self) -> &Entry {
        &self.entries[0]
    }

    /// Whether a field of this name and value fits in the table at all.
    fn admits(&self, name: &[u8], value: &[u8]) -> bool {
        entry_size(name.len(), value.len()) <= self.max_size
    }

    /// Adds an entry (one the table [admits](Self::admits)), evicting from the oldest end
    /// to make room (§4.4).
    fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        self.evict_to(self.max_size.saturating_sub(size));
        self.size += size;
        self.entries.push_front(entry);
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.size = 0;
    }

    fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.entries.pop_back() {
                Some(e) => self.size -= e.size(),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

fn entry_size(name_len: usize, value_len: usize) -> usize {
    name_len
        .saturating_add(value_len)
        .saturating_add(ENTRY_OVERHEAD)
}

/// One dynamic table entry: name then value in one allocation, which values handed out
/// as `Bytes` share.
#[derive(Debug)]
struct Entry {
    bytes: Bytes,
    name_len: usize,
}

impl Entry {
    fn new(name: &[u8], value: &[u8]) -> Self {
        // Exactly sized, so `Bytes` takes the vector as it is (no second allocation until
        // the first share).
        let mut bytes = Vec::with_capacity(name.len() + value.len());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        Self {
            bytes: Bytes::from(bytes),
            name_len: name.len(),
        }
    }

    #[inline]
    fn name(&self) -> &[u8] {
        &self.bytes[..self.name_len]
    }

    #[inline]
    fn value(&self) -> Value<'_> {
        Value(Source::Entry(&self.bytes, self.name_len))
    }

    #[cfg(test)]
    fn field(&self) -> (&[u8], &[u8]) {
        self.bytes.split_at(self.name_len)
    }

    fn size(&self) -> usize {
        self.bytes.len() + ENTRY_OVERHEAD
    }
}

/// Writes `:status` (§6.1 indexed when the static table has the code, else a literal
/// without indexing whose name is static index 8).
pub(crate) fn encode_status(status: u16, dst: &mut BytesMut) {
    let index = match status {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => 0,
    };
    if index != 0 {
        dst.put_u8(0x80 | index);
        return;
    }
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    let mut n = status;
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = &digits[start..];
    dst.reserve(2 + digits.len());
    dst.put_u8(0x08); // literal without indexing, name index 8 (:status)
    dst.put_u8(digits.len() as u8); // raw string, length < 127
    dst.put_slice(digits);
}

/// Writes response fields without using a dynamic table (so we never need to track the
/// peer's table size): literal without indexing (or never-indexed when `sensitive`),
/// name as a static-table index when the name is in the static table, strings raw (no
/// Huffman). `name` must already be lowercase (RFC 9113 §8.2.1).
pub(crate) fn encode_field(name: &[u8], value: &[u8], sensitive: bool, dst: &mut BytesMut) {
    // Flags of §6.2.2 (0000) and §6.2.3 (0001), with a 4-bit name index prefix.
    let flags = if sensitive { 0x10 } else { 0x00 };
    // Two integers of at most 1 + 10 bytes each (usize), plus the name.
    dst.reserve(name.len() + value.len() + 22);
    match static_name_index(name) {
        Some(index) => encode_integer(index, 4, flags, dst),
        None => {
            dst.put_u8(flags);
            encode_string(name, dst);
        }
    }
    encode_string(value, dst);
}

/// A raw string literal (§5.2, H = 0).
#[inline]
fn encode_string(s: &[u8], dst: &mut BytesMut) {
    encode_integer(s.len(), 7, 0x00, dst);
    dst.put_slice(s);
}

/// A dynamic table size update (§6.3) to `size`: owed at the start of the first header
/// block after the peer lowered SETTINGS_HEADER_TABLE_SIZE below the table size we
/// may assume (RFC 7541 §4.2), even by an encoder that never inserts, as ours.
pub(crate) fn encode_table_size_update(size: usize, dst: &mut BytesMut) {
    encode_integer(size, 5, 0x20, dst);
}

/// An integer with a `prefix_bits`-bit prefix (§5.1); `flags` fill the first byte's
/// high bits.
#[inline]
fn encode_integer(value: usize, prefix_bits: u32, flags: u8, dst: &mut BytesMut) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        dst.put_u8(flags | value as u8);
        return;
    }
    dst.put_u8(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        dst.put_u8(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

/// The first static-table index with this name (RFC 7541 Appendix A).
fn static_name_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type Fields = Vec<(String, String)>;

    use super::super::huffman::tests::hex;

    fn decode(d: &mut Decoder, block: &[u8]) -> Result<Fields, DecodeError> {
        let mut out = Vec::new();
        d.decode(block, |n, v| {
            assert_eq!(v.to_bytes(), v.as_bytes());
            out.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ));
        })?;
        Ok(out)
    }

    fn fields(list: &[(&str, &str)]) -> Fields {
        list.iter()
            .map(|&(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    /// One header block of a connection: its hex, the decoded fields, and the dynamic
    /// table after it (newest first) with its size, as RFC 7541 Appendix C lists them.
    struct Step {
        block: &'static str,
        fields: &'static [(&'static str, &'static str)],
        table: &'static [(&'static str, &'static str)],
        size: usize,
    }

    fn run(name: &str, max_table_size: usize, steps: &[Step]) {
        let mut d = Decoder::new(max_table_size);
        for (i, step) in steps.iter().enumerate() {
            let got = decode(&mut d, &hex(step.block));
            assert_eq!(got, Ok(fields(step.fields)), "{name} step {i}");
            assert_eq!(
                d.table(),
                (fields(step.table), step.size),
                "{name} step {i}"
            );
        }
    }

    #[test]
    fn rfc7541_c2_field_representations() {
        let cases: &[(&str, Step)] = &[
            (
                "C.2.1 literal with indexing",
                Step {
                    block: "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
                    fields: &[("custom-key", "custom-header")],
                    table: &[("custom-key", "custom-header")],
                    size: 55,
                },
            ),
            (
                "C.2.2 literal without indexing",
                Step {
                    block: "040c 2f73 616d 706c 652f 7061 7468",
                    fields: &[(":path", "/sample/path")],
                    table: &[],
                    size: 0,
                },
            ),
            (
                "C.2.3 literal never indexed",
                Step {
                    block: "1008 7061 7373 776f 7264 0673 6563 7265 74",
                    fields: &[("password", "secret")],
                    table: &[],
                    size: 0,
                },
            ),
            (
                "C.2.4 indexed",
                Step {
                    block: "82",
                    fields: &[(":method", "GET")],
                    table: &[],
                    size: 0,
                },
            ),
        ];
        for (name, step) in cases {
            run(name, 4096, std::slice::from_ref(step));
        }
    }

    const REQUEST_1: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    const REQUEST_2: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ];
    const REQUEST_3: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    const REQUEST_TABLE_1: &[(&str, &str)] = &[(":authority", "www.example.com")];
    const REQUEST_TABLE_2: &[(&str, &str)] = &[
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ];
    const REQUEST_TABLE_3: &[(&str, &str)] = &[
        ("custom-key", "custom-value"),
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ];

    #[test]
    fn rfc7541_c3_requests_without_huffman() {
        run(
            "C.3",
            4096,
            &[
                Step {
                    block: "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                    fields: REQUEST_1,
                    table: REQUEST_TABLE_1,
                    size: 57,
                },
                Step {
                    block: "8286 84be 5808 6e6f 2d63 6163 6865",
                    fields: REQUEST_2,
                    table: REQUEST_TABLE_2,
                    size: 110,
                },
                Step {
                    block: "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 \
                            6c75 65",
                    fields: REQUEST_3,
                    table: REQUEST_TABLE_3,
                    size: 164,
                },
            ],
        );
    }

    #[test]
    fn rfc7541_c4_requests_with_huffman() {
        run(
            "C.4",
            4096,
            &[
                Step {
                    block: "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                    fields: REQUEST_1,
                    table: REQUEST_TABLE_1,
                    size: 57,
                },
                Step {
                    block: "8286 84be 5886 a8eb 1064 9cbf",
                    fields: REQUEST_2,
                    table: REQUEST_TABLE_2,
                    size: 110,
                },
                Step {
                    block: "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
                    fields: REQUEST_3,
                    table: REQUEST_TABLE_3,
                    size: 164,
                },
            ],
        );
    }

    const DATE_1: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
    const DATE_2: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
    const LOCATION: &str = "https://www.example.com";
    const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
    const RESPONSE_1: &[(&str, &str)] = &[
        (":status", "302"),
        ("cache-control", "private"),
        ("date", DATE_1),
        ("location", LOCATION),
    ];
    const RESPONSE_2: &[(&str, &str)] = &[
        (":status", "307"),
        ("cache-control", "private"),
        ("date", DATE_1),
        ("location", LOCATION),
    ];
    const RESPONSE_3: &[(&str, &str)] = &[
        (":status", "200"),
        ("cache-control", "private"),
        ("date", DATE_2),
        ("location", LOCATION),
        ("content-encoding", "gzip"),
        ("set-cookie", COOKIE),
    ];
    const RESPONSE_TABLE_1: &[(&str, &str)] = &[
        ("location", LOCATION),
        ("date", DATE_1),
        ("cache-control", "private"),
        (":status", "302"),
    ];
    // (":status", "302") evicted.
    const RESPONSE_TABLE_2: &[(&str, &str)] = &[
        (":status", "307"),
        ("location", LOCATION),
        ("date", DATE_1),
        ("cache-control", "private"),
    ];
    // Four evictions: cache-control, date, location, :status.
    const RESPONSE_TABLE_3: &[(&str, &str)] = &[
        ("set-cookie", COOKIE),
        ("content-encoding", "gzip"),
        ("date", DATE_2),
    ];

    #[test]
    fn rfc7541_c5_responses_without_huffman() {
        run(
            "C.5",
            256,
            &[
                Step {
                    block: "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 \
                            7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 \
                            3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                    fields: RESPONSE_1,
                    table: RESPONSE_TABLE_1,
                    size: 222,
                },
                Step {
                    block: "4803 3330 37c1 c0bf",
                    fields: RESPONSE_2,
                    table: RESPONSE_TABLE_2,
                    size: 222,
                },
                Step {
                    block: "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 \
                            3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 \
                            514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 \
                            2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
                    fields: RESPONSE_3,
                    table: RESPONSE_TABLE_3,
                    size: 215,
                },
            ],
        );
    }

    #[test]
    fn rfc7541_c6_responses_with_huffman() {
        run(
            "C.6",
            256,
            &[
                Step {
                    block: "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 \
                            0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae \
                            43d3",
                    fields: RESPONSE_1,
                    table: RESPONSE_TABLE_1,
                    size: 222,
                },
                Step {
                    block: "4883 640e ffc1 c0bf",
                    fields: RESPONSE_2,
                    table: RESPONSE_TABLE_2,
                    size: 222,
                },
                Step {
                    block: "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff \
                            c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af \
                            2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 \
                            07",
                    fields: RESPONSE_3,
                    table: RESPONSE_TABLE_3,
                    size: 215,
                },
            ],
        );
    }

    #[test]
    fn table_size_updates() {
        // Each case starts from the table of C.3.3 (164 bytes: custom-key 54,
        // cache-control 53, :authority 57) with our limit of 4096.
        // (what, block, result, table after, its size)
        type Case = (
            &'static str,
            &'static str,
            Result<Fields, DecodeError>,
            &'static [(&'static str, &'static str)],
            usize,
        );
        let cases: &[Case] = &[
            (
                "update to the max, then a field",
                "3fe1 1f 82",
                Ok(fields(&[(":method", "GET")])),
                REQUEST_TABLE_3,
                164,
            ),
            (
                "update to 110 evicts the oldest",
                "3f4f be",
                Ok(fields(&[("custom-key", "custom-value")])),
                &[
                    ("custom-key", "custom-value"),
                    ("cache-control", "no-cache"),
                ],
                107,
            ),
            ("update to 0 empties the table", "20", Ok(vec![]), &[], 0),
            (
                "two updates at the start (0 then 4096): the table stays empty",
                "20 3fe1 1f",
                Ok(vec![]),
                &[],
                0,
            ),
            (
                "update to 0 then an old dynamic index",
                "20 be",
                Err(DecodeError::InvalidIndex(62)),
                &[],
                0,
            ),
            (
                "update after a field",
                "82 20",
                Err(DecodeError::TableSizeUpdateNotAtStart),
                REQUEST_TABLE_3,
                164,
            ),
            (
                "update above our limit",
                "3fe2 1f",
                Err(DecodeError::TableSizeTooLarge {
                    size: 4097,
                    max: 4096,
                }),
                REQUEST_TABLE_3,
                164,
            ),
            (
                "update with a truncated integer",
                "3fe1",
                Err(DecodeError::Truncated),
                REQUEST_TABLE_3,
                164,
            ),
        ];
        let c3 = [
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ];
        for (name, block, want, table, size) in cases {
            let mut d = Decoder::new(4096);
            for b in c3 {
                decode(&mut d, &hex(b)).unwrap();
            }
            assert_eq!(&decode(&mut d, &hex(block)), want, "{name}");
            assert_eq!(d.table(), (fields(table), *size), "{name}");
        }

        // A smaller max keeps applying to inserts: after an update to 60, an entry of 45
        // fits alone and the next one evicts it.
        let mut d = Decoder::new(4096);
        let got = decode(&mut d, &hex("3f1d 4103 6162 63 4103 6465 66"));
        assert_eq!(
            got,
            Ok(fields(&[(":authority", "abc"), (":authority", "def")]))
        );
        assert_eq!(d.table(), (fields(&[(":authority", "def")]), 45));
    }

    #[test]
    fn entry_larger_than_the_table_empties_it() {
        let mut d = Decoder::new(64);
        // :authority: abc (45 bytes) fits; then a 33-byte value (75 > 64) empties the table
        // but the field is still delivered.
        let big = "x".repeat(33);
        let mut block = hex("4103 6162 63 4121");
        block.extend_from_slice(big.as_bytes());
        let got = decode(&mut d, &block);
        assert_eq!(
            got,
            Ok(fields(&[(":authority", "abc"), (":authority", &big)]))
        );
        assert_eq!(d.table(), (vec![], 0));
        // Exactly the table size fits: 10 + 22 + 32 = 64.
        let got = decode(
            &mut d,
            &hex(
                "4016 6162 6364 6566 6768 696a 6b6c 6d6e 6f70 7172 7374 7576 0a30 3132 3334 3536 3738 39 be",
            ),
        );
        let entry = ("abcdefghijklmnopqrstuv", "0123456789");
        assert_eq!(got, Ok(fields(&[entry, entry])));
        assert_eq!(d.table(), (fields(&[entry]), 64));
    }

    #[test]
    fn malformed_blocks() {
        let cases = [
            ("index 0", "80", DecodeError::InvalidIndex(0)),
            (
                "dynamic index on an empty table",
                "be",
                DecodeError::InvalidIndex(62),
            ),
            (
                "literal name index past the tables",
                "7e 00",
                DecodeError::InvalidIndex(62),
            ),
            (
                "never-indexed name index past the tables",
                "1f 2f 00",
                DecodeError::InvalidIndex(62),
            ),
            (
                "indexed integer without continuation",
                "ff",
                DecodeError::Truncated,
            ),
            (
                "integer ends mid-continuation",
                "ff 80",
                DecodeError::Truncated,
            ),
            ("literal without its value", "41", DecodeError::Truncated),
            (
                "literal name past the end",
                "40 05 6162",
                DecodeError::Truncated,
            ),
            (
                "literal value past the end",
                "41 0f 7777 77",
                DecodeError::Truncated,
            ),
            (
                "huffman value past the end",
                "41 8c f1e3",
                DecodeError::Truncated,
            ),
            (
                "new name without its value",
                "00 01 61",
                DecodeError::Truncated,
            ),
            (
                "six continuation bytes",
                "ff 80 80 80 80 80 00",
                DecodeError::IntegerOverflow,
            ),
            (
                "index above u32::MAX",
                "ff 81 ff ff ff 0f",
                DecodeError::IntegerOverflow,
            ),
            (
                "string length above u32::MAX",
                "41 7f 81 ff ff ff 0f",
                DecodeError::IntegerOverflow,
            ),
            (
                "huffman value: 8 bits of padding",
                "41 81 ff",
                DecodeError::InvalidHuffman,
            ),
            (
                "huffman value: EOS",
                "41 84 ffff ffff",
                DecodeError::InvalidHuffman,
            ),
            (
                "huffman value: zero padding",
                "41 81 38",
                DecodeError::InvalidHuffman,
            ),
            (
                "huffman name: bad padding",
                "40 81 00 00",
                DecodeError::InvalidHuffman,
            ),
            (
                "huffman name in a never-indexed literal",
                "10 81 ff 00",
                DecodeError::InvalidHuffman,
            ),
        ];
        for (name, block, want) in cases {
            let mut d = Decoder::new(4096);
            assert_eq!(decode(&mut d, &hex(block)), Err(want), "{name}");
        }

        // The largest integer we accept (u32::MAX) decodes; one more does not.
        for (value, want) in [
            (
                u32::MAX as usize,
                DecodeError::InvalidIndex(u32::MAX as usize),
            ),
            (u32::MAX as usize + 1, DecodeError::IntegerOverflow),
        ] {
            let mut block = BytesMut::new();
            encode_integer(value, 7, 0x80, &mut block);
            assert_eq!(
                decode(&mut Decoder::new(4096), &block),
                Err(want),
                "{value}"
            );
        }

        // An empty block has no fields.
        assert_eq!(decode(&mut Decoder::new(4096), &[]), Ok(vec![]));
    }

    #[test]
    fn integers_round_trip() {
        for prefix in 4..=7 {
            for value in [
                0,
                1,
                14,
                15,
                16,
                30,
                31,
                126,
                127,
                128,
                1337,
                65535,
                1 << 21,
                u32::MAX as usize,
            ] {
                let mut buf = BytesMut::new();
                encode_integer(value, prefix, 0, &mut buf);
                let mut r = Reader { buf: &buf, pos: 0 };
                assert_eq!(r.integer(prefix), Ok(value), "{value} prefix {prefix}");
                assert_eq!(r.pos, buf.len());
            }
        }
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        let mut buf = BytesMut::new();
        encode_integer(1337, 5, 0, &mut buf);
        assert_eq!(&buf[..], &[0x1f, 0x9a, 0x0a]);
    }

    #[test]
    fn static_name_index_matches_the_table() {
        for (i, &(name, _)) in STATIC_TABLE.iter().enumerate() {
            let first = STATIC_TABLE.iter().position(|&(n, _)| n == name).unwrap() + 1;
            assert_eq!(static_name_index(name), Some(first), "index {}", i + 1);
        }
        for name in [
            &b"x-request-id"[..],
            b"Content-Type",
            b"",
            b"content-typ",
            b":statuses",
        ] {
            assert_eq!(static_name_index(name), None);
        }
    }

    #[test]
    fn encode_status_forms() {
        let cases: &[(u16, &[u8])] = &[
            (200, &[0x88]),
            (204, &[0x89]),
            (206, &[0x8a]),
            (304, &[0x8b]),
            (400, &[0x8c]),
            (404, &[0x8d]),
            (500, &[0x8e]),
            (302, b"\x08\x03302"),
            (101, b"\x08\x03101"),
            (503, b"\x08\x03503"),
            (999, b"\x08\x03999"),
        ];
        for &(status, want) in cases {
            let mut dst = BytesMut::new();
            encode_status(status, &mut dst);
            assert_eq!(&dst[..], want, "{status}");
            let mut d = Decoder::new(4096);
            let got = decode(&mut d, &dst).unwrap();
            assert_eq!(got, fields(&[(":status", &status.to_string())]));
            assert_eq!(d.table(), (vec![], 0));
        }
    }

    #[test]
    fn encode_field_forms() {
        let long_value = "v".repeat(300);
        let cases: &[(&str, &str, bool, Vec<u8>)] = &[
            (
                "content-type",
                "text/html",
                false,
                hex("0f10 0974 6578 742f 6874 6d6c"),
            ),
            ("set-cookie", "a=b", true, hex("1f28 0361 3d62")),
            ("date", "", false, hex("0f12 00")),
            (":status", "302", false, hex("08 0333 3032")),
            ("x-id", "7", false, hex("00 0478 2d69 64 0137")),
            ("x-id", "7", true, hex("10 0478 2d69 64 0137")),
            ("content-length", &long_value, false, {
                let mut v = hex("0f0d 7fad 01");
                v.extend_from_slice(long_value.as_bytes());
                v
            }),
        ];
        for (name, value, sensitive, want) in cases {
            let mut dst = BytesMut::new();
            encode_field(name.as_bytes(), value.as_bytes(), *sensitive, &mut dst);
            assert_eq!(&dst[..], &want[..], "{name}");
        }
    }

    #[test]
    fn encoder_round_trips_through_the_decoder() {
        let long_name = format!("x-{}", "n".repeat(200));
        let long_value = "v".repeat(5000);
        let list: Vec<(&str, &str, bool)> = vec![
            (":status", "418", false),
            ("content-type", "application/json", false),
            ("content-length", "1234", false),
            ("date", DATE_1, false),
            ("server", "routemaster", false),
            ("location", LOCATION, false),
            ("cache-control", "no-store", false),
            ("set-cookie", COOKIE, true),
            ("authorization", "Bearer x", true),
            ("www-authenticate", "Basic", false),
            ("x-request-id", "abc-123", false),
            ("x-secret", "hunter2", true),
            ("x-empty", "", false),
            (&long_name, &long_value, false),
            ("vary", "accept-encoding", false),
        ];
        let mut block = BytesMut::new();
        encode_status(200, &mut block);
        encode_status(302, &mut block);
        for &(n, v, s) in &list {
            encode_field(n.as_bytes(), v.as_bytes(), s, &mut block);
        }
        let mut want = fields(&[(":status", "200"), (":status", "302")]);
        want.extend(list.iter().map(|&(n, v, _)| (n.to_owned(), v.to_owned())));
        // Same decoder twice: nothing enters the dynamic table.
        let mut d = Decoder::new(4096);
        for _ in 0..2 {
            assert_eq!(decode(&mut d, &block), Ok(want.clone()));
            assert_eq!(d.table(), (vec![], 0));
        }
    }

    /// Each field of a block as (name, value as `Bytes`).
    fn decode_shared(d: &mut Decoder, block: &[u8]) -> Vec<(Vec<u8>, Bytes)> {
        let mut out = Vec::new();
        d.decode(block, |n, v| out.push((n.to_vec(), v.to_bytes())))
            .unwrap();
        out
    }

    #[test]
    fn dynamic_table_values_are_shared_not_copied() {
        let mut d = Decoder::new(4096);
        // C.2.1: custom-key: custom-header, with incremental indexing; then the same as
        // a literal without indexing (copied from the block).
        let mut block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        block.extend(hex(
            "000a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        ));
        let first = decode_shared(&mut d, &block);
        // Index 62 twice in the next block, and once more in a third.
        let second = decode_shared(&mut d, &hex("bebe"));
        let third = decode_shared(&mut d, &hex("be"));
        let entry = d.table.entries[0].bytes.as_ptr();
        for (n, v) in first.iter().chain(&second).chain(&third) {
            assert_eq!(
                (&n[..], &v[..]),
                (&b"custom-key"[..], &b"custom-header"[..])
            );
        }
        let value = entry.wrapping_add(b"custom-key".len());
        // The indexed literal is handed out from its new entry, as is every reference.
        assert_eq!(first[0].1.as_ptr(), value);
        assert_eq!(second[0].1.as_ptr(), value);
        assert_eq!(second[1].1.as_ptr(), value);
        assert_eq!(third[0].1.as_ptr(), value);
        // The literal without indexing is a copy: neither the entry nor the block.
        let copied = first[1].1.as_ptr();
        assert_ne!(copied, value);
        assert!(!block.as_ptr_range().contains(&copied));
        // Shares outlive the entry: evicting it leaves them intact.
        d.decode(&hex("20"), |_, _| {}).unwrap();
        assert_eq!(d.table(), (vec![], 0));
        assert_eq!(&second[1].1[..], b"custom-header");
    }

    #[test]
    fn a_table_size_update_is_read_back_by_the_decoder() {
        for size in [0usize, 30, 31, 100, 4096] {
            let mut block = BytesMut::new();
            encode_table_size_update(size, &mut block);
            encode_status(200, &mut block);
            let mut d = Decoder::new(4096);
            let mut got = Vec::new();
            d.decode(&block, |n, v| got.push((n.to_vec(), v.as_bytes().to_vec())))
                .unwrap_or_else(|e| panic!("size {size}: {e}"));
            assert_eq!(
                got,
                vec![(b":status".to_vec(), b"200".to_vec())],
                "size {size}"
            );
            assert_eq!(d.table.max_size, size, "size {size}");
        }
    }

    #[test]
    fn static_table_values_are_static() {
        let mut d = Decoder::new(4096);
        // :method GET, :path /index.html, :authority (empty), and :path with a literal
        // value (copied).
        let got = decode_shared(&mut d, &hex("82 85 81 040c 2f73 616d 706c 652f 7061 7468"));
        assert_eq!(got[0].1.as_ptr(), STATIC_TABLE[1].1.as_ptr());
        assert_eq!(got[1].1.as_ptr(), STATIC_TABLE[4].1.as_ptr());
        assert_eq!(&got[1].1[..], b"/index.html");
        assert!(got[2].1.is_empty());
        assert_eq!(&got[3].1[..], b"/sample/path");
        assert_eq!(d.table(), (vec![], 0));
    }

    /// A field representation a property test can encode, with an independent model of
    /// the dynamic table (names/values newest first, max size).
    #[derive(Debug, Clone)]
    enum Rep {
        /// Index into static (1..=61) or model dynamic table (wrapped to its length).
        Indexed(usize),
        Literal {
            name: Vec<u8>,
            value: Vec<u8>,
            index: bool,
            huffman_name: bool,
            huffman_value: bool,
        },
        SizeUpdate(usize),
    }

    fn rep() -> impl Strategy<Value = Rep> {
        let bytes = || prop::collection::vec(any::<u8>(), 0..40);
        prop_oneof![
            (0usize..200).prop_map(Rep::Indexed),
            (
                bytes(),
                bytes(),
                any::<bool>(),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(name, value, index, huffman_name, huffman_value)| {
                    Rep::Literal {
                        name,
                        value,
                        index,
                        huffman_name,
                        huffman_value,
                    }
                }),
            (0usize..=256).prop_map(Rep::SizeUpdate),
        ]
    }

    fn put_string(s: &[u8], huffman: bool, dst: &mut BytesMut) {
        if huffman {
            let mut h = Vec::new();
            super::huffman::encode(s, &mut h);
            encode_integer(h.len(), 7, 0x80, dst);
            dst.put_slice(&h);
        } else {
            encode_string(s, dst);
        }
    }

    proptest! {
        #[test]
        fn decoder_never_panics(
            blocks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..256), 1..4),
            max in prop_oneof![Just(0usize), Just(64), Just(256), Just(4096)],
        ) {
            let mut d = Decoder::new(max);
            for block in blocks {
                let _ = d.decode(&block, |_, _| {});
                prop_assert!(d.table.size <= d.table.max_size);
            }
        }

        /// Random representations, encoded by the test and decoded, against a naive
        /// model of the dynamic table (including eviction and size updates).
        #[test]
        fn decoder_matches_a_model(blocks in prop::collection::vec(prop::collection::vec(rep(), 0..12), 1..5)) {
            const MAX: usize = 256;
            let mut d = Decoder::new(MAX);
            let mut model: Vec<(Vec<u8>, Vec<u8>)> = Vec::new(); // newest first
            let mut model_max = MAX;
            let evict = |model: &mut Vec<(Vec<u8>, Vec<u8>)>, max: usize| {
                while model.iter().map(|(n, v)| n.len() + v.len() + 32).sum::<usize>() > max {
                    model.pop();
                }
            };
            for reps in blocks {
                let mut block = BytesMut::new();
                let mut want = Vec::new();
                let mut at_start = true;
                for rep in reps {
                    match rep {
                        Rep::SizeUpdate(size) => {
                            if !at_start {
                                continue;
                            }
                            encode_integer(size, 5, 0x20, &mut block);
                            model_max = size;
                            evict(&mut model, model_max);
                            continue;
                        }
                        Rep::Indexed(i) => {
                            let total = STATIC_TABLE.len() + model.len();
                            let index = i % total + 1;
                            encode_integer(index, 7, 0x80, &mut block);
                            let (n, v) = match STATIC_TABLE.get(index - 1) {
                                Some(&(n, v)) => (n.to_vec(), v.to_vec()),
                                None => model[index - 62].clone(),
                            };
                            want.push((n, v));
                        }
                        Rep::Literal { name, value, index, huffman_name, huffman_value } => {
                            block.put_u8(if index { 0x40 } else { 0x00 });
                            put_string(&name, huffman_name, &mut block);
                            put_string(&value, huffman_value, &mut block);
                            want.push((name.clone(), value.clone()));
                            if index {
                                model.insert(0, (name, value));
                                evict(&mut model, model_max);
                            }
                        }
                    }
                    at_start = false;
                }
                let mut got = Vec::new();
                d.decode(&block, |n, v| got.push((n.to_vec(), v.to_bytes().to_vec()))).unwrap();
                prop_assert_eq!(got, want);
                let table: Vec<(Vec<u8>, Vec<u8>)> = d
                    .table
                    .entries
                    .iter()
                    .map(|e| (e.field().0.to_vec(), e.field().1.to_vec()))
                    .collect();
                prop_assert_eq!(&table, &model);
                let size: usize = model.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
                prop_assert_eq!(d.table.size, size);
            }
        }

        #[test]
        fn huffman_round_trips(s in prop::collection::vec(any::<u8>(), 0..100)) {
            let mut h = Vec::new();
            super::huffman::encode(&s, &mut h);
            let mut out = Vec::new();
            prop_assert!(super::huffman::decode(&h, &mut out).is_ok());
            prop_assert_eq!(out, s);
        }

        #[test]
        fn encoder_round_trips(
            list in prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(STATIC_TABLE.iter().map(|&(n, _)| n.to_vec()).collect::<Vec<_>>()),
                        prop::collection::vec(any::<u8>(), 0..300),
                    ],
                    prop::collection::vec(any::<u8>(), 0..300),
                    any::<bool>(),
                ),
                0..8,
            ),
            status in 100u16..1000,
        ) {
            let mut block = BytesMut::new();
            encode_status(status, &mut block);
            for (n, v, s) in &list {
                encode_field(n, v, *s, &mut block);
            }
            let mut want = vec![(b":status".to_vec(), status.to_string().into_bytes())];
            want.extend(list.into_iter().map(|(n, v, _)| (n, v)));
            let mut got = Vec::new();
            let mut d = Decoder::new(4096);
            d.decode(&block, |n, v| got.push((n.to_vec(), v.to_bytes().to_vec()))).unwrap();
            prop_assert_eq!(got, want);
            prop_assert_eq!(d.table.size, 0);
        }
    }
}
