//! The thin I/O layer: read route files, call the Admin service, hand the answers to
//! the pure renderers in [`super::output`] and [`super::diff`], write the result.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use routemaster_common::spec::{ConfigSpec, RouteSpec, ServiceSpec, Sources};
use routemaster_common::{ObjectRef, ValidationError};
use routemaster_proto::v1;
use routemaster_proto::v1::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

use super::args::{Cli, Command, Format, Kind, MapFormat, StatusFormat, parse_one, parse_target};
use super::diff::{self, DiffError};
use super::error::CliError;
use super::input::read_sources;
use super::output::{self, NodesDoc, RoutesDoc, ServicesDoc, StatusDoc};
use crate::map::RouteMap;
use crate::nodes::Node;

/// Largest admin message accepted either way.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Long enough for a control plane across a WAN, short enough that a wrong address
/// fails while the user is still looking at the terminal.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Covers an apply of a large batch through etcd.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `status --wait-converged` asks again.
const POLL: Duration = Duration::from_millis(250);

/// How a successful command ended; errors are [`CliError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// `diff` found differences (exit code 3).
    Differences,
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Differences => 3,
        }
    }
}

/// Where a command reads and writes: stdout for results, stderr for warnings (a read
/// answered from a stale snapshot), stdin for `-f -`.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub stdin: &'a mut dyn Read,
}

impl std::fmt::Debug for Io<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Io")
    }
}

/// Runs one command.
pub async fn run(cli: &Cli, io: &mut Io<'_>) -> Result<Outcome, CliError> {
    let url = control_plane_url(&cli.control_plane)?;
    let outcome = match &cli.command {
        Command::Apply { input, dry_run } => apply(&url, &input.files, *dry_run, io).await?,
        Command::Diff { input } => diff(&url, &input.files, io).await?,
        Command::Get { args, output } => get(&url, args, *output, io).await?,
        Command::Delete { args } => delete(&url, args, io).await?,
        Command::Status {
            output,
            wait_converged: _,
            watch: true,
            interval,
        } => watch_status(&url, *output, *interval, io).await?,
        Command::Status {
            output,
            wait_converged,
            ..
        } => status(&url, *output, *wait_converged, io).await?,
        Command::Register {
            service,
            address,
            ttl,
            labels,
            id,
            weight,
        } => {
            let registration = super::register::Registration {
                service: service.clone(),
                address: address.clone(),
                ttl: ttl.clone(),
                labels: labels.clone(),
                id: id.clone(),
                weight: *weight,
            };
            super::register::register(&url, registration, io).await?
        }
        Command::Map { host, output } => map(&url, host.as_deref(), *output, io).await?,
        Command::Shadow { route, output } => {
            super::shadow::shadow(&url, route.as_deref(), *output, io).await?
        }
        Command::Promote {
            route,
            min_requests,
            force,
        } => super::shadow::promote(&url, route, *min_requests, *force, io).await?,
    };
    io.out.flush()?;
    Ok(outcome)
}

/// Accepts a bare `host:port` too: it is what people paste, and plain-text HTTP/2 is
/// the only transport the CLI speaks. `https://` is refused rather than downgraded.
fn control_plane_url(arg: &str) -> Result<String, CliError> {
    let url = if arg.contains("://") {
        arg.to_owned()
    } else {
        format!("http://{arg}")
    };
    let scheme = url.split("://").next().unwrap_or_default();
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Ok(url),
        "https" => Err(CliError::Https { url }),
        _ => Err(CliError::BadUrl {
            reason: format!("the scheme must be http:// (got {scheme}://)"),
            url,
        }),
    }
}

/// One Admin client per invocation; connecting eagerly makes an unreachable control
/// plane fail here, with the connect timeout, instead of inside the first call.
async fn connect(url: &str) -> Result<Admin, CliError> {
    let channel = channel(url).await?;
    Ok(Admin {
        url: url.to_owned(),
        // Large route sets (100k routes) exceed tonic's 4 MiB default.
        client: AdminClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    })
}

