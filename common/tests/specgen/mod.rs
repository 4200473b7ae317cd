//! Generated valid route files for the round-trip property tests, shared by
//! `common/tests/roundtrip.rs` (driven by proptest), the control plane's in-process round
//! trip and the real-etcd one in `integration-tests` (both include this file with
//! `#[path]`, so there is one generator).
//!
//! [`config`] turns a seed into a valid [`ConfigSpec`] that uses every field of the
//! format, each optional field present or absent, written in canonical spelling (the form
//! the control plane stores), including strings YAML must quote. The round trip's
//! expectation is then exact: what comes back equals `config(seed).with_defaults()`.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use routemaster_common::duration;
use routemaster_common::mirror::BodyCompare;
use routemaster_common::model::{LoadBalancing, RouteMode};
use routemaster_common::spec::{
    BackendSpec, CodeOrWord, CompareSpec, ConfigSpec, FiltersSpec, ForwardSpec, HeaderFilterSpec,
    HeaderSpec, HealthCheckSpec, InstanceSpec, LimitsSpec, MirrorSpec, OutlierSpec, PathSpec,
    ProtocolSpec, QuerySpec, RedirectSpec, RetrySpec, RouteSpec, ServiceSpec, ShadowSpec,
};
use routemaster_common::spec::{CertificateSpec, DiscoverySpec, TlsSpec, UpstreamTlsSpec};

/// splitmix64: small, seedable, good enough to pick shapes.
#[derive(Debug, Clone)]
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 0..n
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// lo..=hi
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }

    fn maybe<T>(&mut self, percent: u64, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        self.chance(percent).then(|| f(self))
    }

    /// `[a-z0-9-]`, starting with a letter; `suffix` keeps names unique.
    fn name(&mut self, suffix: usize) -> String {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
        let len = self.range(1, 12) as usize;
        let mut s = String::new();
        s.push(char::from(b'a' + self.below(26) as u8));
        for _ in 1..len {
            s.push(char::from(self.pick(CHARS)));
        }
        let s = format!("{s}{suffix}");
        s[s.len().saturating_sub(63)..].to_owned()
    }

    fn segment(&mut self) -> String {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_~";
        let len = self.range(1, 8) as usize;
        (0..len).map(|_| char::from(self.pick(CHARS))).collect()
    }

    /// A normalised absolute path: `/` or `/a/b` (no trailing slash, no dot segments).
    fn path(&mut self) -> String {
        let n = self.below(4);
        if n == 0 {
            return "/".into();
        }
        (0..n).map(|_| format!("/{}", self.segment())).collect()
    }

    fn host(&mut self, i: usize) -> String {
        let labels = self.range(1, 3);
        let mut parts: Vec<String> = (0..labels).map(|_| self.label()).collect();
        parts.push(format!("h{i}"));
        parts.push(self.pick(&["com", "org", "internal", "test"]).to_owned());
        parts.join(".")
    }

    fn label(&mut self) -> String {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let len = self.range(1, 10) as usize;
        (0..len).map(|_| char::from(self.pick(CHARS))).collect()
    }

    /// Strings that YAML must quote or could misread, and plain ones.
    fn text(&mut self) -> String {
        let tricky = [
            "yes",
            "no",
            "null",
            "~",
            "true",
            "123",
            "1.5",
            "0x1F",
            "a: b",
            "#hash",
            "-dash",
            "'single'",
            "\"double\"",
            "x y",
            "",
            " lead",
            "trail ",
            "back\\slash",
            "tab\tin",
            "ünïcödé",
            "@at",
            "*star",
            "&amp",
            "!bang",
            "%pct",
            "{b}",
            "[s]",
            "a,b",
        ];
        if self.chance(50) {
            self.pick(&tricky).to_owned()
        } else {
            self.label()
        }
    }
}

const REGEXES: &[&str] = &[
    "/c/[0-9]+",
    "^/api/v[12]/.*$",
    ".*",
    "/(a|b)/x",
    "/files/[^/]+\\.txt",
];
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// A valid route file from `seed`.
pub fn config(seed: u64) -> ConfigSpec {
    let mut g = Gen::new(seed);
    let services: Vec<ServiceSpec> = (0..g.range(1, 4) as usize)
        .map(|i| service(&mut g, i))
        .collect();
    let names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    let routes = (0..g.range(0, 5) as usize)
        .map(|i| route(&mut g, i, &names))
        .collect();
    ConfigSpec {
        services,
        routes,
        tls: None,
    }
}

