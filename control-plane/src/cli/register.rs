//! `routemaster register SVC ADDR` (a sidecar: register, heartbeat every third of the
//! ttl, deregister on SIGINT/SIGTERM) and `routemaster get instances SVC`, over the
//! `Registry` gRPC service.

use std::collections::BTreeMap;
use std::time::Duration;

use routemaster_proto::v1;
use routemaster_proto::v1::registry_client::RegistryClient;
use serde::Serialize;
use tonic::transport::Channel;

use super::args::Format;
use super::commands::{CONNECT_TIMEOUT, Io, Outcome, REQUEST_TIMEOUT, channel};
use super::error::CliError;
use super::output;

/// What `register` was asked to register.
#[derive(Debug, Clone)]
pub struct Registration {
    pub service: String,
    pub address: String,
    pub ttl: String,
    pub labels: Vec<(String, String)>,
    pub id: Option<String>,
    pub weight: Option<u32>,
}

/// After a failed heartbeat (control plane or etcd briefly away), try again this soon.
const RETRY: Duration = Duration::from_secs(1);
/// How long deregistering may take at exit.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// The id an instance gets when `--id` is not given: its address with every character
/// an id cannot hold replaced by `-` (`10.0.0.7:8080` → `10.0.0.7-8080`, `[::1]:80` →
/// `1-80`).
pub fn default_id(address: &str) -> String {
    let replaced: String = address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = replaced.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut id = String::new();
    for c in trimmed.chars() {
        // Collapse runs of '-' ("::" in IPv6 addresses).
        if !(c == '-' && id.ends_with('-')) {
            id.push(c);
        }
    }
    id
}

struct Registry {
    url: String,
    client: RegistryClient<Channel>,
}

impl Registry {
    async fn connect(url: &str) -> Result<Self, CliError> {
        Ok(Self {
            url: url.to_owned(),
            client: RegistryClient::new(channel(url).await?),
        })
    }

    fn error(&self, status: tonic::Status) -> CliError {
        CliError::from_status(&self.url, status, CONNECT_TIMEOUT, REQUEST_TIMEOUT)
    }
}

/// Registers, keeps the lease alive until SIGINT/SIGTERM, then deregisters.
pub async fn register(url: &str, r: Registration, io: &mut Io<'_>) -> Result<Outcome, CliError> {
    let id = r.id.clone().unwrap_or_else(|| default_id(&r.address));
    let request = v1::RegisterRequest {
        service: r.service.clone(),
        id: id.clone(),
        address: r.address.clone(),
        weight: r.weight,
        labels: r.labels.iter().cloned().collect(),
        ttl: r.ttl.clone(),
    };
    let instance = v1::InstanceRef {
        service: r.service.clone(),
        id: id.clone(),
    };
    let mut registry = Registry::connect(url).await?;
    // Validation errors and unknown services end here, before any lease exists.
    let first = registry
        .client
        .register(request.clone())
        .await
        .map_err(|s| registry.error(s))?
        .into_inner();
    let ttl = routemaster_common::duration::parse(&first.ttl).unwrap_or(Duration::from_secs(10));
    writeln!(
        io.out,
        "instance {}/{id} registered at {} (ttl {}, version {}); heartbeat every {}, Ctrl-C deregisters",
        r.service,
        r.address,
        first.ttl,
        first.version,
        humantime::format_duration(ttl / 3)
    )?;
    io.out.flush()?;
    let signal = routemaster_runtime::lifecycle::shutdown_signal();
    tokio::pin!(signal);
    let mut next = tokio::time::Instant::now() + ttl / 3;
    loop {
        tokio::select! {
            result = &mut signal => {
                if let Err(e) = result {
                    return Err(CliError::Other(format!("cannot wait for signals: {e}")));
                }
                break;
            }
            () = tokio::time::sleep_until(next) => {
                next = tokio::time::Instant::now() + ttl / 3;
                match registry.client.heartbeat(instance.clone()).await {
                    Ok(_) => {}
                    Err(status) if status.code() == tonic::Code::NotFound => {
                        // The lease ran out (a long pause, or the control plane was
                        // away for longer than the ttl): register afresh.
                        match registry.client.register(request.clone()).await {
                            Ok(_) => writeln!(io.err, "warning: the lease had expired; registered again")?,
                            Err(s) => {
                                writeln!(io.err, "warning: registering again failed: {}", registry.error(s))?;
                                next = tokio::time::Instant::now() + RETRY;
                            }
                        }
                    }
                    Err(s) => {
                        writeln!(io.err, "warning: heartbeat failed (retrying): {}", registry.error(s))?;
                        next = tokio::time::Instant::now() + RETRY;
                    }
                }
            }
        }
    }
    let deregistered = tokio::time::timeout(
        DEREGISTER_TIMEOUT,
        registry.client.deregister(instance.clone()),
    )
    .await;
    match deregistered {
        Ok(Ok(_)) => writeln!(io.out, "instance {}/{id} deregistered", r.service)?,
        Ok(Err(s)) if s.code() == tonic::Code::NotFound => {
            writeln!(io.out, "instance {}/{id} was already gone", r.service)?;
        }
        Ok(Err(s)) => return Err(registry.error(s)),
        Err(_) => {
            return Err(CliError::Other(format!(
                "deregistering {}/{id} timed out; it leaves when its lease expires",
                r.service
            )));
        }
    }
    Ok(Outcome::Success)
}

