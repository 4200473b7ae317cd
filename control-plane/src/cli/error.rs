//! The CLI's errors: each one is a single line (after `error: `) that says what went
//! wrong in the user's terms, never a chain of causes.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use routemaster_common::ValidationErrors;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the control plane at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the control plane at {url} did not answer within {}s", .after.as_secs())]
    Timeout { url: String, after: Duration },
    #[error("invalid control plane URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// A `tonic::Status` from the control plane: its message names the object and field.
    #[error("{0}")]
    Server(String),
    #[error("cannot read {path}: {reason}")]
    ReadFile { path: String, reason: String },
    #[error("{path}: {reason}")]
    ParseFile { path: String, reason: String },
    #[error("{path} is invalid:{}", indented(.errors))]
    InvalidFile {
        path: String,
        errors: ValidationErrors,
    },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Other(String),
    /// Writing the output failed (e.g. stdout closed).
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// One validation error per line: a file with many mistakes stays readable.
fn indented(errors: &ValidationErrors) -> String {
    errors.0.iter().map(|e| format!("\n  {e}")).collect()
}

impl CliError {
    /// A failed connection attempt (`Endpoint::connect`).
    pub fn unreachable(
        url: &str,
        err: &(dyn StdError + 'static),
        connect_timeout: Duration,
    ) -> Self {
        CliError::Unreachable {
            url: url.to_owned(),
            reason: transport_reason(err, connect_timeout),
        }
    }

    /// A failed call. Statuses made locally by tonic (the connection dropped, the
    /// request timed out) carry the underlying error as their source; statuses sent by
    /// the control plane have none and are shown by their message.
    pub fn from_status(
        url: &str,
        status: tonic::Status,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        if find::<tonic::TimeoutExpired>(&status).is_some() {
            return CliError::Timeout {
                url: url.to_owned(),
                after: request_timeout,
            };
        }
        if let Some(io) = find::<io::Error>(&status) {
            return CliError::Unreachable {
                url: url.to_owned(),
                reason: io_reason(io, connect_timeout),
            };
        }
        if status.message().is_empty() {
            CliError::Server(format!("{} (no message)", status.code().description()))
        } else {
            CliError::Server(status.message().to_owned())
        }
    }
}

/// The first error of type `T` in `err`'s source chain, `err` included.
fn find<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// Why a connection failed, in a few words: the io error at the bottom of the chain
/// (hyper's and tonic's wrappers add only "transport error" / "tcp connect error"), or
/// failing that the innermost cause.
fn transport_reason(err: &(dyn StdError + 'static), connect_timeout: Duration) -> String {
    if let Some(io) = find::<io::Error>(err) {
        return io_reason(io, connect_timeout);
    }
    let mut innermost = err;
    while let Some(next) = innermost.source() {
        innermost = next;
    }
    innermost.to_string()
}

fn io_reason(io: &io::Error, connect_timeout: Duration) -> String {
    if io.kind() == io::ErrorKind::TimedOut {
        return format!("timed out after {}s", connect_timeout.as_secs());
    }
    if io.raw_os_error().is_some() {
        // "connection refused" rather than "Connection refused (os error 111)".
        io.kind().to_string()
    } else {
        // Errors such as DNS failures have no OS code; their message is the useful part.
        io.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("transport error")]
    struct Wrapper(#[source] io::Error);

    const T: Duration = Duration::from_secs(3);

    #[test]
    fn unreachable_is_one_line_from_the_io_error() {
        let cases = [
            (
                io::Error::from_raw_os_error(111),
                "cannot reach the control plane at http://h:1: connection refused",
            ),
            (
                io::Error::new(io::ErrorKind::TimedOut, "connect timeout"),
                "cannot reach the control plane at http://h:1: timed out after 3s",
            ),
            (
                io::Error::other("failed to lookup address information: Name or service not known"),
                "cannot reach the control plane at http://h:1: failed to lookup address information: Name or service not known",
            ),
        ];
        for (io, want) in cases {
            let err = Wrapper(io);
            assert_eq!(
                CliError::unreachable("http://h:1", &err, T).to_string(),
                want
            );
        }
    }

    #[test]
    fn server_statuses_show_their_message() {
        let status =
            tonic::Status::invalid_argument(r#"route "a": path.prefix: must start with '/'"#);
        let err = CliError::from_status("http://h:1", status, T, T);
        assert_eq!(
            err.to_string(),
            r#"route "a": path.prefix: must start with '/'"#
        );
        let err = CliError::from_status("http://h:1", tonic::Status::not_found(""), T, T);
        assert_eq!(
            err.to_string(),
            "Some requested entity was not found (no message)"
        );
    }

    #[test]
    fn invalid_file_lists_one_error_per_line() {
        let spec = routemaster_common::spec::ConfigSpec::from_yaml(
            "routes: [{ id: A, forward: { service: x } }, { id: b }]",
        )
        .unwrap();
        let errors = routemaster_common::Config::try_from(spec).unwrap_err();
        let err = CliError::InvalidFile {
            path: "r.yaml".into(),
            errors,
        };
        let text = err.to_string();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("r.yaml is invalid:"));
        assert!(
            lines.next().unwrap().starts_with(r#"  route "A": id: "#),
            "{text}"
        );
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with(r#"  route "b": forward: "#),
            "{text}"
        );
    }
}
