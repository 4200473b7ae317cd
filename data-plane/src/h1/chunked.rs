//! The chunked transfer coding (RFC 9112 §7.1) as a strict incremental scanner. It
//! finds where a chunked body ends and which bytes are payload, so the engine can pass
//! the framing through untouched (the common case) or strip it (for HTTP/1.0 clients).
//! Anything a lenient parser and a strict one could read differently — bare LF, bytes
//! after the chunk data, control characters in extensions, a trailer line that is not a
//! well-formed field line, oversized lines — is an error, which closes the connection:
//! no request smuggling through us.
//!
//! Trailer fields are checked and then dropped, in both directions (RFC 9112 §7.1.2
//! allows it): a backend that merges trailers into the head, or reads one line too far,
//! never sees a field we did not route on. [`Progress::forward`] is the prefix of the
//! consumed bytes to pass through; when trailers were dropped, [`Progress::end`] is the
//! empty line that closes the body in their place.

use std::ops::Range;

/// A chunk-size line or a trailer line longer than this is refused.
const MAX_LINE: usize = 4096;
/// All trailer lines together.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct ChunkedError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Right after chunk data: CRLF must follow.
    DataEnd,
    /// At the start of a trailer line (or the final empty line).
    Trailer,
    Done,
}

/// Scanner state for one chunked body.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    trailer_bytes: usize,
}

/// The empty line that ends a chunked body whose trailer section was dropped.
const END: &[u8] = b"\r\n";

/// How far one [`Chunked::scan`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input that were complete framing or payload. The rest (a partial
    /// line) must be kept and offered again with more bytes behind it.
    pub consumed: usize,
    /// How many of the consumed bytes are passed through: all of them, except trailer
    /// lines (and the empty line after them, which [`Progress::end`] stands for).
    pub forward: usize,
    /// The body's last byte (the empty line after the trailers) was consumed.
    pub done: bool,
}

impl Progress {
    /// What to send after `forward` bytes: the final empty line when the body ended in
    /// this scan and trailer lines were dropped from it, otherwise nothing.
    pub fn end(&self) -> &'static [u8] {
        if self.done && self.forward < self.consumed {
            END
        } else {
            b""
        }
    }

    /// Rewrites the scanned bytes, which start at `buf[at]`, into what is passed on:
    /// dropped trailer lines are cut out (and the closing empty line put in their
    /// place). Returns how many bytes from `at` are to be sent now; every consumed byte
    /// has been either kept in them or removed.
    pub fn compact(&self, buf: &mut Vec<u8>, at: usize) -> usize {
        if self.forward < self.consumed {
            let end = self.end();
            buf.splice(at + self.forward..at + self.consumed, end.iter().copied());
            self.forward + end.len()
        } else {
            self.consumed
        }
    }
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunked {
    pub fn new() -> Self {
        Self {
            state: State::Size,
            trailer_bytes: 0,
        }
    }

    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans `buf`, calling `payload` with the ranges of `buf` that are chunk data.
    /// Never consumes bytes past the end of the body.
    pub fn scan(
        &mut self,
        buf: &[u8],
        mut payload: impl FnMut(Range<usize>),
    ) -> Result<Progress, ChunkedError> {
        let mut pos = 0;
        // Where the trailer section (never passed through) started in this scan.
        let mut trailers_from = None;
        loop {
            match self.state {
                State::Size => {
                    let Some(line) = line(buf, pos)? else { break };
                    let size = chunk_size(&buf[pos..line.start + line.len])?;
                    pos = line.next;
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    let avail = (buf.len() - pos) as u64;
                    if avail == 0 {
                        break;
                    }
                    let take = left.min(avail) as usize;
                    payload(pos..pos + take);
                    pos += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => {
                    match buf.get(pos..pos + 2) {
                        None if buf.len() - pos == 1 && buf[pos] != b'\r' => {
                            return Err(ChunkedError);
                        }
                        None => break,
                        Some(b"\r\n") => pos += 2,
                        Some(_) => return Err(ChunkedError),
                    }
                    self.state = State::Size;
                }
                State::Trailer => {
                    let Some(line) = line(buf, pos)? else { break };
                    let content = &buf[pos..line.start + line.len];
                    if !content.is_empty() && !is_field_line(content) {
                        return Err(ChunkedError);
                    }
                    if self.trailer_bytes > 0 || !content.is_empty() {
                        // Trailers present: this line (and the final one) is dropped.
                        trailers_from.get_or_insert(pos);
                    }
                    self.trailer_bytes += line.next - pos;
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(ChunkedError);
                    }
                    pos = line.next;
                    if content.is_empty() {
                        self.state = State::Done;
                    }
                }
                State::Done => break,
            }
        }
        Ok(Progress {
            consumed: pos,
            forward: trailers_from.unwrap_or(pos),
            done: self.state == State::Done,
        })
    }
}

