//! Peers found by DNS in Docker (deploy/docker-compose.discovery.yml on top of the compose
//! cluster): the nodes have no [[peers]], only [discovery] resolving the SRV records a dnsmasq
//! container serves. A fourth node started while the three run is found by them, takes a
//! replicated upload, and shows in the cluster view, with no configuration edited.
//!
//! Ignored by a plain `cargo test` (it needs Docker); `.ci/run` runs it with the other cluster
//! tests: `cargo test -p ferry-cluster-tests -- --ignored --test-threads=1`.

use std::time::Duration;

use ferry_cluster_tests::{Cluster, Layout, Ran, hex_hash, poll, write_test_file};
use serde_json::Value;

const MIB: u64 = 1024 * 1024;
/// The nodes re-resolve every 2 s (deploy/node-discovery.toml); this leaves room for a slow
/// machine.
const FOUND_WITHIN: Duration = Duration::from_secs(60);
const NODE_START: Duration = Duration::from_secs(120);

/// The node names of a `vol list --cluster` answer, in its order.
fn view_names(ran: &Ran) -> Result<Vec<String>, String> {
    if !ran.success() {
        return Err(ran.describe());
    }
    Ok(ran
        .json()
        .as_array()
        .ok_or("not an array")?
        .iter()
        .map(|n| n["node"].as_str().unwrap_or_default().to_owned())
        .collect())
}

/// Waits until `view()` lists exactly `expected`, every peer reachable.
fn wait_for_view(what: &str, expected: &[&str], view: impl Fn() -> Ran) -> Value {
    poll(what, FOUND_WITHIN, || {
        let ran = view();
        let names = view_names(&ran)?;
        if names != expected {
            return Err(format!("the view is {names:?}"));
        }
        let json = ran.json();
        if let Some(down) = json
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["reachable"] != true)
        {
            return Err(format!("unreachable: {down}"));
        }
        Ok(json)
    })
}

#[test]
#[ignore = "needs Docker: cargo test -p ferry-cluster-tests -- --ignored --test-threads=1"]
fn a_fourth_node_started_later_is_found_by_dns_and_takes_a_replica() {
    let cluster = Cluster::start_with(Layout::Discovery);
    // The three find each other, each leaving itself out.
    wait_for_view(
        "node1 to find node2 and node3 by DNS",
        &["node1", "node2", "node3"],
        || cluster.ferry(&["vol", "list", "--cluster"]),
    );
    wait_for_view(
        "node3 to find node1 and node2 by DNS",
        &["node3", "node1", "node2"],
        || cluster.ferry_in("node3", &["vol", "list", "--cluster"]),
    );

    // node4 joins: its SRV record was there all along; its address exists from now on.
    cluster.compose(
        &[
            "--profile",
            "later",
            "up",
            "--detach",
            "--no-build",
            "node4",
        ],
        NODE_START,
    );
    cluster.wait_healthy(&["node4"], NODE_START);
    wait_for_view(
        "node1 to find node4",
        &["node1", "node2", "node3", "node4"],
        || cluster.ferry(&["vol", "list", "--cluster"]),
    );
    wait_for_view(
        "node4 to find the other three",
        &["node4", "node1", "node2", "node3"],
        || cluster.ferry_in("node4", &["vol", "list", "--cluster"]),
    );

    // A replicated upload on all four: node4 takes its copy.
    let file = cluster.scratch().join("four.bin");
    let hash = write_test_file(&file, 8 * MIB, "four", &[(MIB, 3 * MIB)]);
    let up = cluster
        .ferry(&[
            "vol",
            "upload",
            file.to_str().unwrap(),
            "four",
            "--replicas",
            "4",
        ])
        .expect_success()
        .json();
    let replicas: Vec<&str> = up["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| {
            assert_eq!(r["volume"]["checksum"], hex_hash(&hash), "{up}");
            r["peer"].as_str().unwrap()
        })
        .collect();
    assert_eq!(replicas, ["node2", "node3", "node4"]);
    let on_node4 = cluster
        .volume_on("node4", "four")
        .expect("node4 has the replica");
    assert_eq!(on_node4["checksum"], hex_hash(&hash));

    // The cluster view shows node4 holding it, and a copy to node4 by its name works.
    let view = wait_for_view(
        "the cluster view with node4",
        &["node1", "node2", "node3", "node4"],
        || cluster.ferry(&["vol", "list", "--cluster"]),
    );
    let node4 = &view.as_array().unwrap()[3];
    assert_eq!(node4["volumes"][0]["name"], "four", "{node4}");
    assert!(
        node4["address"].as_str().unwrap().ends_with(":7300"),
        "{node4}"
    );
    cluster
        .ferry(&["vol", "create", "small", "1024"])
        .expect_success();
    cluster
        .ferry(&["vol", "copy", "small", "--to", "node4"])
        .expect_success();
    assert!(cluster.volume_on("node4", "small").is_some());
}
