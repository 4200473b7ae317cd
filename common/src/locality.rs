//! Region and environment awareness, resolved per proxy: `${node.NAME}` placeholders
//! (in instance addresses and `select` values), a service's `select` (only instances
//! whose labels match) and its `locality` (prefer instances sharing the proxy's labels,
//! level by level). [`localize`] turns a validated [`Config`] into the one a proxy with
//! `labels` serves; the proxy calls it when it applies a snapshot, and a proxy lacking a
//! label the configuration needs refuses the snapshot naming the object, field and label.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{Config, Instance, Service};
use crate::validate::{ObjectRef, ValidationError, ValidationErrors, check_label};

/// A string with `${node.NAME}` placeholders (the only kind there is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// `${node.NAME}`: the proxy's label NAME.
    Node(String),
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Template {
    /// Reads `s`; `${…}` other than `${node.NAME}` (NAME a label key) is refused, naming
    /// it. A `$` not followed by `{` is text.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(at) = rest.find("${") {
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_owned()));
            }
            let after = &rest[at + 2..];
            let Some(end) = after.find('}') else {
                return Err(format!(
                    "{:?} opens a placeholder that is not closed; only ${{node.NAME}} placeholders exist",
                    &rest[at..]
                ));
            };
            let inner = &after[..end];
            match inner.strip_prefix("node.") {
                Some(name) if check_label(name, "").is_ok() => {
                    parts.push(Part::Node(name.to_owned()));
                }
                _ => {
                    return Err(format!(
                        "unknown placeholder \"${{{inner}}}\"; only ${{node.NAME}} placeholders exist (NAME a proxy label)"
                    ));
                }
            }
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self {
            source: s.to_owned(),
            parts,
        })
    }

    /// Whether it has any placeholder.
    pub fn is_templated(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Node(_)))
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The labels it needs.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Node(n) => Some(n.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Every placeholder replaced by `with` (validation's sample rendering).
    pub fn render_with(&self, with: &str) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                Part::Node(_) => with,
            })
            .collect()
    }

    /// Rendered with the proxy's labels; the first label it lacks otherwise.
    pub fn render(&self, labels: &HashMap<String, String>) -> Result<String, String> {
        let mut out = String::with_capacity(self.source.len());
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Node(n) => out.push_str(labels.get(n).ok_or_else(|| n.clone())?),
            }
        }
        Ok(out)
    }
}

/// `locality.fallback`: what a proxy does when no instance shares even the first
/// preferred label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Use any instance (of those `select` allows).
    #[default]
    Any,
    /// Use none: 503 rather than cross the line (data residency).
    None,
}

/// A service's `locality`: the label keys to prefer, in order, and the fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locality {
    pub(crate) prefer: Vec<String>,
    pub(crate) fallback: Fallback,
}

impl Locality {
    pub fn prefer(&self) -> &[String] {
        &self.prefer
    }
    pub fn fallback(&self) -> Fallback {
        self.fallback
    }
}

/// Whether anything in `config` depends on the proxy's labels.
pub fn needs_labels(config: &Config) -> bool {
    config.services().iter().any(service_needs_labels)
}

fn service_needs_labels(s: &Service) -> bool {
    s.locality.is_some() || !s.select.is_empty() || s.instances.iter().any(|i| i.template.is_some())
}

/// The configuration a proxy with `labels` serves: each service's instances with their
/// `${node.NAME}` placeholders filled in, only those `select` allows, and of those the
/// best `locality` level (instances sharing every preferred label; failing that all but
/// the last; …; then any instance with `fallback: any`, none with `fallback: none`).
/// A label the configuration needs and the proxy lacks is an error naming the service,
/// the field and the label.
pub fn localize(
    config: &Config,
    labels: &HashMap<String, String>,
) -> Result<Config, ValidationErrors> {
    let (out, errors) = localize_partial(config, labels);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ValidationErrors(errors))
    }
}

/// [`localize`] that always yields a configuration: a service a label is missing for
/// gets no instances (503, never an unresolved address), and the errors say why. For
/// route files, which a proxy reads without labels.
pub fn localize_partial(
    config: &Config,
    labels: &HashMap<String, String>,
) -> (Config, Vec<ValidationError>) {
    let mut errors = Vec::new();
    let mut services = Vec::with_capacity(config.services().len());
    for s in config.services() {
        if !service_needs_labels(s) {
            services.push(s.clone());
            continue;
        }
        match localize_service(s, labels) {
            Ok(s) => services.push(s),
            Err(mut e) => {
                errors.append(&mut e);
                let mut empty = s.clone();
                empty.instances.clear();
                services.push(empty);
            }
        }
    }
    let mut out = config.clone();
    out.services = services;
    (out, errors)
}