struct Line {
    start: usize,
    /// Length without the CRLF.
    len: usize,
    /// Where the next line starts.
    next: usize,
}

/// The CRLF-terminated line starting at `pos`, `None` if it is not complete yet.
fn line(buf: &[u8], pos: usize) -> Result<Option<Line>, ChunkedError> {
    let rest = &buf[pos..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(nl) if nl > 0 && rest[nl - 1] == b'\r' && nl <= MAX_LINE => Ok(Some(Line {
            start: pos,
            len: nl - 1,
            next: pos + nl + 1,
        })),
        Some(_) => Err(ChunkedError),
        None if rest.len() > MAX_LINE => Err(ChunkedError),
        None => Ok(None),
    }
}

/// A trailer line must be a field line (RFC 9112 §5, RFC 9110 §5.5): a token, a colon
/// right after it, then visible bytes, spaces and tabs. This refuses a request line
/// smuggled in as a "trailer", obs-fold (a line starting with whitespace) and
/// whitespace before the colon.
fn is_field_line(line: &[u8]) -> bool {
    let name = line.iter().take_while(|&&b| is_tchar(b)).count();
    name > 0
        && line.get(name) == Some(&b':')
        && line[name + 1..]
            .iter()
            .all(|&b| b == b'\t' || b == b' ' || (b'!'..=b'~').contains(&b) || b >= 0x80)
}

