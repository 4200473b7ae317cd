//! Round trip of the route file through the model, for generated valid files
//! (`specgen`): the file's text → [`Sources`] → validated [`Config`] → spec with defaults
//! written out (what `routemaster get -o yaml` prints) equals the generated spec with its
//! defaults written out; and that output, applied again, is the same configuration.
//!
//! The control plane's in-process chain (protobuf, stored JSON) and the real-etcd one
//! use the same generator. Cases: proptest's `PROPTEST_CASES`, else 256.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod specgen;

use proptest::prelude::*;
use routemaster_common::Config;
use routemaster_common::spec::{ConfigSpec, Sources};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn through_the_model(yaml: &str) -> ConfigSpec {
    let sources = Sources::parse("gen.yaml", yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let config = sources
        .into_config()
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    ConfigSpec::from(&config).with_defaults()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn generated_files_round_trip_with_defaults_written_out(seed in any::<u64>()) {
        let spec = specgen::config_with_tls(seed);
        let yaml = spec.to_yaml();
        let shown = through_the_model(&yaml);
        prop_assert_eq!(&shown, &spec.clone().with_defaults(), "seed {}\n{}", seed, yaml);
        // What `get -o yaml` prints applies back as the same configuration.
        let again = through_the_model(&shown.to_yaml());
        prop_assert_eq!(&again, &shown, "seed {}", seed);
        let a = Config::try_from(spec).unwrap();
        let b = Config::try_from(ConfigSpec::from_yaml(&shown.to_yaml()).unwrap()).unwrap();
        prop_assert_eq!(ConfigSpec::from(&a), ConfigSpec::from(&b));
    }
}

#[test]
fn the_generator_covers_every_field() {
    // Over a few hundred seeds, every optional field is both present and absent
    // somewhere: the property above then exercises all of them.
    let mut seen = std::collections::BTreeMap::<&str, (bool, bool)>::new();
    let mut note = |name: &'static str, present: bool| {
        let e = seen.entry(name).or_default();
        if present {
            e.0 = true;
        } else {
            e.1 = true;
        }
    };
    for seed in 0..500 {
        let spec = specgen::config_with_tls(seed);
        for s in &spec.services {
            note("load_balancing", s.load_balancing.is_some());
            note("protocol", s.protocol.is_some());
            note("tls", s.tls.is_some());
            if let Some(t) = &s.tls {
                note("tls.server_name", t.server_name.is_some());
                note("tls.ca_pem", t.ca_pem.is_some());
            }
            note("health_check", s.health_check.is_some());
            if let Some(h) = &s.health_check {
                note("health_check.path", h.path.is_some());
                note("health_check.interval", h.interval.is_some());
                note("health_check.timeout", h.timeout.is_some());
                note("health_check.healthy", h.healthy.is_some());
                note("health_check.unhealthy", h.unhealthy.is_some());
                note("health_check.expect", h.expect.is_some());
            }
            note("outlier", s.outlier.is_some());
            if let Some(o) = &s.outlier {
                note(
                    "outlier.consecutive_failures",
                    o.consecutive_failures.is_some(),
                );
                note("outlier.base_ejection", o.base_ejection.is_some());
                note(
                    "outlier.max_ejected_percent",
                    o.max_ejected_percent.is_some(),
                );
            }
            note("limits", s.limits.is_some());
            note("select", s.select.is_some());
            note("locality", s.locality.is_some());
            if let Some(l) = &s.locality {
                note("locality.fallback", l.fallback.is_some());
            }
            if let Some(l) = &s.limits {
                note("limits.max_connections", l.max_connections.is_some());
                note("limits.max_pending", l.max_pending.is_some());
            }
            for i in &s.instances {
                note("weight", i.weight.is_some());
                note("labels", !i.labels.is_empty());
                note("address ${node.NAME}", i.address.contains("${node."));
                note("discovery", i.discovery.is_some());
                if i.discovery.is_some() {
                    note("dns_refresh", i.dns_refresh.is_some());
                }
            }
        }
        for r in &spec.routes {
            note("hosts", r.hosts.is_some());
            note("path", r.path.is_some());
            note("methods", r.methods.is_some());
            note("headers", r.headers.is_some());
            note("query", r.query.is_some());
            note("priority", r.priority.is_some());
            note("group", r.group.is_some());
            note("forward", r.forward.is_some());
            note("filters", r.filters.is_some());
            if let Some(f) = &r.filters {
                for h in [&f.request_headers, &f.response_headers]
                    .into_iter()
                    .flatten()
                {
                    note("filters.set", h.set.is_some());
                    note("filters.add", h.add.is_some());
                    note("filters.remove", h.remove.is_some());
                }
            }
            note("redirect", r.redirect.is_some());
            note("mode", r.mode.is_some());
            note("shadow", r.shadow.is_some());
            if let Some(f) = &r.forward {
                note("service", f.service.is_some());
                note("backends", f.backends.is_some());
                note("rewrite_prefix", f.rewrite_prefix.is_some());
                note("rewrite_path", f.rewrite_path.is_some());
                note("host_rewrite", f.host_rewrite.is_some());
                note("retry", f.retry.is_some());
                note("mirror", f.mirror.is_some());
                if let Some(m) = &f.mirror {
                    note("mirror.percent", m.percent.is_some());
                    note("mirror.compare", m.compare.is_some());
                    note("mirror.methods", m.methods.is_some());
                    note("mirror.timeout", m.timeout.is_some());
                    note("mirror.max_body", m.max_body.is_some());
                    if let Some(c) = &m.compare {
                        note("compare.baseline", c.baseline.is_some());
                        note("compare.status", c.status.is_some());
                        note("compare.headers", c.headers.is_some());
                        note("compare.body", c.body.is_some());
                        note("compare.ignore", c.ignore.is_some());
                    }
                }
                if let Some(r) = &f.retry {
                    note("retry.attempts", r.attempts.is_some());
                    note("retry.on", r.on.is_some());
                    note("retry.per_try_timeout", r.per_try_timeout.is_some());
                    note("retry.backoff", r.backoff.is_some());
                    note("retry.non_idempotent", r.non_idempotent.is_some());
                }
                note("timeout", f.timeout.is_some());
            }
            if let Some(rd) = &r.redirect {
                note("redirect.prefix", rd.prefix.is_some());
                note("redirect.path", rd.path.is_some());
                note("scheme", rd.scheme.is_some());
                note("redirect.host", rd.host.is_some());
                note("port", rd.port.is_some());
                note("code", rd.code.is_some());
            }
        }
        note("tls", spec.tls.is_some());
        for c in spec.tls.iter().flat_map(|t| &t.certificates) {
            note("tls.cert_pem", c.cert_pem.is_some());
            note("tls.cert_file", c.cert_file.is_some());
            note("tls.key_pem", c.key_pem.is_some());
            note("tls.key_file", c.key_file.is_some());
            note("tls.default", c.default.is_some());
        }
    }
    for (field, &(present, absent)) in &seen {
        assert!(
            present && absent,
            "{field}: present {present}, absent {absent}"
        );
    }
    assert_eq!(seen.len(), 76, "{seen:?}");
}
