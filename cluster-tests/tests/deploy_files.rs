//! The files of deploy/ without Docker: Prometheus's configuration and alert rules pass
//! `promtool check` and the rules' unit tests, and the node configs are what ferryd reads and
//! what the cluster tests assume. These run in a plain `cargo test`.
//!
//! promtool comes with Debian's `prometheus` package (as for ferry/tests/prometheus.rs):
//! without it this test fails and says how to install it. `FERRY_TEST_PROMTOOL` may point at
//! another promtool 2.x.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ferry_cluster_tests::{deploy_dir, run};
use ferry_node::config::NodeConfig;

fn promtool() -> PathBuf {
    let path = std::env::var_os("FERRY_TEST_PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/promtool"));
    assert!(
        path.exists(),
        "{} is missing: install Debian's prometheus package (`sudo apt-get install -y \
         --no-install-recommends prometheus`; CI does this), or set FERRY_TEST_PROMTOOL",
        path.display()
    );
    path
}

fn promtool_succeeds(args: &[&str]) {
    let ran = run(
        Command::new(promtool())
            .args(args)
            .current_dir(deploy_dir()),
        Duration::from_secs(60),
    );
    assert!(
        ran.success(),
        "promtool {args:?} failed: {}",
        ran.describe()
    );
}

#[test]
fn prometheus_config_is_valid() {
    promtool_succeeds(&["check", "config", "prometheus.yml"]);
}

#[test]
fn alert_rules_are_valid_and_pass_their_unit_tests() {
    promtool_succeeds(&["check", "rules", "alerts.yml"]);
    promtool_succeeds(&["test", "rules", "alerts.test.yml"]);
}

#[test]
fn node_configs_parse_and_name_the_other_two_nodes() {
    let nodes = ["node1", "node2", "node3"];
    for node in nodes {
        let path = deploy_dir().join(format!("{node}.toml"));
        let text = std::fs::read_to_string(&path).expect("reading a node config");
        let config: NodeConfig =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // The node calls itself what its peers call it (the cluster view shows it).
        assert_eq!(config.name.as_deref(), Some(node), "{}", path.display());
        let peers: Vec<(String, String)> = config
            .peers
            .iter()
            .map(|p| (p.name.clone(), p.address.clone()))
            .collect();
        let expected: Vec<(String, String)> = nodes
            .iter()
            .filter(|other| **other != node)
            .map(|other| (other.to_string(), format!("tcp://{other}:7300")))
            .collect();
        assert_eq!(peers, expected, "{}", path.display());
        for peer in &config.peers {
            // Nodes authenticate to each other as "peer" with the compose secret.
            assert_eq!(peer.user.as_deref(), Some("peer"), "{}", path.display());
            assert_eq!(
                peer.password_file.as_deref(),
                Some(std::path::Path::new("/run/secrets/peer-password")),
                "{}",
                path.display()
            );
        }
        // Plain TCP on the private network, but every TCP client authenticates.
        assert!(config.security.allow_plain_tcp, "{}", path.display());
        assert_eq!(config.security.anonymous_role, None, "{}", path.display());
        assert_eq!(config.tcp, "0.0.0.0:7300");
        assert_eq!(config.metrics, "0.0.0.0:7301");
        // The cluster tests' keepalive bound assumes a short keepalive.
        assert!(
            config.limits.keepalive_interval_secs * u64::from(config.limits.keepalive_count + 2)
                <= 10
        );
    }
}

/// The discovery layout's node config resolves the SRV name the compose file's dnsmasq serves,
/// at the `dns` service, and every SRV target is a node of that layout with the network alias
/// the target names.
#[test]
fn the_discovery_layout_serves_the_srv_name_its_nodes_resolve() {
    let path = deploy_dir().join("node-discovery.toml");
    let config: NodeConfig =
        toml::from_str(&std::fs::read_to_string(&path).unwrap()).expect("node-discovery.toml");
    let discovery = &config.discovery;
    assert!(config.peers.is_empty(), "the peers come from DNS only");
    assert_eq!(discovery.resolver, "dns:5353");
    assert_eq!(
        discovery.node_name, "",
        "each node is left out by its host name"
    );
    assert_eq!(discovery.user.as_deref(), Some("peer"));
    let compose = std::fs::read_to_string(deploy_dir().join("docker-compose.discovery.yml"))
        .expect("docker-compose.discovery.yml");
    for node in ["node1", "node2", "node3", "node4"] {
        let record = format!("--srv-host={},{node}.ferry.test,7300", discovery.srv);
        assert!(compose.contains(&record), "no {record} in the compose file");
        assert!(
            compose.contains(&format!("aliases: [{node}.ferry.test]")),
            "{node} lacks the network alias its SRV target names"
        );
    }
    assert_eq!(config.tcp, "0.0.0.0:7300");
}