/// `tchar` (RFC 9110 §5.6.2).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `1*HEXDIG [ BWS ";" chunk-ext ]`, the extension being visible ASCII, space or tab.
fn chunk_size(line: &[u8]) -> Result<u64, ChunkedError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ChunkedError);
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).ok_or(ChunkedError)?;
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or(ChunkedError)?;
    }
    let rest = &line[digits..];
    // Only SP and HTAB may precede the `;` (not CR or FF, as `trim_ascii_start` allows).
    let ext = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    if !rest.is_empty()
        && (ext.first() != Some(&b';')
            || !ext
                .iter()
                .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)))
    {
        return Err(ChunkedError);
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes, as a socket would, keeping unconsumed
    /// bytes. Returns (payload, bytes consumed in total, done, bytes passed through).
    fn relay(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool, Vec<u8>), ChunkedError> {
        let mut c = Chunked::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut payload = Vec::new();
        let mut passed = Vec::new();
        let mut total = 0;
        for piece in input.chunks(step.max(1)) {
            pending.extend_from_slice(piece);
            let p = c.scan(&pending, |r| payload.extend_from_slice(&pending[r]))?;
            total += p.consumed;
            let n = p.compact(&mut pending, 0);
            passed.extend_from_slice(&pending[..n]);
            pending.drain(..n);
            if p.done {
                break;
            }
        }
        Ok((payload, total, c.is_done(), passed))
    }

    fn run(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), ChunkedError> {
        relay(input, step).map(|(payload, total, done, _)| (payload, total, done))
    }

    #[test]
    fn trailers_are_checked_then_dropped() {
        // (input, what is passed through)
        let cases: &[(&[u8], &[u8])] = &[
            (b"0\r\n\r\n", b"0\r\n\r\n"),
            (b"5\r\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
            (
                b"5\r\nhello\r\n0\r\nX: y\r\n\r\n",
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
            (
                b"1\r\na\r\n0\r\nExpires: never\r\nX-Sum:abc \t\r\n\r\n",
                b"1\r\na\r\n0\r\n\r\n",
            ),
        ];
        for (input, want) in cases {
            for step in [1, 2, 3, 5, 1000] {
                let got = relay(input, step).unwrap_or_else(|e| panic!("{input:?}/{step}: {e}"));
                assert_eq!(got.3, *want, "{input:?} step {step}");
                assert_eq!(got.1, input.len(), "{input:?} step {step}");
                assert!(got.2, "{input:?} step {step}");
            }
        }
    }

    #[test]
    fn a_trailer_that_is_not_a_field_line_is_refused() {
        let cases: &[&[u8]] = &[
            // a request smuggled in as a trailer
            b"5\r\nhello\r\n0\r\nX: y\r\nGET /admin/secret HTTP/1.1\r\nHost: h\r\n\r\n",
            b"0\r\nGET /admin HTTP/1.1\r\n\r\n",
            b"0\r\nX: a\r\n b\r\n\r\n", // obs-fold
            b"0\r\n\tb\r\n\r\n",        // starts with whitespace
            b"0\r\nX-T : a\r\n\r\n",    // whitespace before the colon
            b"0\r\n: a\r\n\r\n",        // no name
            b"0\r\nX-T\r\n\r\n",        // no colon
            b"0\r\nX\x00: a\r\n\r\n",   // NUL in the name
            b"0\r\nX: a\x00\r\n\r\n",   // NUL in the value
            b"0\r\nX(y): a\r\n\r\n",    // not a token
        ];
        for input in cases {
            for step in [1, 1000] {
                assert_eq!(
                    relay(input, step).err(),
                    Some(ChunkedError),
                    "{input:?} step {step}"
                );
            }
        }
    }

    #[test]
    fn well_formed_bodies_in_any_split() {
        // (input, payload, consumed)
        let cases: &[(&[u8], &[u8], usize)] = &[
            (b"0\r\n\r\n", b"", 5),
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello", 15),
            (
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                b"hello world",
                26,
            ),
            (b"A;name=val\r\n0123456789\r\n0\r\n\r\n", b"0123456789", 29),
            (b"3 ;x\r\nabc\r\n0\r\nExpires: never\r\n\r\n", b"abc", 32),
            // bytes after the end belong to the next message and are not consumed
            (b"1\r\nx\r\n0\r\n\r\nGET / HTTP/1.1", b"x", 11),
        ];
        for (input, want, consumed) in cases {
            for step in [1, 2, 3, 7, 1000] {
                let got = run(input, step).unwrap_or_else(|e| panic!("{input:?}/{step}: {e}"));
                assert_eq!(got.0, *want, "{input:?} step {step}");
                assert_eq!(got.1, *consumed, "{input:?} step {step}");
                assert!(got.2, "{input:?} step {step}: not done");
            }
        }
    }

    #[test]
    fn ambiguous_or_malformed_framing_is_refused() {
        let cases: &[&[u8]] = &[
            b"5\nhello\r\n0\r\n\r\n",      // bare LF after size
            b"5\r\nhelloX\r\n0\r\n\r\n",   // data longer than declared
            b"5\r\nhello\n0\r\n\r\n",      // bare LF after data
            b"x\r\n\r\n",                  // not hex
            b"\r\n",                       // no size
            b"-1\r\n",                     // sign
            b"5 5\r\nhello\r\n",           // junk after size
            b"11111111111111111\r\n",      // 17 digits
            b"1;a\x01b\r\nx\r\n0\r\n\r\n", // control char in extension
            b"0\r\nX-T: a\rb\r\n\r\n",     // bare CR in a trailer
        ];
        for input in cases {
            for step in [1, 1000] {
                assert_eq!(
                    run(input, step).err(),
                    Some(ChunkedError),
                    "{input:?} step {step}"
                );
            }
        }
        let long = [b"1;".as_slice(), &[b'a'; MAX_LINE], b"\r\n"].concat();
        assert_eq!(run(&long, 1000).err(), Some(ChunkedError));
    }

    #[test]
    fn incomplete_bodies_are_not_done() {
        for input in [
            &b"5\r\nhel"[..],
            b"5\r\nhello\r\n",
            b"0\r\n",
            b"0\r\nX: y\r\n",
        ] {
            let (_, _, done) = run(input, 1).unwrap();
            assert!(!done, "{input:?}");
        }
    }
}
