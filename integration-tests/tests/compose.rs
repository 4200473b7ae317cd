//! docker-compose.yml cannot run here (no Docker engine), so this keeps it honest by
//! reading: the services exist, every routemaster command names a real binary and only
//! flags that binary accepts, proxies point at the control planes' gRPC ports, the load
//! balancer targets the proxies, and the Dockerfile ships every binary compose uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use routemaster_integration_tests::process::binary;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    serde_saphyr::from_str(&text).expect("docker-compose.yml parses")
}

fn command(service: &Value) -> Vec<String> {
    service["command"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn flag_value<'a>(cmd: &'a [String], flag: &str) -> Option<&'a str> {
    cmd.iter()
        .position(|a| a == flag)
        .and_then(|i| cmd.get(i + 1))
        .map(String::as_str)
}

#[test]
fn services_and_commands_match_the_binaries() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services map");
    for name in [
        "etcd",
        "control-1",
        "control-2",
        "proxy-1",
        "proxy-2",
        "lb",
        "demo-1",
        "demo-2",
        "seed",
    ] {
        assert!(services.contains_key(name), "service {name} missing");
    }
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut help_cache: BTreeMap<String, String> = BTreeMap::new();
    for (name, service) in services {
        let cmd = command(service);
        let Some(program) = cmd.first() else { continue };
        if !program.starts_with("routemaster") {
            continue;
        }
        assert!(
            dockerfile.contains(&format!("target/release/{program}")),
            "Dockerfile does not ship {program} (used by {name})"
        );
        if program == "routemaster-demo-backend" {
            assert_eq!(cmd.len(), 3, "{name}: demo backend takes NAME ADDR");
            continue;
        }
        // Every flag used must be one the binary (or its subcommand) documents.
        let mut help_args = vec!["--help".to_owned()];
        if program == "routemaster" {
            let sub = cmd
                .iter()
                .skip(1)
                .find(|a| !a.starts_with('-') && !a.starts_with("http"));
            help_args = vec![sub.expect("CLI subcommand").clone(), "--help".to_owned()];
        }
        let key = format!("{program} {}", help_args.join(" "));
        let help = help_cache
            .entry(key)
            .or_insert_with(|| {
                let top = std::process::Command::new(binary(program))
                    .arg("--help")
                    .output()
                    .unwrap();
                let sub = std::process::Command::new(binary(program))
                    .args(&help_args)
                    .output()
                    .unwrap();
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&top.stdout),
                    String::from_utf8_lossy(&sub.stdout)
                )
            })
            .clone();
        for flag in cmd.iter().filter(|a| a.starts_with("--")) {
            assert!(
                help.contains(flag.as_str()),
                "{name}: {program} has no flag {flag}"
            );
        }
    }
}

#[test]
fn wiring_is_consistent() {
    let compose = compose();
    let services = &compose["services"];
    for control in ["control-1", "control-2"] {
        let cmd = command(&services[control]);
        assert_eq!(
            flag_value(&cmd, "--etcd"),
            Some("http://etcd:2379"),
            "{control}"
        );
        assert_eq!(flag_value(&cmd, "--grpc-listen"), Some("0.0.0.0:7000"));
        assert_eq!(flag_value(&cmd, "--http-listen"), Some("0.0.0.0:7001"));
    }
    for proxy in ["proxy-1", "proxy-2"] {
        let cmd = command(&services[proxy]);
        let urls = flag_value(&cmd, "--control-plane").unwrap();
        for url in urls.split(',') {
            assert!(
                url == "http://control-1:7000" || url == "http://control-2:7000",
                "{proxy}: unexpected control plane {url}"
            );
        }
        assert_eq!(flag_value(&cmd, "--node-id"), Some(proxy));
        assert_eq!(flag_value(&cmd, "--listen"), Some("0.0.0.0:8080"));
        assert_eq!(flag_value(&cmd, "--admin-listen"), Some("0.0.0.0:9901"));
    }
    let haproxy = std::fs::read_to_string(root().join("deploy/haproxy.cfg")).unwrap();
    for proxy in ["proxy-1:8080", "proxy-2:8080"] {
        assert!(
            haproxy.contains(proxy),
            "haproxy.cfg does not balance to {proxy}"
        );
    }
    assert!(
        haproxy.contains("check port 9901"),
        "health checks use the admin port"
    );
    let lb_ports = services["lb"]["ports"].as_array().unwrap();
    assert!(lb_ports.iter().any(|p| p.as_str() == Some("8080:8080")));
    // The seed's route file names the demo backends by their compose names and ports.
    let routes = std::fs::read_to_string(root().join("examples/compose-routes.yaml")).unwrap();
    for (svc, port) in [("demo-1", "9001"), ("demo-2", "9002")] {
        let cmd = command(&services[svc]);
        assert!(
            cmd.last().unwrap().ends_with(port),
            "{svc} listens on {port}"
        );
        assert!(
            routes.contains(&format!("{svc}:{port}")),
            "routes name {svc}:{port}"
        );
    }
    let seed = command(&services["seed"]);
    let file = flag_value(&seed, "-f").unwrap();
    assert_eq!(file, "/etc/routemaster/examples/compose-routes.yaml");
    let spec = routemaster_common::spec::ConfigSpec::from_yaml(&routes).unwrap();
    routemaster_common::Config::try_from(spec).expect("compose route file is valid");
}
