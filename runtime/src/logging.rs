//! Logging for every Routemaster program: `tracing` events as lines on stderr, in the
//! format `--log-format` names — `json` (one object per line, for log collectors) or
//! `text` (for people) — by default `text` when stderr is a terminal and `json`
//! otherwise. `RUST_LOG` filters them (`EnvFilter` syntax; each program passes its own
//! default). ANSI colour is used only for text on a terminal, never in files or pipes,
//! and never when `NO_COLOR` is set.

use std::ffi::OsString;
use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line: `timestamp`, `level`, `message`, the event's fields,
    /// `target` (and `span`/`spans` inside a span).
    Json,
    /// Human-readable lines, coloured on a terminal.
    Text,
}

impl LogFormat {
    /// The default: text for a terminal, JSON for anything else (a file, a pipe, a
    /// container runtime's log collector).
    pub fn default_for(stderr_is_terminal: bool) -> Self {
        if stderr_is_terminal {
            LogFormat::Text
        } else {
            LogFormat::Json
        }
    }

    /// [`LogFormat::default_for`] this process's stderr.
    pub fn for_stderr() -> Self {
        Self::default_for(std::io::stderr().is_terminal())
    }
}

/// The `--log-format` flag, flattened into each program's arguments
/// (`#[command(flatten)] log: LogArgs`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Format of the log lines on stderr (default: text on a terminal, json otherwise);
    /// RUST_LOG filters them.
    #[arg(long, value_enum, value_name = "FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
}

impl LogArgs {
    /// The format asked for, or the default for this process's stderr.
    pub fn format(&self) -> LogFormat {
        self.log_format.unwrap_or_else(LogFormat::for_stderr)
    }

    /// [`init`] with [`LogArgs::format`].
    pub fn init(&self, default_filter: &str) {
        init(self.format(), default_filter);
    }
}

/// The format [`init`] installed, for [`fatal`].
static INSTALLED: OnceLock<LogFormat> = OnceLock::new();

/// Installs the process-wide subscriber: `format` lines on stderr, filtered by `RUST_LOG`
/// or, when it is unset or invalid, by `default_filter` (`"info"`, `"warn"`…). Text is
/// coloured only when stderr is a terminal and `NO_COLOR` is unset. Only the first call
/// installs anything.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    if subscriber(format, filter, ansi, std::io::stderr)
        .try_init()
        .is_ok()
    {
        let _ = INSTALLED.set(format);
    }
}

/// Whether text lines are coloured: on a terminal, unless `NO_COLOR` is set to anything
/// but the empty string (<https://no-color.org>).
fn colour(stderr_is_terminal: bool, no_color: Option<OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

type BoxedSubscriber = Box<dyn tracing::Subscriber + Send + Sync>;

fn subscriber<W>(format: LogFormat, filter: EnvFilter, ansi: bool, writer: W) -> BoxedSubscriber
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(builder.json().flatten_event(true).with_ansi(false).finish()),
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
    }
}

/// Reports the error that ends a server process (`routemaster-proxy`,
/// `routemaster-control`): with JSON logs, as one `error` event, so every line on stderr
/// stays JSON; otherwise (or when `RUST_LOG` silences errors) as the plain line
/// `PROGRAM: ERROR`.
pub fn fatal(program: &str, error: impl fmt::Display) {
    if INSTALLED.get() == Some(&LogFormat::Json) && tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!(program, "{error}");
    } else {
        eprintln!("{program}: {error}");
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn default_format_and_colour() {
        assert_eq!(LogFormat::default_for(true), LogFormat::Text);
        assert_eq!(LogFormat::default_for(false), LogFormat::Json);
        // (stderr is a terminal, NO_COLOR, coloured)
        let cases = [
            (true, None, true),
            (true, Some(""), true),
            (true, Some("1"), false),
            (false, None, false),
            (false, Some("1"), false),
        ];
        for (terminal, no_color, want) in cases {
            assert_eq!(
                colour(terminal, no_color.map(OsString::from)),
                want,
                "terminal {terminal}, NO_COLOR {no_color:?}"
            );
        }
    }

    #[test]
    fn the_flag() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            log: LogArgs,
        }
        let cases = [
            (&["x", "--log-format", "json"][..], Some(LogFormat::Json)),
            (&["x", "--log-format=text"], Some(LogFormat::Text)),
            (&["x"], None),
        ];
        for (args, want) in cases {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!(cli.log.log_format, want, "{args:?}");
        }
        let err = Cli::try_parse_from(["x", "--log-format", "yaml"]).unwrap_err();
        assert!(
            err.to_string().contains("possible values: json, text"),
            "{err}"
        );
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines_of(format: LogFormat, ansi: bool) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let sub = subscriber(format, EnvFilter::new("info"), ansi, move || writer.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::info!(version = 3, path = "routes \"a\".yaml", "route file loaded");
            tracing::debug!("filtered out");
            tracing::warn!(error = %"boom", "keeping the last good table");
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_lines_are_one_flat_object_each_and_never_coloured() {
        for ansi in [false, true] {
            let text = lines_of(LogFormat::Json, ansi);
            assert!(!text.contains('\x1b'), "ANSI in JSON: {text:?}");
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect();
            assert_eq!(lines.len(), 2, "{text}");
            let first = &lines[0];
            assert_eq!(first["level"], "INFO");
            assert_eq!(first["message"], "route file loaded");
            assert_eq!(first["version"], 3);
            assert_eq!(first["path"], "routes \"a\".yaml");
            assert!(first["timestamp"].is_string() && first["target"].is_string());
            assert_eq!(lines[1]["level"], "WARN");
            assert_eq!(lines[1]["error"], "boom");
        }
    }

    #[test]
    fn text_is_coloured_only_when_asked() {
        let cases = [(false, false), (true, true)];
        for (ansi, escapes) in cases {
            let text = lines_of(LogFormat::Text, ansi);
            assert_eq!(text.lines().count(), 2, "{text}");
            assert!(text.contains("route file loaded"), "{text}");
            assert_eq!(text.contains('\x1b'), escapes, "ansi {ansi}: {text:?}");
        }
    }
}