/// A connected channel to the control plane at `url` (any of its gRPC services).
pub(super) async fn channel(url: &str) -> Result<Channel, CliError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| CliError::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    tracing::debug!(url, "connecting to the control plane");
    // The endpoint's connect timeout covers the TCP connect only; this bound also covers
    // a peer that accepts but never completes the HTTP/2 handshake.
    match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(CliError::unreachable(url, &e, CONNECT_TIMEOUT)),
        Err(_) => Err(CliError::Unreachable {
            url: url.to_owned(),
            reason: format!("timed out after {}s", CONNECT_TIMEOUT.as_secs()),
        }),
    }
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

    async fn apply(&mut self, req: v1::ApplyRequest) -> Result<v1::ApplyResponse, tonic::Status> {
        self.client
            .apply(req)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn delete(&mut self, req: v1::DeleteRequest) -> Result<v1::DeleteResponse, CliError> {
        match self.client.delete(req).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.error(s)),
        }
    }

    async fn delete_node(&mut self, id: &str) -> Result<v1::DeleteNodeResponse, CliError> {
        let req = v1::DeleteNodeRequest { id: id.to_owned() };
        match self.client.delete_node(req).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.error(s)),
        }
    }

    /// `List`, warning on `err` when the answer may be stale.
    async fn list(&mut self, err: &mut dyn Write) -> Result<v1::ListResponse, CliError> {
        match self.client.list(v1::ListRequest {}).await {
            Ok(r) => {
                let r = r.into_inner();
                warn_stale(err, &r.stale_reason)?;
                Ok(r)
            }
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

fn warn_stale(err: &mut dyn Write, reason: &str) -> Result<(), CliError> {
    if !reason.is_empty() {
        writeln!(err, "warning: {reason}")?;
    }
    Ok(())
}

/// Reads the `-f` inputs and validates each object like the proxy's route file: nothing
/// invalid is converted to protobuf (a conversion would have to drop one side of a
/// `forward`+`redirect` or `prefix`+`exact`).
fn read_and_validate(files: &[PathBuf], io: &mut Io<'_>) -> Result<Sources, CliError> {
    let sources = read_sources(files, io.stdin)?;
    validate_objects(&sources)?;
    Ok(sources)
}

/// Each object checked on its own before anything is sent. A certificate whose
/// `key_pem` is the `<redacted>` placeholder `get -o yaml` prints stands for the key the
/// control plane stores: its key is not checked here (the control plane checks the
/// stored key against the certificate, or refuses the placeholder when it has none).
fn validate_objects(
    sources: &Sources,
) -> Result<
    (
        Vec<routemaster_common::Service>,
        Vec<routemaster_common::Route>,
    ),
    CliError,
> {
    let redacted: Vec<&str> = sources
        .certificates()
        .iter()
        .filter(|c| c.key_pem.as_deref() == Some(routemaster_common::tls::REDACTED))
        .map(|c| c.name.as_str())
        .collect();
    match sources.validate_objects() {
        Ok(objects) => Ok(objects),
        Err(mut errors) => {
            errors.0.retain(|e| match e {
                routemaster_common::spec::SourceError::Invalid { error, .. } => !matches!(
                    &error.object,
                    ObjectRef::Certificate(name)
                        if error.field == "key_pem" && redacted.contains(&name.as_str())
                ),
                _ => true,
            });
            if errors.0.is_empty() {
                // Only placeholders failed: the services and routes are valid.
                let services = sources
                    .spec
                    .services
                    .iter()
                    .filter_map(|s| routemaster_common::Service::try_from(s.clone()).ok())
                    .collect();
                let routes = sources
                    .spec
                    .routes
                    .iter()
                    .filter_map(|r| routemaster_common::Route::try_from(r.clone()).ok())
                    .collect();
                Ok((services, routes))
            } else {
                Err(CliError::Invalid(errors))
            }
        }
    }
}

async fn apply(
    url: &str,
    files: &[PathBuf],
    dry_run: bool,
    io: &mut Io<'_>,
) -> Result<Outcome, CliError> {
    // Read and validate before connecting: a typo should not need a control plane.
    let sources = read_sources(files, io.stdin)?;
    let (services, routes) = validate_objects(&sources)?;
    let req = v1::ApplyRequest {
        services: services.iter().map(v1::Service::from).collect(),
        routes: routes.iter().map(v1::Route::from).collect(),
        certificates: sources
            .certificates()
            .iter()
            .map(v1::Certificate::from)
            .collect(),
        dry_run,
    };
    let mut admin = connect(url).await?;
    let resp = match admin.apply(req).await {
        Ok(resp) => resp,
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            return Err(locate_server_errors(&sources, status.message())
                .unwrap_or_else(|| admin.error(status)));
        }
        Err(status) => return Err(admin.error(status)),
    };
    io.out
        .write_all(output::render_apply(&resp, dry_run).as_bytes())?;
    Ok(Outcome::Success)
}

/// The control plane's validation errors (`route "a": forward.service: …; …`, checked
/// against what it stores) with the file and line of each object, when every part names
/// an object of the files.
fn locate_server_errors(sources: &Sources, message: &str) -> Option<CliError> {
    let mut errors = Vec::new();
    for part in message.split("; ") {
        let (object, rest) = if let Some(rest) = part.strip_prefix("route \"") {
            let (id, rest) = rest.split_once("\": ")?;
            (ObjectRef::Route(id.to_owned()), rest)
        } else if let Some(rest) = part.strip_prefix("service \"") {
            let (name, rest) = rest.split_once("\": ")?;
            (ObjectRef::Service(name.to_owned()), rest)
        } else if let Some(rest) = part.strip_prefix("certificate \"") {
            let (name, rest) = rest.split_once("\": ")?;
            (ObjectRef::Certificate(name.to_owned()), rest)
        } else {
            return None;
        };
        let (field, reason) = rest.split_once(": ")?;
        sources.origin(&object)?;
        errors.push(ValidationError {
            object,
            field: field.to_owned(),
            reason: reason.to_owned(),
        });
    }
    Some(CliError::Invalid(sources.locate(errors)))
}

async fn diff(url: &str, files: &[PathBuf], io: &mut Io<'_>) -> Result<Outcome, CliError> {
    let sources = read_and_validate(files, io)?;
    let list = connect(url).await?.list(io.err).await?;
    let located = |e| match e {
        DiffError::Invalid(errors) => CliError::Invalid(sources.locate(errors.0)),
        other => CliError::Other(other.to_string()),
    };
    let mut plan = diff::plan(&sources.spec, list.services, list.routes).map_err(located)?;
    plan.entries
        .extend(diff::certificate_entries(&sources.spec, list.certificates).map_err(located)?);
    io.out.write_all(diff::render_plan(&plan).as_bytes())?;
    Ok(if plan.has_changes() {
        Outcome::Differences
    } else {
        Outcome::Success
    })
}

async fn get(
    url: &str,
    args: &[String],
    format: Format,
    io: &mut Io<'_>,
) -> Result<Outcome, CliError> {
    let target = parse_target(args)?;
    let mut admin = connect(url).await?;
    let width = terminal_width();
    let wide = format == Format::Wide;
    let (text, missing) = match target.kind {
        Kind::Route => {
            let list = admin.list(io.err).await?;
            let all = listed_routes(list.routes)?;
            let (routes, missing) = pick(all, &target.names, |r| &r.id);
            let text = match format {
                Format::Table | Format::Wide => output::routes_table(&routes, width, wide),
                Format::Name => output::names("route", routes.iter().map(|r| &r.id)),
                Format::Json | Format::Yaml => document(&RoutesDoc { routes: &routes }, format)?,
            };
            (text, missing)
        }
        Kind::Service => {
            let list = admin.list(io.err).await?;
            let routes = if wide {
                listed_routes(list.routes)?
            } else {
                Vec::new()
            };
            let all = listed_services(list.services)?;
            let (services, missing) = pick(all, &target.names, |s| &s.name);
            let text = match format {
                Format::Table | Format::Wide => {
                    output::services_table(&services, &routes, width, wide)
                }
                Format::Name => output::names("service", services.iter().map(|s| &s.name)),
                Format::Json | Format::Yaml => document(
                    &ServicesDoc {
                        services: &services,
                    },
                    format,
                )?,
            };
            (text, missing)
        }
        Kind::Instance => {
            return super::register::get_instances(url, &target.names, format, io).await;
        }
        Kind::Certificate => {
            let list = admin.list(io.err).await?;
            let mut all: Vec<routemaster_common::spec::CertificateSpec> = list
                .certificates
                .into_iter()
                // The control plane redacts keys; redact again so nothing else could
                // ever print one.
                .map(|c| routemaster_common::spec::CertificateSpec::from(c).redacted())
                .collect();
            all.sort_by(|a, b| a.name.cmp(&b.name));
            let (certs, missing) = pick(all, &target.names, |c| &c.name);
            let text = match format {
                Format::Table | Format::Wide => output::certificates_table(&certs, width),
                Format::Name => output::names("certificate", certs.iter().map(|c| &c.name)),
                Format::Json | Format::Yaml => document(
                    &output::CertificatesDoc {
                        tls: output::CertificatesList {
                            certificates: &certs,
                        },
                    },
                    format,
                )?,
            };
            (text, missing)
        }
        Kind::Node => {
            let status = admin.status().await?;
            warn_stale(io.err, &status.stale_reason)?;
            let mut all: Vec<Node> = status.nodes.iter().map(Node::from).collect();
            all.sort_by(|a, b| a.record.id.cmp(&b.record.id));
            let (nodes, missing) = pick(all, &target.names, |n| &n.record.id);
            let text = match format {
                Format::Table | Format::Wide => {
                    output::nodes_table(&nodes, status.version, now_ms(), width, wide)
                }
                Format::Name => output::names("node", nodes.iter().map(|n| &n.record.id)),
                Format::Json | Format::Yaml => match (target.names.len(), nodes.as_slice()) {
                    // One node asked for by name: `/v1/nodes/{id}`'s shape.
                    (1, [node]) => document(&output::node_view(node, status.version), format)?,
                    _ => document(&NodesDoc::new(&nodes, status.version), format)?,
                },
            };
            (text, missing)
        }
    };
    // What was found is shown even when something was not (as kubectl does).
    if missing.is_empty() || !target.names.iter().all(|n| missing.contains(n)) {
        io.out.write_all(text.as_bytes())?;
    }
    match missing.as_slice() {
        [] => Ok(Outcome::Success),
        [name] => Err(CliError::NotFound {
            kind: target.kind.singular(),
            name: name.clone(),
        }),
        many => Err(CliError::Other(format!(
            "{} not found: {}",
            target.kind.plural(),
            many.join(", ")
        ))),
    }
}

/// The objects named in `names` (in that order; all of them, sorted, when `names` is
/// empty) and the names not found.
fn pick<T>(all: Vec<T>, names: &[String], key: impl Fn(&T) -> &String) -> (Vec<T>, Vec<String>) {
    if names.is_empty() {
        return (all, Vec::new());
    }
    let mut by_name: std::collections::HashMap<String, T> =
        all.into_iter().map(|x| (key(&x).clone(), x)).collect();
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        match by_name.remove(n) {
            Some(x) => found.push(x),
            None if found.iter().any(|x| key(x) == n) => {}
            None => missing.push(n.clone()),
        }
    }
    (found, missing)
}

