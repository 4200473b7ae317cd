//! `routemaster diff`: what `apply -f FILE` would change, computed locally from the
//! file and the control plane's `List`.
//!
//! Both sides are compared as *normalised* specs: each object goes through validation
//! into the model and back (`Route::try_from` → `RouteSpec::from`), so `code: 301`
//! written out and `code` left to its default compare equal, exactly as the control
//! plane will store them. Objects are matched by service name / route id; objects only
//! on the server are not part of the plan, because `apply` never deletes.
//!
//! Certificates are compared with `key_pem` redacted on both sides (the control plane
//! never lists keys): a key cannot change without its certificate changing (they must
//! match), so comparing `cert_pem`, files, hosts and `default` shows every real change.

use std::collections::{HashMap, HashSet};
use std::fmt;

use routemaster_common::spec::{CertificateSpec, ConfigSpec, RouteSpec, ServiceSpec};
use routemaster_common::{Config, ObjectRef, Route, Service, ValidationErrors};
use routemaster_proto::{ConversionError, v1};
use serde::Serialize;

use super::output::to_yaml;

/// Unchanged lines kept around each change, enough to see which key a nested line
/// (say `weight: 90`) belongs to.
const CONTEXT: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Service,
    Route,
    Certificate,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Service => "service",
            ObjectKind::Route => "route",
            ObjectKind::Certificate => "certificate",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The object's content (defaults written out), one YAML line each.
    Create(Vec<String>),
    /// The line diff from the server's YAML rendering to the file's.
    Update(Vec<DiffLine>),
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: ObjectKind,
    pub name: String,
    pub change: Change,
}

/// One entry per object of the file: services first, then routes, in file order (the
/// order `apply` reports them in).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub entries: Vec<Entry>,
}

impl Plan {
    fn count(&self, pred: impl Fn(&Change) -> bool) -> usize {
        self.entries.iter().filter(|e| pred(&e.change)).count()
    }

    pub fn has_changes(&self) -> bool {
        self.entries
            .iter()
            .any(|e| !matches!(e.change, Change::Unchanged))
    }

