//! Decimal numbers written straight into byte buffers, without `core::fmt`: the
//! HTTP/1.1 engine's heads (status codes, `Content-Length`, chunk sizes) and the access
//! log's lines, both on every request's path, share these.

/// Appends the decimal form of `n`. The digits are pushed one by one: the numbers here
/// are short, and a copy of a slice of unknown length is a `memcpy` call.
pub fn put_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.reserve(digits.len() - i);
    for &d in &digits[i..] {
        out.push(d);
    }
}

/// Appends `n` in exactly `width` digits (at most 20), zero-padded; only the low
/// `width` digits of a larger `n` are written.
pub fn put_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let width = width.min(digits.len());
    for d in digits[..width].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_match_display() {
        for n in [0u64, 7, 10, 999, 1000, 123_456_789, u64::MAX] {
            let mut out = Vec::new();
            put_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        for (n, width, want) in [
            (0, 3, "000"),
            (7, 2, "07"),
            (123, 3, "123"),
            (2026, 4, "2026"),
        ] {
            let mut out = Vec::new();
            put_padded(&mut out, n, width);
            assert_eq!(out, want.as_bytes());
        }
    }
}
