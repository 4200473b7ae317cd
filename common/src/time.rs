//! The one time format Routemaster shows people and programs: RFC 3339 in UTC with
//! milliseconds (`2026-11-30T22:01:39.718Z`), in the status API, the CLI's JSON and the
//! proxy's `/config` alike.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `t` in RFC 3339 (UTC, milliseconds). Times before 1970 (a broken clock) read as the
/// epoch.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t.max(UNIX_EPOCH)).to_string()
}

/// Unix milliseconds in RFC 3339.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_millis(unix_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_796_076_099_718, "2026-11-30T22:01:39.718Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (951_868_799_999, "2000-02-29T23:59:59.999Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
            (1_709_164_800_001, "2024-02-29T00:00:00.001Z"),
            (1_735_689_599_000, "2024-12-31T23:59:59.000Z"),
        ];
        for (ms, want) in cases {
            assert_eq!(rfc3339_ms(ms), want, "{ms}");
        }
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
