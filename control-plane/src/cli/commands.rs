//! The thin I/O layer: read the route file, call the Admin service, hand the answers
//! to the pure renderers in [`super::output`] and [`super::diff`], write the result.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use routemaster_common::spec::{ConfigSpec, RouteSpec, ServiceSpec};
use routemaster_proto::v1;
use routemaster_proto::v1::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

use super::args::{Cli, Command, DeleteCommand, Format, GetCommand};
use super::diff::{self, DiffError};
use super::error::CliError;
use super::output::{self, NodesDoc, RoutesDoc, ServicesDoc};
use crate::nodes::Node;

/// Largest admin message accepted either way.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Long enough for a control plane across a WAN, short enough that a wrong address
/// fails while the user is still looking at the terminal.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Covers an apply of a large batch through etcd.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How a successful command ended; errors are [`CliError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// `diff` found differences (exit code 2, like `diff(1)`).
    Differences,
}

/// Runs one command, writing its output to `out`.
pub async fn run(cli: &Cli, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let url = control_plane_url(&cli.control_plane);
    let outcome = match &cli.command {
        Command::Apply { file, dry_run } => apply(&url, file, *dry_run, out).await?,
        Command::Diff { file } => diff(&url, file, out).await?,
        Command::Get { what } => get(&url, what, out).await?,
        Command::Delete { what } => delete(&url, what, out).await?,
        Command::Status => status(&url, out).await?,
    };
    out.flush()?;
    Ok(outcome)
}

/// Accepts a bare `host:port` too: it is what people paste, and plain-text HTTP/2 is
/// the only transport the CLI speaks.
fn control_plane_url(arg: &str) -> String {
    if arg.contains("://") {
        arg.to_owned()
    } else {
        format!("http://{arg}")
    }
}

/// One Admin client per invocation; connecting eagerly makes an unreachable control
/// plane fail here, with the connect timeout, instead of inside the first call.
async fn connect(url: &str) -> Result<Admin, CliError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| CliError::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    // The endpoint's connect timeout covers the TCP connect only; this bound also covers
    // a peer that accepts but never completes the HTTP/2 handshake.
    let channel = match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => return Err(CliError::unreachable(url, &e, CONNECT_TIMEOUT)),
        Err(_) => {
            return Err(CliError::Unreachable {
                url: url.to_owned(),
                reason: format!("timed out after {}s", CONNECT_TIMEOUT.as_secs()),
            });
        }
    };
    Ok(Admin {
        url: url.to_owned(),
        // Large route sets (100k routes) exceed tonic's 4 MiB default.
        client: AdminClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    })
}

/// The Admin client plus the address, so every failed call can say where it went.
struct Admin {
    url: String,
    client: AdminClient<Channel>,
}

impl Admin {
    fn error(&self, status: tonic::Status) -> CliError {
        CliError::from_status(&self.url, status, CONNECT_TIMEOUT, REQUEST_TIMEOUT)
    }

    async fn apply(&mut self, req: v1::ApplyRequest) -> Result<v1::ApplyResponse, CliError> {
        match self.client.apply(req).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.error(s)),
        }
    }

    async fn delete(&mut self, req: v1::DeleteRequest) -> Result<v1::DeleteResponse, CliError> {
        match self.client.delete(req).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.error(s)),
        }
    }

    async fn list(&mut self) -> Result<v1::ListResponse, CliError> {
        match self.client.list(v1::ListRequest {}).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.error(s)),
        }
    }

    async fn status(&mut self) -> Result<v1::StatusResponse, CliError> {
        match self.client.status(v1::StatusRequest {}).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.error(s)),
        }
    }
}

/// Reads and parses a route file; validation is left to the caller (the control plane
/// for `apply`, [`diff::plan`] for `diff`).
fn read_spec(path: &Path) -> Result<ConfigSpec, CliError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CliError::ReadFile {
        path: shown.clone(),
        reason: without_os_code(&e.to_string()).to_owned(),
    })?;
    ConfigSpec::from_yaml(&text).map_err(|e| {
        let message = e.to_string();
        CliError::ParseFile {
            path: shown,
            // The parser starts its message with "error: ", which we print already.
            reason: message
                .strip_prefix("error: ")
                .unwrap_or(&message)
                .to_owned(),
        }
    })
}