/// [`config`] with a `tls:` section in most seeds: inline certificates (a fixture
/// valid until 2126 for `gen.test` and `*.gen.test`) and file-based ones, in the
/// canonical form (sorted by name, `default` only when true). Kept apart from
/// [`config`] until the control plane stores certificates.
pub fn config_with_tls(seed: u64) -> ConfigSpec {
    let mut spec = config(seed);
    let mut g = Gen::new(seed ^ 0x5EED_7150);
    spec.tls = tls(&mut g);
    spec
}

const GEN_CERT: &str = include_str!("gen-cert.pem");
const GEN_KEY: &str = include_str!("gen-key.pem");

fn tls(g: &mut Gen) -> Option<TlsSpec> {
    if g.chance(20) {
        return None;
    }
    let n = g.range(1, 4) as usize;
    let default = g.chance(50).then(|| g.below(n as u64) as usize);
    let certificates = (0..n)
        .map(|i| {
            let hosts: Vec<String> = match g.below(3) {
                0 => vec![format!("c{i}.gen.test")],
                1 => vec![format!("c{i}.gen.test"), format!("d{i}.gen.test")],
                _ if i == 0 => vec!["gen.test".to_owned(), "*.gen.test".to_owned()],
                _ => vec![format!("e{i}.gen.test")],
            };
            let (cert_pem, cert_file, key_pem, key_file) = match g.below(3) {
                0 => (
                    Some(GEN_CERT.to_owned()),
                    None,
                    Some(GEN_KEY.to_owned()),
                    None,
                ),
                1 => (
                    None,
                    Some(format!("/etc/routemaster/c{i}.pem")),
                    None,
                    Some(format!("/etc/routemaster/c{i}.key")),
                ),
                _ => (
                    Some(GEN_CERT.to_owned()),
                    None,
                    None,
                    Some(format!("keys/c{i} key.pem")),
                ),
            };
            CertificateSpec {
                name: format!("cert-{i}"),
                hosts,
                cert_pem,
                cert_file,
                key_pem,
                key_file,
                default: (default == Some(i)).then_some(true),
            }
        })
        .collect();
    Some(TlsSpec { certificates })
}

fn service(g: &mut Gen, i: usize) -> ServiceSpec {
    let n = g.below(4) as usize;
    let mut instances: Vec<InstanceSpec> = (0..n)
        .map(|j| {
            let port = g.range(1, 65535);
            let kind = g.below(7);
            let address = match kind {
                0 | 1 => format!("10.{i}.{j}.{}:{port}", g.below(256)),
                2 | 3 => format!("{}:{port}", g.host(j)),
                4 => format!("${{node.env}}.${{node.region}}.{}:{port}", g.host(j)),
                _ => format!("[fd00::{i}:{j}]:{port}"),
            };
            // `discovery: dns` needs a host name; `static` is never written out, so
            // only `dns` (or nothing) roundtrips as written.
            let dns = (2..=4).contains(&kind) && g.chance(40);
            InstanceSpec {
                discovery: dns.then_some(DiscoverySpec::Dns),
                dns_refresh: if dns {
                    g.maybe(50, |g| ms(g.pick(&[1_000, 30_000, 45_000, 600_000])))
                } else {
                    None
                },
                address,
                weight: g.maybe(50, |g| g.pick(&[0, 1, 2, 7, 100, 10_000])),
                labels: if g.chance(40) {
                    (0..g.range(1, 3))
                        .map(|_| {
                            let key = g.pick(&["region", "zone", "env", "example.com/tier"]);
                            let value = g.pick(&["eu-west-1", "a", "prod", "", "v1.2_x"]);
                            (key.to_owned(), value.to_owned())
                        })
                        .collect()
                } else {
                    Default::default()
                },
            }
        })
        .collect();
    if !instances.is_empty() && instances.iter().all(|i| i.weight == Some(0)) {
        instances[0].weight = Some(3);
    }
    let protocol = g.maybe(60, |g| {
        g.pick(&[
            ProtocolSpec::Http1,
            ProtocolSpec::H2c,
            ProtocolSpec::H2,
            ProtocolSpec::Https,
        ])
    });
    // `tls` only where validation allows it: TLS protocols.
    let tls = match protocol {
        Some(ProtocolSpec::H2 | ProtocolSpec::Https) => g.maybe(70, |g| UpstreamTlsSpec {
            server_name: g.maybe(50, |g| {
                g.pick(&["users.internal", "gen.test", "10.0.0.1", "::1"])
                    .to_owned()
            }),
            ca_pem: g.maybe(50, |_| GEN_CERT.to_owned()),
        }),
        _ => None,
    };
    // `discovery: dns` on a TLS service needs `tls.server_name`.
    if protocol.is_some_and(|p| matches!(p, ProtocolSpec::H2 | ProtocolSpec::Https))
        && tls.as_ref().is_none_or(|t| t.server_name.is_none())
    {
        for inst in &mut instances {
            inst.discovery = None;
            inst.dns_refresh = None;
        }
    }
    ServiceSpec {
        name: g.name(i),
        instances,
        load_balancing: g.maybe(60, |g| {
            g.pick(&[
                LoadBalancing::RoundRobin,
                LoadBalancing::LeastRequest,
                LoadBalancing::Random,
            ])
        }),
        protocol,
        tls,
        health_check: g.maybe(30, health_check),
        outlier: g.maybe(30, |g| OutlierSpec {
            consecutive_failures: g.maybe(60, |g| g.pick(&[1, 3, 5, 1000])),
            base_ejection: g.maybe(60, |g| ms(g.pick(&[1, 250, 30_000, 600_000]))),
            max_ejected_percent: g.maybe(60, |g| g.pick(&[0, 10, 50, 100])),
        }),
        limits: g.maybe(30, |g| LimitsSpec {
            max_connections: g.maybe(60, |g| g.pick(&[1, 100, 1024, 1_000_000])),
            max_pending: g.maybe(60, |g| g.pick(&[1, 256, 1_000_000])),
        }),
        select: g.maybe(30, |g| {
            let mut select = std::collections::BTreeMap::new();
            select.insert("env".to_owned(), "${node.env}".to_owned());
            if g.chance(50) {
                select.insert("example.com/tier".to_owned(), "v1.2_x".to_owned());
            }
            select
        }),
        locality: g.maybe(30, |g| routemaster_common::spec::LocalitySpec {
            prefer: g
                .pick(&[
                    &["region"][..],
                    &["region", "zone"],
                    &["zone", "example.com/tier"],
                ])
                .iter()
                .map(|k| (*k).to_owned())
                .collect(),
            fallback: g.maybe(60, |g| {
                g.pick(&[
                    routemaster_common::locality::Fallback::Any,
                    routemaster_common::locality::Fallback::None,
                ])
            }),
        }),
    }
}