/// The listed routes as `get` shows them: normalised, defaults written out, sorted by id.
pub fn listed_routes(routes: Vec<v1::Route>) -> Result<Vec<RouteSpec>, CliError> {
    let mut routes = diff::normalise_routes(routes).map_err(|e| {
        CliError::Other(format!("the control plane listed an unreadable route: {e}"))
    })?;
    routes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(routes.into_iter().map(RouteSpec::with_defaults).collect())
}

/// The listed services as `get` shows them.
pub fn listed_services(services: Vec<v1::Service>) -> Result<Vec<ServiceSpec>, CliError> {
    let mut services = diff::normalise_services(services).map_err(|e| {
        CliError::Other(format!(
            "the control plane listed an unreadable service: {e}"
        ))
    })?;
    services.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(services
        .into_iter()
        .map(ServiceSpec::with_defaults)
        .collect())
}

fn document<T: serde::Serialize>(value: &T, format: Format) -> Result<String, CliError> {
    let rendered = match format {
        Format::Json => output::to_json(value),
        _ => output::to_yaml(value),
    };
    rendered.map_err(|e| CliError::Other(format!("cannot render output: {e}")))
}

async fn delete(url: &str, args: &[String], io: &mut Io<'_>) -> Result<Outcome, CliError> {
    let (kind, name) = parse_one(args)?;
    let mut admin = connect(url).await?;
    let text = match kind {
        Kind::Node => {
            admin.delete_node(&name).await?;
            format!("node/{name} deleted\n")
        }
        Kind::Instance => {
            return Err(CliError::Usage(
                "registered instances leave when their `routemaster register` stops (or DELETE /v1/services/SVC/instances/ID); static ones with `apply`".into(),
            ));
        }
        Kind::Route | Kind::Service | Kind::Certificate => {
            let kind = match kind {
                Kind::Route => v1::Kind::Route,
                Kind::Service => v1::Kind::Service,
                _ => v1::Kind::Certificate,
            };
            let req = v1::DeleteRequest {
                kind: kind as i32,
                name: name.clone(),
            };
            let resp = admin.delete(req).await?;
            output::render_delete(kind, &name, resp.version)
        }
    };
    io.out.write_all(text.as_bytes())?;
    Ok(Outcome::Success)
}

