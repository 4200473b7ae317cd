//! W3C Trace Context (`traceparent`, `tracestate`): the proxy is one hop of a trace.
//! A valid incoming `traceparent` keeps its trace id and flags; otherwise a new trace
//! starts, sampled with the probability `--trace-sample-ratio`. Either way the proxy
//! makes its own span id, and that is the parent id the upstream sees. `tracestate` is
//! passed on only with a valid `traceparent` (a restarted trace drops it).
//! No spans are exported (no OTLP yet): the trace id is for correlating the access log
//! and error bodies with the services' own traces.

/// One request's trace context, as sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The proxy's span: the `parent-id` the upstream gets.
    pub span_id: [u8; 8],
    /// The caller's span, when the trace came in.
    pub parent_id: Option<[u8; 8]>,
    pub flags: u8,
}

/// `ratio` (clamped to 0..=1) as a threshold a random `u64` is compared with.
pub fn threshold(ratio: f64) -> u64 {
    if ratio.is_nan() || ratio <= 0.0 {
        0
    } else if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio * u64::MAX as f64) as u64
    }
}

fn hex_nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Lowercase hex only (the spec refuses uppercase).
fn decode<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = hex_nibble(pair[0])? << 4 | hex_nibble(pair[1])?;
    }
    Some(out)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Each byte's two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = [HEX[b >> 4], HEX[b & 15]];
        b += 1;
    }
    t
};

/// `bytes` in lowercase hex into `out` (twice as long).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
}

impl TraceContext {
    /// Parses a `traceparent` value (W3C Trace Context level 1, §3.2): `None` if it is
    /// invalid. Versions above 00 are read for their 00 fields.
    pub fn parse(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
        let v = value.trim_ascii();
        if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let [version] = decode::<1>(&v[..2])?;
        if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
            return None;
        }
        let trace_id = decode::<16>(&v[3..35])?;
        let parent_id = decode::<8>(&v[36..52])?;
        let [flags] = decode::<1>(&v[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        // Only the sampled bit is defined; unknown flags of a newer version are dropped.
        let flags = if version == 0 { flags } else { flags & 1 };
        Some((trace_id, parent_id, flags))
    }

    /// The context for a request that carried `incoming` (its `traceparent`, if exactly
    /// one): continued when valid, started otherwise (sampled when a random draw falls
    /// under `threshold`). Returns it and whether `tracestate` may be passed on.
    pub fn for_request(incoming: Option<&[u8]>, threshold: u64) -> (Self, bool) {
        let span_id = nonzero_u64().to_be_bytes();
        match incoming.and_then(Self::parse) {
            Some((trace_id, parent, flags)) => (
                Self {
                    trace_id,
                    span_id,
                    parent_id: Some(parent),
                    flags,
                },
                true,
            ),
            None => {
                let hi = nonzero_u64();
                let lo = fastrand::u64(..);
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&hi.to_be_bytes());
                trace_id[8..].copy_from_slice(&lo.to_be_bytes());
                let sampled = threshold != 0 && fastrand::u64(..) <= threshold;
                (
                    Self {
                        trace_id,
                        span_id,
                        parent_id: None,
                        flags: u8::from(sampled),
                    },
                    false,
                )
            }
        }
    }

    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The `traceparent` value the upstream gets (55 bytes; built in place and
    /// appended at once: it is on every forwarded request's path).
    pub fn put_traceparent(&self, out: &mut Vec<u8>) {
        let mut v = *b"00-################################-################-##";
        hex_into(&mut v[3..35], &self.trace_id);
        hex_into(&mut v[36..52], &self.span_id);
        hex_into(&mut v[53..55], &[self.flags]);
        out.extend_from_slice(&v);
    }

    pub fn put_trace_id(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.trace_id_hex());
    }

    /// The trace id in hex (32 bytes, no allocation).
    pub fn trace_id_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex_into(&mut out, &self.trace_id);
        out
    }

    pub fn traceparent(&self) -> http::HeaderValue {
        let mut v = Vec::with_capacity(55);
        self.put_traceparent(&mut v);
        // The vector becomes the value (no copy, one allocation).
        http::HeaderValue::from_maybe_shared(bytes::Bytes::from(v))
            .unwrap_or(http::HeaderValue::from_static(""))
    }
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_values() {
        let cases: &[(&str, bool)] = &[
            (VALID, true),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                true,
            ),
            // A future version with more fields.
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-extra",
                true,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                false,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                false,
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                false,
            ),
            ("", false),
            ("garbage", false),
        ];
        for (value, valid) in cases {
            assert_eq!(
                TraceContext::parse(value.as_bytes()).is_some(),
                *valid,
                "{value}"
            );
        }
    }

    #[test]
    fn a_valid_trace_is_continued_with_a_new_span() {
        let (ctx, keep_state) = TraceContext::for_request(Some(VALID.as_bytes()), 0);
        assert!(keep_state);
        assert!(ctx.sampled());
        assert_eq!(&ctx.trace_id_hex(), b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(
            ctx.span_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        let mut out = Vec::new();
        ctx.put_traceparent(&mut out);
        assert_eq!(out.len(), 55);
        let (trace, parent, flags) = TraceContext::parse(&out).unwrap();
        assert_eq!(trace, ctx.trace_id);
        assert_eq!(parent, ctx.span_id);
        assert_eq!(flags, 1);
    }

    #[test]
    fn a_missing_or_invalid_trace_is_started_per_the_ratio() {
        for (incoming, ratio, sampled) in [
            (None, 0.0, false),
            (None, 1.0, true),
            (Some(&b"nonsense"[..]), 1.0, true),
            (Some(&b"nonsense"[..]), 0.0, false),
        ] {
            let (ctx, keep_state) = TraceContext::for_request(incoming, threshold(ratio));
            assert!(!keep_state);
            assert_eq!(ctx.sampled(), sampled, "{incoming:?} {ratio}");
            assert_ne!(ctx.trace_id, [0; 16]);
            assert_ne!(ctx.span_id, [0; 8]);
        }
        // Half, roughly.
        let t = threshold(0.5);
        let n = (0..2000)
            .filter(|_| TraceContext::for_request(None, t).0.sampled())
            .count();
        assert!((800..1200).contains(&n), "{n}");
    }
}