async fn apply(
    url: &str,
    file: &Path,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    // Parse before connecting: a typo in the file should not need a control plane.
    let spec = read_spec(file)?;
    let invalid = |errors| CliError::InvalidFile {
        path: file.display().to_string(),
        errors,
    };
    let req = v1::ApplyRequest {
        services: spec
            .services
            .iter()
            .map(v1::Service::try_from)
            .collect::<Result<_, _>>()
            .map_err(invalid)?,
        routes: spec
            .routes
            .iter()
            .map(v1::Route::try_from)
            .collect::<Result<_, _>>()
            .map_err(invalid)?,
        dry_run,
    };
    let resp = connect(url).await?.apply(req).await?;
    out.write_all(output::render_apply(&resp, dry_run).as_bytes())?;
    Ok(Outcome::Success)
}

async fn diff(url: &str, file: &Path, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let spec = read_spec(file)?;
    let list = connect(url).await?.list().await?;
    let plan = diff::plan(&spec, list.services, list.routes).map_err(|e| match e {
        DiffError::Invalid(errors) => CliError::InvalidFile {
            path: file.display().to_string(),
            errors,
        },
        other => CliError::Other(other.to_string()),
    })?;
    out.write_all(diff::render_plan(&plan).as_bytes())?;
    Ok(if plan.has_changes() {
        Outcome::Differences
    } else {
        Outcome::Success
    })
}

async fn get(url: &str, what: &GetCommand, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let mut admin = connect(url).await?;
    let width = terminal_width();
    let text = match what {
        GetCommand::Routes { output } => {
            let routes = listed_routes(admin.list().await?)?;
            render_routes(&routes, *output, width, false)?
        }
        GetCommand::Route { id, output } => {
            let routes = listed_routes(admin.list().await?)?;
            let route =
                routes
                    .into_iter()
                    .find(|r| r.id == *id)
                    .ok_or_else(|| CliError::NotFound {
                        kind: "route",
                        name: id.clone(),
                    })?;
            render_routes(&[route], *output, width, true)?
        }
        GetCommand::Services { output } => {
            let services = listed_services(admin.list().await?)?;
            render_services(&services, *output, width, false)?
        }
        GetCommand::Service { name, output } => {
            let services = listed_services(admin.list().await?)?;
            let service = services
                .into_iter()
                .find(|s| s.name == *name)
                .ok_or_else(|| CliError::NotFound {
                    kind: "service",
                    name: name.clone(),
                })?;
            render_services(&[service], *output, width, true)?
        }
        GetCommand::Nodes { output } => {
            let status = admin.status().await?;
            let mut nodes = status.nodes;
            nodes.sort_by(|a, b| a.id.cmp(&b.id));
            match output {
                Format::Table => output::nodes_table(&nodes, status.version, now_ms(), width),
                Format::Json | Format::Yaml => {
                    let nodes: Vec<Node> = nodes.iter().map(Node::from).collect();
                    document(&NodesDoc::new(&nodes, status.version), *output)?
                }
            }
        }
    };
    out.write_all(text.as_bytes())?;
    Ok(Outcome::Success)
}

/// The listed routes, normalised and sorted by id so output is stable across calls.
fn listed_routes(list: v1::ListResponse) -> Result<Vec<RouteSpec>, CliError> {
    let mut routes = diff::normalise_routes(list.routes).map_err(|e| {
        CliError::Other(format!("the control plane listed an unreadable route: {e}"))
    })?;
    routes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(routes)
}

fn listed_services(list: v1::ListResponse) -> Result<Vec<ServiceSpec>, CliError> {
    let mut services = diff::normalise_services(list.services).map_err(|e| {
        CliError::Other(format!(
            "the control plane listed an unreadable service: {e}"
        ))
    })?;
    services.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(services)
}