/// `status`: prints the status once (after waiting, if asked, for the fleet to
/// converge) and fails when etcd is unreachable or the fleet has not converged.
async fn status(
    url: &str,
    format: StatusFormat,
    wait: Option<Duration>,
    io: &mut Io<'_>,
) -> Result<Outcome, CliError> {
    let mut admin = connect(url).await?;
    let deadline = tokio::time::Instant::now() + wait.unwrap_or_default();
    let (resp, doc) = loop {
        let resp = admin.status().await?;
        let doc = StatusDoc::new(&resp);
        if doc.healthy() || tokio::time::Instant::now() + POLL > deadline {
            break (resp, doc);
        }
        tokio::time::sleep(POLL).await;
    };
    warn_stale(io.err, &resp.stale_reason)?;
    let now = now_ms();
    let text = match format {
        StatusFormat::Text => output::render_status(&doc, now),
        StatusFormat::Json => output::to_json(&doc).map_err(CliError::Other)?,
        StatusFormat::Yaml => output::to_yaml(&doc).map_err(CliError::Other)?,
    };
    io.out.write_all(text.as_bytes())?;
    match doc.problem(now) {
        None => Ok(Outcome::Success),
        Some(problem) => Err(CliError::Unhealthy(match wait {
            Some(w) => format!("{problem} (waited {})", humantime::format_duration(w)),
            None => problem,
        })),
    }
}