    /// `N to create, M to update, K unchanged`.
    pub fn summary(&self) -> String {
        format!(
            "{} to create, {} to update, {} unchanged",
            self.count(|c| matches!(c, Change::Create(_))),
            self.count(|c| matches!(c, Change::Update(_))),
            self.count(|c| matches!(c, Change::Unchanged)),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The file does not validate (on its own, or against the services already on the
    /// control plane).
    #[error("{0}")]
    Invalid(ValidationErrors),
    /// The control plane listed an object that cannot be read back.
    #[error("the control plane listed an unreadable object: {0}")]
    Server(#[from] ConversionError),
    #[error("cannot render YAML: {0}")]
    Render(String),
}

// ---- normalisation ----

/// A server object as shown by `get` and compared by `diff`: its normalised spec when it
/// validates, else its spec as sent (so an object the server should never have accepted
/// is still visible rather than hidden).
pub fn normalise_service(
    s: v1::Service,
) -> Result<(ServiceSpec, Option<Service>), ConversionError> {
    let spec = ServiceSpec::try_from(s)?;
    Ok(match Service::try_from(spec.clone()) {
        Ok(model) => (ServiceSpec::from(&model), Some(model)),
        Err(_) => (spec, None),
    })
}

pub fn normalise_route(r: v1::Route) -> Result<(RouteSpec, Option<Route>), ConversionError> {
    let spec = RouteSpec::try_from(r)?;
    Ok(match Route::try_from(spec.clone()) {
        Ok(model) => (RouteSpec::from(&model), Some(model)),
        Err(_) => (spec, None),
    })
}

pub fn normalise_services(services: Vec<v1::Service>) -> Result<Vec<ServiceSpec>, ConversionError> {
    services
        .into_iter()
        .map(|s| normalise_service(s).map(|(spec, _)| spec))
        .collect()
}

pub fn normalise_routes(routes: Vec<v1::Route>) -> Result<Vec<RouteSpec>, ConversionError> {
    routes
        .into_iter()
        .map(|r| normalise_route(r).map(|(spec, _)| spec))
        .collect()
}

// ---- the plan ----

/// Validates `file` and compares it with the server's objects.
///
/// Validation is the route file's (`Config::try_from`), with one difference: a route may
/// forward to a service that is already on the control plane but not in the file, since
/// `apply` upserts into the stored configuration rather than replacing it. So the
/// cross-object checks run over the configuration as it would be after the apply.
pub fn plan(
    file: &ConfigSpec,
    server_services: Vec<v1::Service>,
    server_routes: Vec<v1::Route>,
) -> Result<Plan, DiffError> {
    let mut errors = Vec::new();
    let mut services = Vec::new();
    for s in &file.services {
        match Service::try_from(s.clone()) {
            Ok(m) => services.push(m),
            Err(e) => errors.extend(e.0),
        }
    }
    let mut routes = Vec::new();
    for r in &file.routes {
        match Route::try_from(r.clone()) {
            Ok(m) => routes.push(m),
            Err(e) => errors.extend(e.0),
        }
    }
    if !errors.is_empty() {
        return Err(DiffError::Invalid(ValidationErrors(errors)));
    }

    let server_services = server_services
        .into_iter()
        .map(normalise_service)
        .collect::<Result<Vec<_>, _>>()?;
    let server_routes = server_routes
        .into_iter()
        .map(normalise_route)
        .collect::<Result<Vec<_>, _>>()?;

    check_against_server(&services, &routes, &server_services, &server_routes)?;

    let before_services: HashMap<&str, &ServiceSpec> = server_services
        .iter()
        .map(|(spec, _)| (spec.name.as_str(), spec))
        .collect();
    let before_routes: HashMap<&str, &RouteSpec> = server_routes
        .iter()
        .map(|(spec, _)| (spec.id.as_str(), spec))
        .collect();

    let mut entries = Vec::new();
    for s in &services {
        let after = ServiceSpec::from(s);
        let before = before_services.get(after.name.as_str()).copied();
        entries.push(entry(
            ObjectKind::Service,
            after.name.clone(),
            before,
            &after,
        )?);
    }
    for r in &routes {
        let after = RouteSpec::from(r);
        let before = before_routes.get(after.id.as_str()).copied();
        entries.push(entry(ObjectKind::Route, after.id.clone(), before, &after)?);
    }
    Ok(Plan { entries })
}

/// Unique names and known services, over the file's objects plus the server objects
/// the file does not replace. Only problems with the file's own objects are reported:
/// anything else is the server's state, which this apply does not touch.
fn check_against_server(
    services: &[Service],
    routes: &[Route],
    server_services: &[(ServiceSpec, Option<Service>)],
    server_routes: &[(RouteSpec, Option<Route>)],
) -> Result<(), DiffError> {
    let file_services: HashSet<&str> = services.iter().map(|s| s.name().as_str()).collect();
    let file_routes: HashSet<&str> = routes.iter().map(|r| r.id().as_str()).collect();
    let mut all_services = services.to_vec();
    all_services.extend(
        server_services
            .iter()
            .filter_map(|(_, m)| m.as_ref())
            .filter(|m| !file_services.contains(m.name().as_str()))
            .cloned(),
    );
    let mut all_routes = routes.to_vec();
    all_routes.extend(
        server_routes
            .iter()
            .filter_map(|(_, m)| m.as_ref())
            .filter(|m| !file_routes.contains(m.id().as_str()))
            .cloned(),
    );
    match Config::new(all_services, all_routes) {
        Ok(_) => Ok(()),
        Err(e) => {
            let ours: Vec<_> =
                e.0.into_iter()
                    .filter(|err| match &err.object {
                        ObjectRef::Service(name) => file_services.contains(name.as_str()),
                        ObjectRef::Route(id) => file_routes.contains(id.as_str()),
                        ObjectRef::Certificate(_) => false,
                    })
                    .collect();
            if ours.is_empty() {
                Ok(())
            } else {
                Err(DiffError::Invalid(ValidationErrors(ours)))
            }
        }
    }
}

/// A spec with its defaults written out, as the diff shows it.
trait Explicit: Clone {
    fn explicit(&self) -> Self;
}

impl Explicit for ServiceSpec {
    fn explicit(&self) -> Self {
        self.clone().with_defaults()
    }
}

impl Explicit for RouteSpec {
    fn explicit(&self) -> Self {
        self.clone().with_defaults()
    }
}

impl Explicit for CertificateSpec {
    fn explicit(&self) -> Self {
        self.clone()
    }
}

/// The file's certificates against the server's (listed with keys redacted), in file
/// order; both sides shown and compared with `key_pem` redacted.
pub fn certificate_entries(
    file: &ConfigSpec,
    server: Vec<v1::Certificate>,
) -> Result<Vec<Entry>, DiffError> {
    let server: HashMap<String, CertificateSpec> = server
        .into_iter()
        .map(|c| {
            let spec = CertificateSpec::from(c).redacted();
            (spec.name.clone(), spec)
        })
        .collect();
    let mut entries = Vec::new();
    for c in file.tls.iter().flat_map(|t| &t.certificates) {
        // Normalised (hosts lowercased, `default: false` dropped) when it validates on
        // its own; a `<redacted>` key does not, and is compared as written.
        let after = routemaster_common::tls::Certificate::try_from(c.clone())
            .map(|m| CertificateSpec::from(&m))
            .unwrap_or_else(|_| c.clone())
            .redacted();
        let before = server.get(&after.name);
        entries.push(entry(
            ObjectKind::Certificate,
            after.name.clone(),
            before,
            &after,
        )?);
    }
    Ok(entries)
}

/// `before` and `after` are normalised (compared as such); they are shown with their
/// defaults written out, as `get -o yaml` shows them.
fn entry<T: Serialize + PartialEq + Explicit>(
    kind: ObjectKind,
    name: String,
    before: Option<&T>,
    after: &T,
) -> Result<Entry, DiffError> {
    let change = match before {
        None => {
            let new = to_yaml(&after.explicit()).map_err(DiffError::Render)?;
            Change::Create(new.lines().map(str::to_owned).collect())
        }
        Some(b) if b == after => Change::Unchanged,
        Some(b) => {
            let old = to_yaml(&b.explicit()).map_err(DiffError::Render)?;
            let new = to_yaml(&after.explicit()).map_err(DiffError::Render)?;
            Change::Update(line_diff(&old, &new))
        }
    };
    Ok(Entry { kind, name, change })
}

// ---- line diff ----

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffLine {
    Same(String),
    Removed(String),
    Added(String),
}

/// A minimal line diff (longest common subsequence). Objects are a few dozen lines at
/// most, so the quadratic table is cheaper than anything cleverer would be to maintain.
pub fn line_diff(old: &str, new: &str) -> Vec<DiffLine> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, x) in a.iter().enumerate().rev() {
        for (j, y) in b.iter().enumerate().rev() {
            lcs[i][j] = if x == y {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(DiffLine::Same(a[i].to_owned()));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(DiffLine::Removed(a[i].to_owned()));
            i += 1;
        } else {
            out.push(DiffLine::Added(b[j].to_owned()));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| DiffLine::Removed((*l).to_owned())));
    out.extend(b[j..].iter().map(|l| DiffLine::Added((*l).to_owned())));
    out
}

/// The diff lines to print: changes as `- `/`+ `, up to `context` unchanged lines
/// around them, and `...` where unchanged lines were left out.
pub fn render_line_diff(lines: &[DiffLine], context: usize) -> Vec<String> {
    let changed: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !matches!(l, DiffLine::Same(_)))
        .map(|(i, _)| i)
        .collect();
    let near_change = |i: usize| changed.iter().any(|&c| c.abs_diff(i) <= context);
    let mut visible: Vec<bool> = (0..lines.len()).map(near_change).collect();
    // `...` standing for a single line hides nothing worth hiding: show such a line
    // (its neighbours are shown, or it is the first or last line).
    for i in 0..visible.len() {
        let shown_or_edge = |j: Option<usize>| j.is_none_or(|j| visible.get(j).is_none_or(|v| *v));
        if !visible[i] && shown_or_edge(i.checked_sub(1)) && shown_or_edge(Some(i + 1)) {
            visible[i] = true;
        }
    }
    let mut out = Vec::new();
    let mut skipped = false;
    for (line, shown) in lines.iter().zip(&visible) {
        if !shown {
            skipped = true;
            continue;
        }
        if skipped {
            out.push("    ...".to_owned());
            skipped = false;
        }
        out.push(match line {
            DiffLine::Same(l) => format!("    {l}"),
            DiffLine::Removed(l) => format!("  - {l}"),
            DiffLine::Added(l) => format!("  + {l}"),
        });
    }
    if skipped {
        out.push("    ...".to_owned());
    }
    out
}

/// The whole `diff` output: `+ kind/name` and its content for new objects, `~ kind/name`
/// and its line diff for changed ones (unchanged objects only count in the summary),
/// then the summary.
pub fn render_plan(plan: &Plan) -> String {
    let mut out = String::new();
    for e in &plan.entries {
        match &e.change {
            Change::Create(lines) => {
                out.push_str(&format!("+ {}/{}\n", e.kind, e.name));
                for l in lines {
                    out.push_str(&format!("  + {l}\n"));
                }
            }
            Change::Update(lines) => {
                out.push_str(&format!("~ {}/{}\n", e.kind, e.name));
                for l in render_line_diff(lines, CONTEXT) {
                    out.push_str(&l);
                    out.push('\n');
                }
            }
            Change::Unchanged => {}
        }
    }
    out.push_str(&plan.summary());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use routemaster_proto::ListParts;

    /// The server side as the control plane would list it after applying `yaml`.
    fn server(yaml: &str) -> ListParts {
        let spec = ConfigSpec::from_yaml(yaml).unwrap();
        ListParts::from(&Config::try_from(spec).unwrap())
    }

    fn plan_of(file: &str, on_server: &str) -> Result<Plan, DiffError> {
        let parts = server(on_server);
        plan(
            &ConfigSpec::from_yaml(file).unwrap(),
            parts.services,
            parts.routes,
        )
    }

    const SERVER: &str = r#"
services:
  - name: lms
    instances: [{ address: "127.0.0.1:9001" }]
  - name: lms-v2
    instances: [{ address: "127.0.0.1:9003" }]
routes:
  - id: courses
    path: { prefix: /courses }
    forward: { service: lms }
  - id: old
    path: { prefix: /old }
    redirect: { prefix: /courses }
  - id: split
    path: { prefix: /api }
    forward:
      backends: [{ service: lms, weight: 90 }, { service: lms-v2, weight: 10 }]
"#;

    #[test]
    fn plans() {
        struct Case {
            name: &'static str,
            file: &'static str,
            want: &'static str,
            changes: bool,
        }
        let cases = [
            Case {
                name: "identical file, defaults written out",
                file: r#"
services:
  - name: lms
    instances: [{ address: "127.0.0.1:9001", weight: 1 }]
    load_balancing: round_robin
routes:
  - id: old
    path: { prefix: /old/ }
    group: default
    priority: 0
    redirect: { prefix: /courses, code: 301 }
"#,
                want: "0 to create, 0 to update, 2 unchanged\n",
                changes: false,
            },
            Case {
                name: "new route using a service only on the server",
                file: r#"
routes:
  - id: new
    path: { exact: /new }
    forward: { service: lms-v2 }
"#,
                want: "\
+ route/new
  + id: new
  + path:
  +   exact: /new
  + priority: 0
  + group: default
  + mode: active
  + forward:
  +   service: lms-v2
1 to create, 0 to update, 0 unchanged
",
                changes: true,
            },
            Case {
                name: "changed weights",
                file: r#"
routes:
  - id: split
    path: { prefix: /api }
    forward:
      backends: [{ service: lms, weight: 80 }, { service: lms-v2, weight: 20 }]
"#,
                want: "\
~ route/split
    ...
    forward:
      backends:
      - service: lms
  -     weight: 90
  +     weight: 80
      - service: lms-v2
  -     weight: 10
  +     weight: 20
0 to create, 1 to update, 0 unchanged
",
                changes: true,
            },
        ];
        for c in cases {
            let plan = plan_of(c.file, SERVER).unwrap();
            assert_eq!(render_plan(&plan), c.want, "{}", c.name);
            assert_eq!(plan.has_changes(), c.changes, "{}", c.name);
        }
    }

    #[test]
    fn invalid_files_name_the_object_and_field() {
        let cases = [
            (
                "routes: [{ id: a, path: { prefix: courses }, forward: { service: lms } }]",
                r#"route "a": path.prefix"#,
            ),
            (
                "routes: [{ id: a, forward: { service: nowhere } }]",
                r#"route "a": forward.service: unknown service "nowhere""#,
            ),
            (
                "services: [{ name: x, instances: [{ address: nope }] }, { name: x }]",
                r#"service "x": instances[0].address"#,
            ),
            (
                "services: [{ name: x }, { name: x }]",
                r#"service "x": name: is declared more than once"#,
            ),
        ];
        for (file, want) in cases {
            let err = plan_of(file, SERVER).unwrap_err();
            assert!(matches!(err, DiffError::Invalid(_)), "{file}: {err:?}");
            assert!(err.to_string().contains(want), "{file}: {err}");
        }
    }

    #[test]
    fn replacing_a_service_server_routes_use_is_fine() {
        // Server routes still forward to lms, which stays declared (by the file now).
        let plan = plan_of(
            "services: [{ name: lms, instances: [{ address: '127.0.0.1:9009' }] }]",
            SERVER,
        )
        .unwrap();
        assert_eq!(
            render_plan(&plan),
            "~ service/lms\n    name: lms\n    instances:\n  - - address: 127.0.0.1:9001\n  + - address: 127.0.0.1:9009\n      weight: 1\n    load_balancing: round_robin\n    protocol: http1\n0 to create, 1 to update, 0 unchanged\n"
        );
    }

    #[test]
    fn line_diffs() {
        use DiffLine::*;
        let s = |x: &str| x.to_owned();
        let cases: [(&str, &str, Vec<DiffLine>); 4] = [
            ("a\nb\n", "a\nb\n", vec![Same(s("a")), Same(s("b"))]),
            (
                "a\nb\nc",
                "a\nc",
                vec![Same(s("a")), Removed(s("b")), Same(s("c"))],
            ),
            (
                "a\nc",
                "a\nb\nc",
                vec![Same(s("a")), Added(s("b")), Same(s("c"))],
            ),
            ("x", "y", vec![Removed(s("x")), Added(s("y"))]),
        ];
        for (old, new, want) in cases {
            assert_eq!(line_diff(old, new), want, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn long_unchanged_runs_are_elided() {
        let old: String = (0..20).map(|i| format!("l{i}\n")).collect();
        let new = old.replace("l10\n", "L10\n");
        let got = render_line_diff(&line_diff(&old, &new), 1);
        assert_eq!(
            got,
            [
                "    ...", "    l9", "  - l10", "  + L10", "    l11", "    ..."
            ]
        );
        // a gap of one line is shown rather than elided
        let new = new.replace("l13\n", "L13\n");
        let got = render_line_diff(&line_diff(&old, &new), 1);
        assert_eq!(
            got,
            [
                "    ...", "    l9", "  - l10", "  + L10", "    l11", "    l12", "  - l13",
                "  + L13", "    l14", "    ..."
            ]
        );
    }
}