fn lacks(labels: &HashMap<String, String>, name: &str) -> String {
    let mut have: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    have.sort();
    format!(
        "this proxy has no label {name:?} (its labels: {}); start it with --label {name}=VALUE",
        if have.is_empty() {
            "none".to_owned()
        } else {
            have.join(", ")
        }
    )
}

fn localize_service(
    s: &Service,
    labels: &HashMap<String, String>,
) -> Result<Service, Vec<ValidationError>> {
    let object = ObjectRef::Service(s.name.as_str().to_owned());
    let mut errors = Vec::new();
    let mut error = |field: String, reason: String| {
        errors.push(ValidationError {
            object: object.clone(),
            field,
            reason,
        });
    };
    let mut instances: Vec<Instance> = Vec::with_capacity(s.instances.len());
    for (i, inst) in s.instances.iter().enumerate() {
        let Some(t) = &inst.template else {
            instances.push(inst.clone());
            continue;
        };
        let field = format!("instances[{i}].address");
        match t.render(labels) {
            Ok(rendered) => match crate::validate::parse_address(&rendered) {
                Ok(address) => {
                    if !instances.iter().any(|o| o.address == address) {
                        instances.push(Instance {
                            address,
                            weight: inst.weight,
                            labels: inst.labels.clone(),
                            template: None,
                            level: 0,
                            discovery: inst.discovery,
                        });
                    }
                }
                Err(reason) => error(field, format!("{t} renders as {rendered:?} here: {reason}")),
            },
            Err(name) => error(field, lacks(labels, &name)),
        }
    }
    let mut wanted: Vec<(&str, String)> = Vec::with_capacity(s.select.len());
    for (key, t) in &s.select {
        match t.render(labels) {
            Ok(v) => wanted.push((key.as_str(), v)),
            Err(name) => error(format!("select.{key}"), lacks(labels, &name)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    instances.retain(|i| {
        wanted
            .iter()
            .all(|(k, v)| i.labels.get(*k).is_some_and(|have| have == v))
    });
    if let Some(loc) = &s.locality {
        instances = leveled(instances, loc, labels);
    }
    let mut out = s.clone();
    out.instances = instances;
    Ok(out)
}

/// The instances the locality policy allows, each with its level (0: shares every
/// preferred label; 1: all but the last; …; `prefer.len()`: none, kept only with
/// `fallback: any`), lowest level first. The proxy uses the lowest level that has a
/// usable instance (one with a positive weight that health checks and outlier
/// detection have not taken out), so levels nest: level k's instances are those with a
/// level ≤ k.
fn leveled(
    instances: Vec<Instance>,
    loc: &Locality,
    labels: &HashMap<String, String>,
) -> Vec<Instance> {
    let n = loc.prefer.len();
    let shared = |i: &Instance| {
        loc.prefer
            .iter()
            .take_while(
                |k| matches!((labels.get(*k), i.labels.get(*k)), (Some(a), Some(b)) if a == b),
            )
            .count()
    };
    let mut out: Vec<Instance> = instances
        .into_iter()
        .filter_map(|mut i| {
            let shared = shared(&i);
            if shared == 0 && loc.fallback == Fallback::None {
                return None;
            }
            i.level = u8::try_from(n - shared).unwrap_or(u8::MAX);
            Some(i)
        })
        .collect();
    out.sort_by_key(|i| i.level);
    out
}

/// The instances of the lowest level with one of positive weight: what a proxy uses
/// while no health check or outlier detection takes instances out.
pub fn first_level(instances: &[Instance]) -> &[Instance] {
    let Some(level) = instances
        .iter()
        .filter(|i| i.weight > 0)
        .map(|i| i.level)
        .min()
    else {
        return instances;
    };
    let end = instances.partition_point(|i| i.level <= level);
    &instances[..end]
}

/// `select` as validated: label key → the value (a [`Template`]) it must have.
pub type Select = BTreeMap<String, Template>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ConfigSpec;

    fn config(yaml: &str) -> Config {
        Config::try_from(ConfigSpec::from_yaml(yaml).unwrap()).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn addresses(c: &Config) -> Vec<String> {
        c.services()[0]
            .instances()
            .iter()
            .map(|i| i.address().to_string())
            .collect()
    }

    #[test]
    fn templates_parse_and_render() {
        let t = Template::parse("${node.env}.${node.region}.lms.example.com:443").unwrap();
        assert!(t.is_templated());
        assert_eq!(t.labels().collect::<Vec<_>>(), ["env", "region"]);
        let l = labels(&[("env", "prod"), ("region", "eu")]);
        assert_eq!(t.render(&l).unwrap(), "prod.eu.lms.example.com:443");
        assert_eq!(t.render(&labels(&[("env", "x")])).unwrap_err(), "region");
        assert!(!Template::parse("a$b:1").unwrap().is_templated());
        for bad in [
            "${env}:1",
            "${node.}:1",
            "${node.a b}:1",
            "${node.env:1",
            "${NODE.env}:1",
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(
                e.contains("only ${node.NAME} placeholders exist"),
                "{bad}: {e}"
            );
        }
    }

    const LOCAL: &str = r#"
services:
  - name: lms
    locality: { prefer: [region, zone], fallback: FALLBACK }
    instances:
      - { address: "10.0.0.1:80", labels: { region: a, zone: a1 } }
      - { address: "10.0.0.2:80", labels: { region: a, zone: a2 } }
      - { address: "10.0.0.3:80", labels: { region: b, zone: b1 } }
"#;

    #[test]
    fn locality_prefers_shared_labels_level_by_level() {
        let any = config(&LOCAL.replace("FALLBACK", "any"));
        let none = config(&LOCAL.replace("FALLBACK", "none"));
        // (configuration, the proxy's labels, the instances it uses)
        type Case<'a> = (&'a Config, &'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            (&any, &[("region", "a"), ("zone", "a2")], &["10.0.0.2:80"]),
            (
                &any,
                &[("region", "a"), ("zone", "a9")],
                &["10.0.0.1:80", "10.0.0.2:80"],
            ),
            (&any, &[("region", "b")], &["10.0.0.3:80"]),
            (
                &any,
                &[("region", "c")],
                &["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"],
            ),
            (&any, &[], &["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]),
            (&none, &[("region", "c")], &[]),
            (&none, &[], &[]),
            (&none, &[("region", "b"), ("zone", "b1")], &["10.0.0.3:80"]),
        ];
        for (c, l, want) in cases {
            let got = localize(c, &labels(l)).unwrap();
            let used: Vec<String> = first_level(got.services()[0].instances())
                .iter()
                .map(|i| i.address().to_string())
                .collect();
            assert_eq!(used, *want, "{l:?}");
        }
        // Every allowed instance stays, by level, for when a level's instances are down.
        let got = localize(&any, &labels(&[("region", "a"), ("zone", "a2")])).unwrap();
        let levels: Vec<(String, u8)> = got.services()[0]
            .instances()
            .iter()
            .map(|i| (i.address().to_string(), i.locality_level()))
            .collect();
        assert_eq!(
            levels,
            [
                ("10.0.0.2:80".to_owned(), 0),
                ("10.0.0.1:80".to_owned(), 1),
                ("10.0.0.3:80".to_owned(), 2)
            ]
        );
        let got = localize(&none, &labels(&[("region", "a"), ("zone", "a2")])).unwrap();
        assert_eq!(
            addresses(&got),
            ["10.0.0.2:80", "10.0.0.1:80"],
            "none never crosses"
        );
    }

    #[test]
    fn without_the_label_a_service_gets_no_instances_and_an_error() {
        let c = config(
            "services:\n  - { name: a, instances: [{ address: \"${node.host}:80\" }] }\n  - { name: b, instances: [{ address: \"10.0.0.1:80\" }] }\n",
        );
        let (out, errors) = localize_partial(&c, &labels(&[]));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().contains("service \"a\": instances[0].address: this proxy has no label \"host\" (its labels: none)"), "{}", errors[0]);
        assert!(out.services()[0].instances().is_empty());
        assert_eq!(out.services()[1].instances().len(), 1);
    }

    #[test]
    fn select_and_address_placeholders_follow_the_node() {
        let c = config(
            r#"
services:
  - name: lms
    select: { env: "${node.env}" }
    instances:
      - { address: "10.0.0.1:80", labels: { env: prod } }
      - { address: "10.0.0.2:80", labels: { env: test } }
      - { address: "${node.env}.${node.region}.lms.example.com:443", labels: { env: prod } }
"#,
        );
        let prod = localize(&c, &labels(&[("env", "prod"), ("region", "eu")])).unwrap();
        assert_eq!(
            addresses(&prod),
            ["10.0.0.1:80", "prod.eu.lms.example.com:443"]
        );
        assert!(
            !needs_labels(&prod)
                || prod.services()[0]
                    .instances()
                    .iter()
                    .all(|i| i.template().is_none())
        );
        let test = localize(&c, &labels(&[("env", "test"), ("region", "eu")])).unwrap();
        assert_eq!(addresses(&test), ["10.0.0.2:80"]);
        let e = localize(&c, &labels(&[("region", "eu")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("service \"lms\": instances[2].address: this proxy has no label \"env\" (its labels: region=eu)"), "{e}");
        assert!(
            e.contains("service \"lms\": select.env: this proxy has no label \"env\""),
            "{e}"
        );
    }
}