/// `map`: the route map from the admin API's list and status, built by the same
/// function as `GET /v1/map`.
async fn map(
    url: &str,
    host: Option<&str>,
    format: MapFormat,
    io: &mut Io<'_>,
) -> Result<Outcome, CliError> {
    let mut admin = connect(url).await?;
    let list = admin.list(io.err).await?;
    let status = admin.status().await?;
    let config = ConfigSpec {
        services: listed_services(list.services)?,
        routes: listed_routes(list.routes)?,
        ..ConfigSpec::default()
    };
    let registered = registered_instances(url, &config.services).await?;
    let nodes: Vec<Node> = status.nodes.iter().map(Node::from).collect();
    let mut map = RouteMap::build(status.version, &config, &nodes).with_registered(&registered);
    if let Some(h) = host {
        map = map.for_host(h);
    }
    let text = match format {
        MapFormat::Tree => crate::map::render_tree(&map),
        MapFormat::Json => output::to_json(&map).map_err(CliError::Other)?,
    };
    io.out.write_all(text.as_bytes())?;
    Ok(Outcome::Success)
}

/// The registered instances of `services` (`Registry.ListInstances`, one call per
/// service that has any: the admin API's List carries static instances only).
async fn registered_instances(
    url: &str,
    services: &[ServiceSpec],
) -> Result<crate::map::Registered, CliError> {
    let mut client = v1::registry_client::RegistryClient::new(channel(url).await?)
        .max_decoding_message_size(MAX_MESSAGE);
    let mut out = crate::map::Registered::new();
    for s in services {
        let req = v1::ListInstancesRequest {
            service: s.name.clone(),
        };
        let list = match client.list_instances(req).await {
            Ok(r) => r.into_inner(),
            // Deleted since the list was read.
            Err(status) if status.code() == tonic::Code::NotFound => continue,
            Err(status) => {
                return Err(CliError::from_status(
                    url,
                    status,
                    CONNECT_TIMEOUT,
                    REQUEST_TIMEOUT,
                ));
            }
        };
        let registered: Vec<crate::map::InstanceEntry> = list
            .instances
            .iter()
            .filter(|i| i.source == "registered")
            .map(|i| crate::map::InstanceEntry::registered(&i.id, &i.address, i.weight))
            .collect();
        if !registered.is_empty() {
            out.insert(s.name.clone(), registered);
        }
    }
    Ok(out)
}