/// `single`: one object by name, printed bare rather than as a route file document.
fn render_routes(
    routes: &[RouteSpec],
    format: Format,
    width: Option<u16>,
    single: bool,
) -> Result<String, CliError> {
    match (format, routes) {
        (Format::Table, _) => Ok(output::routes_table(routes, width)),
        (_, [route]) if single => document(route, format),
        _ => document(&RoutesDoc { routes }, format),
    }
}

fn render_services(
    services: &[ServiceSpec],
    format: Format,
    width: Option<u16>,
    single: bool,
) -> Result<String, CliError> {
    match (format, services) {
        (Format::Table, _) => Ok(output::services_table(services, width)),
        (_, [service]) if single => document(service, format),
        _ => document(&ServicesDoc { services }, format),
    }
}

fn document<T: serde::Serialize>(value: &T, format: Format) -> Result<String, CliError> {
    let rendered = match format {
        Format::Json => output::to_json(value),
        Format::Yaml | Format::Table => output::to_yaml(value),
    };
    rendered.map_err(|e| CliError::Other(format!("cannot render output: {e}")))
}

async fn delete(url: &str, what: &DeleteCommand, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let (kind, name) = match what {
        DeleteCommand::Route { id } => (v1::Kind::Route, id),
        DeleteCommand::Service { name } => (v1::Kind::Service, name),
    };
    let req = v1::DeleteRequest {
        kind: kind as i32,
        name: name.clone(),
    };
    let resp = connect(url).await?.delete(req).await?;
    out.write_all(output::render_delete(kind, name, resp.version).as_bytes())?;
    Ok(Outcome::Success)
}

async fn status(url: &str, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let status = connect(url).await?.status().await?;
    out.write_all(output::render_status(&status).as_bytes())?;
    Ok(Outcome::Success)
}

/// "No such file or directory (os error 2)" → "No such file or directory".
fn without_os_code(message: &str) -> &str {
    match message.rfind(" (os error ") {
        Some(i) if message.ends_with(')') => &message[..i],
        _ => message,
    }
}

/// The terminal's width when stdout is one (tables then wrap long cells), else `None`.
fn terminal_width() -> Option<u16> {
    comfy_table::Table::new().width()
}

fn now_ms() -> u64 {
    // A clock before 1970 is not worth failing over; LAST SEEN would just read "0s ago".
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_errors_are_one_readable_line() {
        assert_eq!(
            without_os_code("No such file or directory (os error 2)"),
            "No such file or directory"
        );
        assert_eq!(without_os_code("plain"), "plain");
        let err = read_spec(Path::new("/nonexistent/routes.yaml")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read /nonexistent/routes.yaml: No such file or directory"
        );
    }

    #[test]
    fn control_plane_urls() {
        assert_eq!(control_plane_url("http://h:7000"), "http://h:7000");
        assert_eq!(control_plane_url("h:7000"), "http://h:7000");
    }

    #[test]
    fn single_objects_are_bare_lists_are_route_files() {
        let routes = listed_routes(v1::ListResponse {
            routes: vec![v1::Route {
                id: "b".into(),
                action: Some(v1::route::Action::Forward(v1::Forward {
                    target: Some(v1::forward::Target::Service("lms".into())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
        let single = render_routes(&routes, Format::Yaml, None, true).unwrap();
        assert!(single.starts_with("id: b\n"), "{single}");
        let list = render_routes(&routes, Format::Yaml, None, false).unwrap();
        assert!(list.starts_with("routes:\n"), "{list}");
    }

    #[tokio::test]
    async fn unreachable_control_plane_is_one_line() {
        // Bind then drop a listener to get a local port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let err = match connect(&url).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("connected to a closed port"),
        };
        assert_eq!(
            err,
            format!("cannot reach the control plane at {url}: connection refused")
        );
    }
}