fn ms(n: u64) -> String {
    duration::format(Duration::from_millis(n))
}

/// Canonical lists: one code as a number, a range as `lo-hi`.
fn health_check(g: &mut Gen) -> HealthCheckSpec {
    // The timeout may not exceed the interval: both small or the interval large.
    let (interval, timeout) = match g.below(3) {
        0 => (None, g.maybe(50, |g| ms(g.pick(&[1, 500, 1_000])))),
        1 => (
            Some(ms(g.pick(&[10_000, 60_000]))),
            g.maybe(50, |g| ms(g.pick(&[1, 5_000]))),
        ),
        _ => (Some(ms(1_000)), Some(ms(g.pick(&[100, 1_000])))),
    };
    HealthCheckSpec {
        path: g.maybe(60, |g| g.path()),
        interval,
        timeout,
        healthy: g.maybe(50, |g| g.pick(&[1, 2, 100])),
        unhealthy: g.maybe(50, |g| g.pick(&[1, 3, 100])),
        expect: g.maybe(50, |g| {
            let mut list = vec![g.pick(&[
                CodeOrWord::Code(200),
                CodeOrWord::Code(204),
                CodeOrWord::Word("200-399".into()),
                CodeOrWord::Word("100-599".into()),
            ])];
            if g.chance(40) {
                list.push(CodeOrWord::Word("401-403".into()));
            }
            list
        }),
    }
}

fn retry(g: &mut Gen) -> RetrySpec {
    let per_try_timeout = g.maybe(50, |g| ms(g.pick(&[1, 250, 2_000])));
    let on = g.maybe(60, |g| {
        let mut on: Vec<CodeOrWord> = ["connect-failure", "reset", "per-try-timeout"]
            .into_iter()
            .filter(|w| (*w != "per-try-timeout" || per_try_timeout.is_some()) && g.chance(50))
            .map(|w| CodeOrWord::Word(w.into()))
            .collect();
        for c in [502, 503, 504, 429] {
            if g.chance(40) {
                on.push(CodeOrWord::Code(c));
            }
        }
        if on.is_empty() {
            on.push(CodeOrWord::Code(503));
        }
        on
    });
    RetrySpec {
        attempts: g.maybe(60, |g| g.pick(&[1, 2, 10])),
        on,
        per_try_timeout,
        backoff: g.maybe(50, |g| ms(g.pick(&[0, 25, 1_000, 10_000]))),
        non_idempotent: g.maybe(50, |g| g.chance(50)),
    }
}

