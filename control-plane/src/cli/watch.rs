//! `status --watch` frames: on a terminal each refresh redraws the screen in place
//! (cursor home, every line cleared to its end, the rest of the screen cleared: no
//! blank flash between frames; a frame taller than the terminal is cut to fit, saying
//! how many lines it left out, so it never scrolls); otherwise each refresh is a plain
//! block after a timestamp line, so a log or a pipe gets a readable history.

/// Smallest `--interval` (a faster refresh only loads the control plane).
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

const HOME: &str = "\x1b[H";
const CLEAR_SCREEN: &str = "\x1b[2J";
const CLEAR_LINE_END: &str = "\x1b[K";
const CLEAR_BELOW: &str = "\x1b[J";

/// One refresh: `body` (what `status` printed, or the error) under a header naming the
/// interval and the time (`at`, RFC 3339). `first` clears the terminal once; `rows` is
/// the terminal's height, when known.
pub fn frame(
    body: &str,
    at: &str,
    interval: std::time::Duration,
    tty: bool,
    first: bool,
    rows: Option<usize>,
) -> String {
    let header = format!(
        "every {}: routemaster status    {at}",
        humantime::format_duration(interval)
    );
    if !tty {
        let mut out = String::new();
        if !first {
            out.push('\n');
        }
        out.push_str(&format!("--- {header}\n"));
        out.push_str(body);
        if !body.ends_with('\n') {
            out.push('\n');
        }
        return out;
    }
    let mut out = String::new();
    if first {
        out.push_str(CLEAR_SCREEN);
    }
    out.push_str(HOME);
    let mut lines: Vec<String> = std::iter::once(header.as_str())
        .chain(std::iter::once(""))
        .chain(body.lines())
        .map(str::to_owned)
        .collect();
    // The last row stays free: a newline there would scroll the screen.
    if let Some(fit) = rows
        .map(|r| r.saturating_sub(1))
        .filter(|&f| f >= 2 && lines.len() > f)
    {
        let left_out = lines.len() - (fit - 1);
        lines.truncate(fit - 1);
        lines.push(format!(
            "… {left_out} more lines (a taller terminal shows them)"
        ));
    }
    for line in &lines {
        out.push_str(line);
        out.push_str(CLEAR_LINE_END);
        out.push('\n');
    }
    out.push_str(CLEAR_BELOW);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn frames() {
        let at = "2026-01-01T00:00:00Z";
        let s = Duration::from_secs(2);
        let cases = [
            (
                false,
                true,
                "--- every 2s: routemaster status    2026-01-01T00:00:00Z\nversion 3\n",
            ),
            (
                false,
                false,
                "\n--- every 2s: routemaster status    2026-01-01T00:00:00Z\nversion 3\n",
            ),
            (
                true,
                true,
                "\x1b[2J\x1b[Hevery 2s: routemaster status    2026-01-01T00:00:00Z\x1b[K\n\x1b[K\nversion 3\x1b[K\n\x1b[J",
            ),
            (
                true,
                false,
                "\x1b[Hevery 2s: routemaster status    2026-01-01T00:00:00Z\x1b[K\n\x1b[K\nversion 3\x1b[K\n\x1b[J",
            ),
        ];
        for (tty, first, want) in cases {
            assert_eq!(
                frame("version 3\n", at, s, tty, first, Some(24)),
                want,
                "{tty} {first}"
            );
        }
        // Taller than the terminal: cut to fit, never onto the last row.
        let body: String = (1..=10).map(|i| format!("line {i}\n")).collect();
        let cut = frame(&body, at, s, true, false, Some(6));
        let shown: Vec<&str> = cut.lines().collect();
        // Five rows of text (header, blank, two lines, the note), then clear-below.
        assert_eq!(shown.len(), 6, "{cut:?}");
        assert_eq!(shown[5], "\x1b[J");
        assert_eq!(shown[2], "line 1\x1b[K");
        assert_eq!(
            shown[4],
            "… 8 more lines (a taller terminal shows them)\x1b[K"
        );
        // Off a terminal, or with its height unknown, nothing is cut.
        assert_eq!(frame(&body, at, s, true, false, None).lines().count(), 13);
        assert_eq!(
            frame(&body, at, s, false, false, Some(6)).lines().count(),
            12
        );
        // No escape codes off a terminal.
        assert!(!frame("x", at, s, false, false, None).contains('\x1b'));
    }
}
