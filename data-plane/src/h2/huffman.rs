//! HPACK Huffman decoding (RFC 7541 §5.2, Appendix B). Decode only: our encoder writes
//! strings raw.
//!
//! A byte-at-a-time state machine over [`DECODE_TABLE`] (from hyperium/h2, see
//! `huffman_table.rs`; the routine follows h2's `src/hpack/huffman/mod.rs`, MIT): each
//! step looks up the next eight input bits in the current table and either emits a byte
//! (consuming only that symbol's bits) or moves to a subtable (consuming all eight).
//! A code that reaches EOS is an error, and so is padding that is longer than seven bits,
//! not all ones, or that cuts a symbol short (§5.2).

use super::huffman_table::DECODE_TABLE;

/// Bit 15 of an entry: a branch to another table rather than a decoded byte.
const BRANCH: u16 = 0x8000;
/// Bits 8..=14 of a branch: the next table's index (0 means an invalid code, EOS).
const TABLE_INDEX_MASK: u16 = 0x7f00;
const TABLE_WIDTH: usize = 256;

/// The string is not valid Huffman (contains EOS, or has bad padding).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct InvalidHuffman;

/// The entry for eight bits `index` in table `table`; out of range reads as an invalid
/// code (cannot happen with the generated table, checked by a test).
#[inline]
fn entry(table: usize, index: u8) -> u16 {
    DECODE_TABLE
        .get(table * TABLE_WIDTH + usize::from(index))
        .copied()
        .unwrap_or(BRANCH)
}

/// Decodes `src` into `dst` (cleared first; its capacity is reused).
pub(super) fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), InvalidHuffman> {
    dst.clear();
    // The shortest code is 5 bits: at most 8/5 output bytes per input byte.
    dst.reserve(src.len().saturating_mul(8) / 5);

    let mut table = 0usize;
    // Input bits not yet consumed are the low `bits` bits of `acc` (bits < 16).
    let mut acc = 0u32;
    let mut bits = 0u32;

    for &byte in src {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 8 {
            let entry = entry(table, (acc >> (bits - 8)) as u8);
            if entry & BRANCH == 0 {
                dst.push(entry as u8);
                table = 0;
                // A leaf consumes 1..=8 bits (checked by a test), so this terminates.
                bits -= u32::from(entry >> 8);
            } else {
                table = usize::from((entry & TABLE_INDEX_MASK) >> 8);
                if table == 0 {
                    return Err(InvalidHuffman);
                }
                bits -= 8;
            }
        }
    }

    // Fewer than eight bits remain: more symbols, then padding. Padding is a prefix of
    // EOS (all ones) and only valid once the previous symbol has completed.
    while bits > 0 {
        let padding = (1u32 << bits) - 1;
        if table == 0 && acc & padding == padding {
            break;
        }
        let entry = entry(table, (acc << (8 - bits)) as u8);
        if entry & BRANCH != 0 {
            return Err(InvalidHuffman);
        }
        let used = u32::from(entry >> 8);
        if used > bits {
            return Err(InvalidHuffman);
        }
        dst.push(entry as u8);
        table = 0;
        bits -= used;
    }

    if table == 0 {
        Ok(())
    } else {
        Err(InvalidHuffman)
    }
}

/// Huffman-encodes `src` (tests only: builds decoder inputs). From h2's `encode`.
#[cfg(test)]
pub(super) fn encode(src: &[u8], dst: &mut Vec<u8>) {
    use super::huffman_table::ENCODE_TABLE;

    let mut bits: u64 = 0;
    let mut bits_left = 40;
    for &b in src {
        let (nbits, code) = ENCODE_TABLE[usize::from(b)];
        bits |= code << (bits_left - nbits);
        bits_left -= nbits;
        while bits_left <= 32 {
            dst.push((bits >> 32) as u8);
            bits <<= 8;
            bits_left += 8;
        }
    }
    if bits_left != 40 {
        // Pad with the most significant bits of EOS (all ones).
        bits |= (1 << bits_left) - 1;
        dst.push((bits >> 32) as u8);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn dec(src: &[u8]) -> Result<Vec<u8>, InvalidHuffman> {
        let mut out = vec![0xAA; 3]; // stale content must be cleared
        decode(src, &mut out).map(|()| out)
    }

    /// Bytes from hex digits (whitespace ignored), as RFC 7541's examples print them.
    pub(in crate::h2) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn table_is_well_formed() {
        // Every branch points at an existing table; every leaf consumes 1..=8 bits.
        for &e in DECODE_TABLE.iter() {
            if e & BRANCH != 0 {
                assert!(usize::from((e & TABLE_INDEX_MASK) >> 8) < DECODE_TABLE.len() / 256);
            } else {
                assert!((1..=8).contains(&(e >> 8)), "leaf {e:#06x}");
            }
        }
    }

    #[test]
    fn rfc7541_vectors() {
        // Every Huffman string of RFC 7541 Appendix C.4 and C.6.
        let cases: &[(&str, &str)] = &[
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("640e ff", "307"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:22 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
            ("9bd9 ab", "gzip"),
            (
                "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
            ("", ""),
        ];
        for &(encoded, plain) in cases {
            let encoded = hex(encoded);
            assert_eq!(dec(&encoded).unwrap(), plain.as_bytes(), "{plain}");
            let mut again = Vec::new();
            encode(plain.as_bytes(), &mut again);
            assert_eq!(again, encoded, "{plain}");
        }
    }

    #[test]
    fn single_symbols() {
        let cases: &[(&[u8], &[u8])] = &[
            (&[0b0011_1111], b"o"),             // 5-bit 'o' + 3 bits padding
            (&[7], b"0"),                       // 5-bit '0' + 3 bits padding
            (&[(0x21 << 2) + 3], b"A"),         // 6-bit 'A' + 2 bits padding
            (&[255, 160 + 15], b"#"),           // 12-bit
            (&[255, 200 + 7], b"$"),            // 13-bit
            (&[255, 255, 255, 240 + 3], b"\n"), // 30-bit
            (&[254, 1], b"!0"),
            (&[0b0101_0011, 0b1111_1000], b" !"),
        ];
        for &(src, want) in cases {
            assert_eq!(dec(src).unwrap(), want, "{src:?}");
        }
    }

    #[test]
    fn all_octets_round_trip() {
        let src: Vec<u8> = (0..=u8::MAX).collect();
        let mut encoded = Vec::new();
        encode(&src, &mut encoded);
        assert_eq!(dec(&encoded).unwrap(), src);
        // And each octet alone (exercises every padding length).
        for b in 0..=u8::MAX {
            let mut encoded = Vec::new();
            encode(&[b], &mut encoded);
            assert_eq!(dec(&encoded).unwrap(), [b], "{b}");
        }
    }

    #[test]
    fn rejects_eos_and_bad_padding() {
        let cases: &[(&str, &[u8])] = &[
            ("8 bits of padding", &[0xff]),
            ("symbol then 8 bits of padding", &[0b0011_1111, 0xff]), // 'o' + 3 ones + 8 ones
            ("EOS (30 ones) padded", &[0xff, 0xff, 0xff, 0xff]),
            ("EOS then a symbol", &[0xff, 0xff, 0xff, 0xfc, 0x00]),
            ("padding of zeros", &[0b0011_1000]), // 'o' + 000
            ("padding not all ones", &[0b0011_1101]), // 'o' + 101
            ("incomplete 13-bit symbol", &[255, 200]),
            ("lone zero byte", &[0]),
        ];
        for &(what, src) in cases {
            assert_eq!(dec(src), Err(InvalidHuffman), "{what}");
        }
    }
}