fn route(g: &mut Gen, i: usize, services: &[String]) -> RouteSpec {
    let path = g.maybe(80, |g| match g.below(3) {
        0 => PathSpec {
            prefix: Some(g.path()),
            ..PathSpec::default()
        },
        1 => PathSpec {
            exact: Some(g.path()),
            ..PathSpec::default()
        },
        _ => PathSpec {
            regex: Some(g.pick(REGEXES).to_owned()),
            ..PathSpec::default()
        },
    });
    let regex_path = path.as_ref().is_some_and(|p| p.regex.is_some());
    let hosts = g.maybe(50, |g| {
        (0..g.range(1, 3) as usize)
            .map(|j| {
                let h = g.host(j);
                if g.chance(30) { format!("*.{h}") } else { h }
            })
            .collect()
    });
    let methods = g.maybe(40, |g| {
        let mut m: Vec<String> = METHODS
            .iter()
            .filter(|_| g.chance(40))
            .map(|m| (*m).to_owned())
            .collect();
        if m.is_empty() {
            m.push("GET".into());
        }
        m
    });
    let headers = g.maybe(40, |g| {
        (0..g.range(1, 3) as usize)
            .map(|j| {
                let name = format!("x-{}-{j}", g.label());
                match g.below(3) {
                    0 => HeaderSpec {
                        name,
                        exact: Some(g.text()),
                        regex: None,
                        present: None,
                    },
                    1 => HeaderSpec {
                        name,
                        exact: None,
                        regex: Some(g.pick(&["^beta$", "a+", "v[0-9]"]).to_owned()),
                        present: None,
                    },
                    _ => HeaderSpec {
                        name,
                        exact: None,
                        regex: None,
                        present: Some(true),
                    },
                }
            })
            .collect()
    });
    let query = g.maybe(30, |g| {
        (0..g.range(1, 3) as usize)
            .map(|j| {
                let name = format!("q-{}-{j}", g.label());
                match g.below(3) {
                    0 => QuerySpec {
                        name,
                        exact: Some(g.text()),
                        regex: None,
                        present: None,
                    },
                    1 => QuerySpec {
                        name,
                        exact: None,
                        regex: Some(g.pick(&["^1$", "a+", "v[0-9]"]).to_owned()),
                        present: None,
                    },
                    _ => QuerySpec {
                        name,
                        exact: None,
                        regex: None,
                        present: Some(true),
                    },
                }
            })
            .collect()
    });
    let (forward, redirect) = if g.chance(70) {
        (Some(forward(g, services, regex_path)), None)
    } else {
        (None, Some(redirect(g, regex_path)))
    };
    let filters = if forward.is_some() {
        g.maybe(40, |g| FiltersSpec {
            request_headers: g.maybe(70, header_filter),
            response_headers: g.maybe(70, header_filter),
        })
        // A filter with nothing in it is no filter: the canonical form leaves it out.
        .filter(|f| f.request_headers.is_some() || f.response_headers.is_some())
    } else {
        None
    };
    RouteSpec {
        id: g.name(i),
        hosts,
        path,
        methods,
        headers,
        priority: g.maybe(40, |g| g.pick(&[0, 1, -1, 100, -5000, i32::MAX, i32::MIN])),
        group: g.maybe(30, |g| {
            if g.chance(30) {
                "default".to_owned()
            } else {
                g.name(0)
            }
        }),
        query,
        filters,
        mode: g.maybe(30, |g| {
            if g.chance(50) {
                RouteMode::Shadow
            } else {
                RouteMode::Active
            }
        }),
        shadow: if forward.is_some() {
            g.maybe(20, |g| ShadowSpec {
                expect_header: Some(g.pick(&["x-shortcut-result", "x-routed-to"]).to_string()),
            })
        } else {
            None
        },
        forward,
        redirect,
    }
}

/// Distinct names across the three lists, as validation requires.
fn header_filter(g: &mut Gen) -> HeaderFilterSpec {
    let tag = g.label();
    let lines = |g: &mut Gen, list: &str| {
        g.maybe(60, |g| {
            (0..g.range(1, 3))
                .map(|j| {
                    // Header values are visible ASCII, spaces and tabs.
                    let v = g.text();
                    let v = if v.is_ascii() { v } else { "plain".to_owned() };
                    (format!("x-{list}-{tag}-{j}"), v)
                })
                .collect()
        })
    };
    let set = lines(g, "set");
    let add = lines(g, "add");
    let remove = g.maybe(50, |g| {
        (0..g.range(1, 3))
            .map(|j| format!("x-rm-{tag}-{j}"))
            .collect()
    });
    if set.is_none() && add.is_none() && remove.is_none() {
        return HeaderFilterSpec {
            remove: Some(vec![format!("x-rm-{tag}")]),
            ..HeaderFilterSpec::default()
        };
    }
    HeaderFilterSpec { set, add, remove }
}