/// `status --watch`: a frame every `interval` until Ctrl-C (SIGINT), which ends it with
/// success. A failed refresh (control plane away) is shown in its frame; the next one
/// reconnects.
async fn watch_status(
    url: &str,
    format: StatusFormat,
    interval: Duration,
    io: &mut Io<'_>,
) -> Result<Outcome, CliError> {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut admin: Option<Admin> = None;
    let mut first = true;
    loop {
        let refresh = async {
            let client = match admin.take() {
                Some(a) => a,
                None => connect(url).await?,
            };
            let mut client = client;
            let resp = client.status().await;
            admin = Some(client);
            resp
        };
        let body = tokio::select! {
            resp = refresh => match resp {
                Ok(resp) => {
                    let doc = StatusDoc::new(&resp);
                    let mut body = String::new();
                    if !resp.stale_reason.is_empty() {
                        body.push_str(&format!("warning: {}\n", resp.stale_reason));
                    }
                    body.push_str(&match format {
                        StatusFormat::Text => output::render_status(&doc, now_ms()),
                        StatusFormat::Json => output::to_json(&doc).map_err(CliError::Other)?,
                        StatusFormat::Yaml => output::to_yaml(&doc).map_err(CliError::Other)?,
                    });
                    body
                }
                Err(e) => {
                    admin = None;
                    format!("error: {e}\n")
                }
            },
            _ = &mut interrupted => break,
        };
        let at = crate::nodes::rfc3339(now_ms());
        let rows = if tty { terminal_rows() } else { None };
        let frame = super::watch::frame(&body, &at, interval, tty, first, rows);
        io.out.write_all(frame.as_bytes())?;
        io.out.flush()?;
        first = false;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = &mut interrupted => break,
        }
    }
    Ok(Outcome::Success)
}

/// The terminal's height (`stty size` on the controlling terminal), if it can be told.
fn terminal_rows() -> Option<usize> {
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(tty)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next()?.parse().ok()
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
    fn control_plane_urls() {
        let cases = [
            ("http://h:7000", Ok("http://h:7000")),
            ("h:7000", Ok("http://h:7000")),
            ("HTTP://h:7000", Ok("HTTP://h:7000")),
            (
                "https://h:7000",
                Err(
                    "https://h:7000: https is not supported: the control plane serves plaintext gRPC, and the CLI will not silently downgrade to it; use http://",
                ),
            ),
            (
                "grpc://h:7000",
                Err(
                    "invalid control plane URL \"grpc://h:7000\": the scheme must be http:// (got grpc://)",
                ),
            ),
        ];
        for (arg, want) in cases {
            let got = control_plane_url(arg).map_err(|e| e.to_string());
            assert_eq!(
                got.as_deref(),
                want.map_err(str::to_owned).as_deref(),
                "{arg}"
            );
        }
    }

    #[test]
    fn picking_by_name_keeps_the_order_asked_and_reports_the_missing() {
        let all: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let cases: [(&[&str], &[&str], &[&str]); 4] = [
            (&[], &["a", "b", "c"], &[]),
            (&["c", "a"], &["c", "a"], &[]),
            (&["b", "x", "b"], &["b"], &["x"]),
            (&["y"], &[], &["y"]),
        ];
        for (asked, found, missing) in cases {
            let (f, m) = pick(all.clone(), &names(asked), |s| s);
            assert_eq!((f, m), (names(found), names(missing)), "{asked:?}");
        }
    }

    #[test]
    fn server_validation_errors_get_the_file_and_line() {
        let sources = Sources::parse(
            "r.yaml",
            "routes:\n  - id: a\n    forward: { service: x }\n  - id: b\n    forward: { service: y }\n",
        )
        .unwrap();
        let err = locate_server_errors(
            &sources,
            r#"route "a": forward.service: unknown service "x"; route "b": forward.service: unknown service "y""#,
        )
        .unwrap()
        .to_string();
        assert_eq!(
            err,
            "2 problems:\n  r.yaml:2: route \"a\": forward.service: unknown service \"x\"\n  r.yaml:4: route \"b\": forward.service: unknown service \"y\""
        );
        // Anything else is shown as the control plane said it.
        assert!(locate_server_errors(&sources, "etcd refused the write").is_none());
        assert!(locate_server_errors(&sources, r#"route "zz": id: bad"#).is_none());
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
