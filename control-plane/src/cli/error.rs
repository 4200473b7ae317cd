//! The CLI's errors: each one is a single line (after `error: `) that says what went
//! wrong in the user's terms, never a chain of causes.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use routemaster_common::spec::SourceErrors;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A command line clap accepted but that makes no sense (exit code 2).
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the control plane at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the control plane at {url} did not answer within {}s", .after.as_secs())]
    Timeout { url: String, after: Duration },
    #[error("invalid control plane URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "{url}: https is not supported: the control plane serves plaintext gRPC, and the CLI will not silently downgrade to it; use http://"
    )]
    Https { url: String },
    #[error(
        "{url} is not the control plane's gRPC port (it answered plain HTTP {http_status}); this looks like the HTTP status port: the CLI talks gRPC, usually :7000"
    )]
    NotGrpc { url: String, http_status: String },
    /// A `tonic::Status` from the control plane: its message names the object and field.
    #[error("{0}")]
    Server(String),
    #[error("cannot read {path}: {reason}")]
    ReadFile { path: String, reason: String },
    #[error("{path}: not a text file (it is not valid UTF-8)")]
    NotText { path: String },
    /// Route files that do not parse or validate: every problem, with its file and line.
    #[error("{}", listed(.0))]
    Invalid(SourceErrors),
    #[error("no objects in {inputs}")]
    NoObjects { inputs: String },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    /// `status`: etcd unreachable or the fleet not converged (the status itself is
    /// printed on stdout).
    #[error("{0}")]
    Unhealthy(String),
    #[error("{0}")]
    Other(String),
    /// Writing the output failed (e.g. stdout closed).
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl CliError {
    /// The process exit code: 2 for usage errors, 1 for every other error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl From<super::args::UsageError> for CliError {
    fn from(e: super::args::UsageError) -> Self {
        CliError::Usage(e.0)
    }
}

/// One problem: on the `error:` line. Several: counted there, then one per line.
fn listed(errors: &SourceErrors) -> String {
    match errors.0.as_slice() {
        [one] => one.to_string(),
        many => {
            let mut out = format!("{} problems:", many.len());
            for e in many {
                out.push_str(&format!("\n  {e}"));
            }
            out
        }
    }
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
        // An HTTP server that is not gRPC: tonic either maps the HTTP status it got, or
        // fails to read its body as gRPC and names the status it came with.
        let message = status.message();
        let http_status = message
            .strip_prefix("grpc-status header missing, mapped from HTTP status code ")
            .or_else(|| {
                message
                    .split_once("while receiving response with status: ")
                    .map(|(_, code)| code)
            });
        if let Some(code) = http_status {
            return CliError::NotGrpc {
                url: url.to_owned(),
                http_status: code.trim().to_owned(),
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
    use routemaster_common::spec::Sources;

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
    fn an_http_server_that_is_not_grpc_is_named() {
        let status =
            tonic::Status::unknown("grpc-status header missing, mapped from HTTP status code 405");
        let err = CliError::from_status("http://h:7001", status, T, T).to_string();
        assert_eq!(
            err,
            "http://h:7001 is not the control plane's gRPC port (it answered plain HTTP 405); this looks like the HTTP status port: the CLI talks gRPC, usually :7000"
        );
        let status = tonic::Status::internal(
            "protocol error: received message with invalid compression flag: 114 (valid flags are 0 and 1) while receiving response with status: 405 Method Not Allowed",
        );
        let err = CliError::from_status("http://h:7001", status, T, T).to_string();
        assert!(
            err.starts_with("http://h:7001 is not the control plane's gRPC port (it answered plain HTTP 405 Method Not Allowed)"),
            "{err}"
        );
    }

    #[test]
    fn file_problems_are_one_line_or_counted() {
        let one = Sources::parse("r.yaml", "routes: [{ id: A, forward: { service: x } }]")
            .unwrap()
            .validate_objects()
            .unwrap_err();
        let err = CliError::Invalid(one).to_string();
        assert!(err.starts_with(r#"r.yaml:1: route "A": id: "#), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let two = Sources::parse(
            "r.yaml",
            "routes:\n- { id: A, forward: { service: x } }\n- { id: b }\n",
        )
        .unwrap()
        .validate_objects()
        .unwrap_err();
        let text = CliError::Invalid(two).to_string();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("2 problems:"));
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with(r#"  r.yaml:2: route "A": id: "#),
            "{text}"
        );
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with(r#"  r.yaml:3: route "b": forward: "#),
            "{text}"
        );
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::Server("x".into()).exit_code(), 1);
    }
}