fn forward(g: &mut Gen, services: &[String], regex_path: bool) -> ForwardSpec {
    let (service, backends) = if g.chance(50) {
        (Some(g.pick(services)), None)
    } else {
        let mut list: Vec<BackendSpec> = (0..g.range(1, 3))
            .map(|_| BackendSpec {
                service: g.pick(services),
                weight: g.maybe(70, |g| g.pick(&[0, 1, 10, 90, 10_000])),
            })
            .collect();
        if list.iter().all(|b| b.weight == Some(0)) {
            list[0].weight = None;
        }
        (None, Some(list))
    };
    let (rewrite_prefix, rewrite_path) = match g.below(3) {
        0 if !regex_path => (Some(g.path()), None),
        1 => (None, Some(g.path())),
        _ => (None, None),
    };
    ForwardSpec {
        service,
        backends,
        rewrite_prefix,
        rewrite_path,
        host_rewrite: g.maybe(30, |g| {
            let h = g.host(0);
            if g.chance(50) {
                format!("{h}:{}", g.range(1, 65535))
            } else {
                h
            }
        }),
        timeout: g.maybe(40, |g| {
            duration::format(Duration::from_millis(g.pick(&[
                1, 250, 1_000, 1_500, 30_000, 90_000, 120_000, 3_600_000, 86_400_000,
            ])))
        }),
        retry: g.maybe(30, retry),
        mirror: g.maybe(25, |g| mirror(g, services)),
    }
}

fn mirror(g: &mut Gen, services: &[String]) -> MirrorSpec {
    MirrorSpec {
        service: g.pick(services),
        percent: g.maybe(50, |g| g.pick(&[1, 10, 50, 100])),
        compare: g.maybe(60, |g| CompareSpec {
            baseline: g.maybe(50, |g| g.pick(services)),
            status: g.maybe(40, |g| g.chance(50)),
            headers: g.maybe(50, |g| {
                let all = ["content-type", "cache-control", "etag", "x-version"];
                let n = g.range(1, 4) as usize;
                all[..n].iter().map(|h| (*h).to_owned()).collect()
            }),
            body: g.maybe(50, |g| {
                g.pick(&[BodyCompare::Json, BodyCompare::Bytes, BodyCompare::None])
            }),
            ignore: g.maybe(50, |g| {
                let all = ["$.generated_at", "$.items[*].etag", "$['odd key'][0]", "$"];
                let n = g.range(1, 4) as usize;
                all[..n].iter().map(|p| (*p).to_owned()).collect()
            }),
        }),
        methods: g.maybe(40, |g| {
            g.pick(&[vec!["GET"], vec!["GET", "HEAD"], vec!["POST", "GET"]])
                .into_iter()
                .map(str::to_owned)
                .collect()
        }),
        timeout: g.maybe(40, |g| {
            duration::format(Duration::from_millis(g.pick(&[100, 2_000, 5_000])))
        }),
        max_body: g.maybe(40, |g| {
            g.pick(&["1MiB", "512KiB", "1000", "2MiB"]).to_owned()
        }),
    }
}

fn redirect(g: &mut Gen, regex_path: bool) -> RedirectSpec {
    let (path, prefix) = match g.below(3) {
        0 => (Some(g.path()), None),
        1 if !regex_path => (None, Some(g.path())),
        _ => (None, None),
    };
    RedirectSpec {
        prefix,
        path,
        scheme: g.maybe(40, |g| g.pick(&["http", "https"]).to_owned()),
        host: g.maybe(40, |g| g.host(0)),
        port: g.maybe(30, |g| g.range(1, 65535) as u16),
        code: g.maybe(60, |g| g.pick(&[301, 302, 303, 307, 308])),
    }
}

/// The same configuration with its objects in name/id order (what `get` lists).
pub fn sorted(mut spec: ConfigSpec) -> ConfigSpec {
    spec.services.sort_by(|a, b| a.name.cmp(&b.name));
    spec.routes.sort_by(|a, b| a.id.cmp(&b.id));
    spec
}