#[derive(Debug, Serialize)]
struct InstancesDoc<'a> {
    service: &'a str,
    version: u64,
    instances: Vec<InstanceDoc>,
}

/// One instance in `-o json|yaml` (the HTTP API's listing).
#[derive(Debug, Serialize)]
struct InstanceDoc {
    source: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    id: String,
    address: String,
    weight: u32,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    ttl: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_seconds: Option<i64>,
}

/// `get instances SVC`: the service's static and registered instances.
pub async fn get_instances(
    url: &str,
    names: &[String],
    format: Format,
    io: &mut Io<'_>,
) -> Result<Outcome, CliError> {
    let [service] = names else {
        return Err(CliError::Usage(
            "name one service: `get instances SERVICE`".into(),
        ));
    };
    let mut registry = Registry::connect(url).await?;
    let list = match registry
        .client
        .list_instances(v1::ListInstancesRequest {
            service: service.clone(),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => {
            return Err(CliError::NotFound {
                kind: "service",
                name: service.clone(),
            });
        }
        Err(s) => return Err(registry.error(s)),
    };
    if !list.stale_reason.is_empty() {
        writeln!(io.err, "warning: {}", list.stale_reason)?;
    }
    let docs: Vec<InstanceDoc> = list
        .instances
        .into_iter()
        .map(|i| InstanceDoc {
            expires_in_seconds: (i.source == "registered" && i.expires_in_seconds >= 0)
                .then_some(i.expires_in_seconds),
            source: i.source,
            id: i.id,
            address: i.address,
            weight: i.weight,
            labels: i.labels.into_iter().collect(),
            ttl: i.ttl,
        })
        .collect();
    let text = match format {
        Format::Table | Format::Wide => instances_table(&docs),
        Format::Name => output::names(
            "instance",
            docs.iter()
                .map(|d| if d.id.is_empty() { &d.address } else { &d.id }),
        ),
        Format::Json | Format::Yaml => {
            let doc = InstancesDoc {
                service,
                version: list.version,
                instances: docs,
            };
            let rendered = if format == Format::Json {
                output::to_json(&doc)
            } else {
                output::to_yaml(&doc)
            };
            rendered.map_err(|e| CliError::Other(format!("cannot render output: {e}")))?
        }
    };
    io.out.write_all(text.as_bytes())?;
    Ok(Outcome::Success)
}

fn instances_table(docs: &[InstanceDoc]) -> String {
    let rows = docs
        .iter()
        .map(|d| {
            let labels: Vec<String> = d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                d.address.clone(),
                d.source.clone(),
                if d.id.is_empty() {
                    "-".into()
                } else {
                    d.id.clone()
                },
                d.weight.to_string(),
                if labels.is_empty() {
                    "-".into()
                } else {
                    labels.join(",")
                },
                if d.ttl.is_empty() {
                    "-".into()
                } else {
                    d.ttl.clone()
                },
                d.expires_in_seconds
                    .map_or_else(|| "-".into(), |s| format!("{s}s")),
            ]
        })
        .collect();
    output::table(
        &[
            "ADDRESS",
            "SOURCE",
            "ID",
            "WEIGHT",
            "LABELS",
            "TTL",
            "EXPIRES IN",
        ],
        rows,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_are_legal_ids() {
        let cases = [
            ("10.0.0.7:8080", "10.0.0.7-8080"),
            ("[::1]:80", "1-80"),
            ("[fd00::1:2]:443", "fd00-1-2-443"),
            ("lms.internal:8080", "lms.internal-8080"),
        ];
        for (address, want) in cases {
            let id = default_id(address);
            assert_eq!(id, want);
            routemaster_common::registry::check_id(&id).unwrap();
        }
    }
}
