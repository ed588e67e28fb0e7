//! The Kubernetes manifests of deploy/kubernetes/ against the code they deploy, without a
//! cluster: `kubectl kustomize` renders the example overlay, and these tests check what binds
//! the rendering to ferryd: the SRV name the nodes resolve is the one the headless Service
//! publishes, the probes' paths and port answer on a real ferryd started with the pods'
//! configuration, environment and Secrets (as make-secrets.sh makes them), the grace period
//! outlasts the drain, the memory limit covers the worst case the limits allow, the image's
//! user can write the data directory in a volume prepared as the kubelet does (fsGroup), the
//! certificate lets one pod verify another, and the PrometheusRule holds deploy/alerts.yml's
//! rules. deploy/kubernetes/check.sh validates the schemas; this is what a schema cannot see.
//!
//! Needs kubectl (and openssl, for make-secrets.sh): under CI a missing one fails, elsewhere
//! the tests say loudly that they did not run.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{first_line_with, http_get};
use ferry_actors::ClientConfig;
use ferry_actors::tls::ClientTls;
use ferry_node::config::NodeConfig;
use ferry_node::health::{LIVEZ, READYZ};
use serde::Deserialize;
use serde_json::Value;

const MIB: u64 = 1 << 20;
/// The image's user and group (deploy/build-images.sh, deploy/Dockerfile).
const IMAGE_UID: u32 = 10001;
const READY_WITHIN: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Whether `tool` runs; under CI its absence fails the test.
fn have(tool: &str, test: &str) -> bool {
    let args: &[&str] = match tool {
        "kubectl" => &["version", "--client"],
        _ => &["version"],
    };
    if Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{tool} is missing under CI"
    );
    eprintln!(
        "\n########################################################################\n\
         ##  SKIPPING {test}: {tool} is not installed.\n\
         ########################################################################\n"
    );
    false
}

/// The example overlay, rendered: every object.
fn rendered() -> Vec<Value> {
    let output = Command::new("kubectl")
        .args(["kustomize"])
        .arg(repo().join("deploy/kubernetes/example"))
        .output()
        .expect("running kubectl kustomize");
    assert!(
        output.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("kustomize printed YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendering"))
}

/// The rendering's objects the tests look at.
struct Manifests {
    objects: Vec<Value>,
    namespace: String,
    /// The StatefulSet's pod spec and its one container.
    pod: Value,
    container: Value,
    /// ferryd.toml as the ConfigMap carries it.
    config_text: String,
    config: NodeConfig,
}

impl Manifests {
    fn load() -> Self {
        let objects = rendered();
        let set = object(&objects, "StatefulSet", "ferry").clone();
        let namespace = set["metadata"]["namespace"].as_str().unwrap().to_owned();
        let pod = set["spec"]["template"]["spec"].clone();
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        let container = containers[0].clone();
        let config_map = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "config")
            .unwrap()["configMap"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        let config_text = object(&objects, "ConfigMap", &config_map)["data"]["ferryd.toml"]
            .as_str()
            .unwrap()
            .to_owned();
        let config: NodeConfig = toml::from_str(&config_text).expect("ferryd.toml parses");
        Self {
            objects,
            namespace,
            pod,
            container,
            config_text,
            config,
        }
    }

    fn env(&self, name: &str) -> Option<String> {
        self.container["env"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].as_str().unwrap().to_owned())
    }

    /// The container port named `name`.
    fn port(&self, name: &str) -> u64 {
        self.container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    }

    /// The mount path of volume `name`.
    fn mount(&self, name: &str) -> String {
        self.container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("volume {name} is not mounted"))["mountPath"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// What ferryd runs with: the file, then the container's environment (which wins).
    fn effective_data_dir(&self) -> String {
        self.env("FERRYD_DATA_DIR")
            .unwrap_or_else(|| self.config.data_dir.display().to_string())
    }
}

fn port_of(address: &str) -> u64 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn the_srv_name_is_the_headless_services_and_names_the_tls_port() {
    if !have("kubectl", "the_srv_name_is_the_headless_services") {
        return;
    }
    let m = Manifests::load();
    let set = object(&m.objects, "StatefulSet", "ferry");
    let headless_name = set["spec"]["serviceName"].as_str().unwrap();
    let headless = object(&m.objects, "Service", headless_name);
    assert_eq!(headless["spec"]["clusterIP"], "None");
    // Only ready pods in the records: a draining node is not picked for new operations.
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], false);
    let discovery = &m.config.discovery;
    let srv = discovery.srv.trim_end_matches('.');
    let (service_part, rest) = srv
        .strip_prefix('_')
        .and_then(|s| s.split_once("._tcp."))
        .unwrap_or_else(|| panic!("{srv} is not _<port>._tcp.<service>"));
    // Relative, or the Service in the StatefulSet's own namespace.
    let in_namespace = format!("{headless_name}.{}.svc", m.namespace);
    assert!(
        rest == headless_name || rest.starts_with(&in_namespace),
        "{srv} does not name Service {headless_name}"
    );
    let port = headless["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == service_part)
        .unwrap_or_else(|| panic!("{headless_name} has no port named {service_part}"));
    assert_eq!(port["protocol"], "TCP");
    // The SRV port is the container port the Service targets, where ferryd listens with the
    // scheme discovery uses.
    let target = port["targetPort"].as_str().unwrap();
    let container_port = m.port(target);
    assert_eq!(port["port"].as_u64(), Some(container_port));
    assert_eq!(
        discovery.scheme,
        ferry_node::discovery::DiscoveryScheme::Tls
    );
    assert_eq!(port_of(&m.config.security.tls), container_port);
    // Plain TCP is off, in the file and in the environment that overrides it.
    assert_eq!(m.config.tcp, "");
    assert_eq!(m.env("FERRYD_TCP").as_deref(), Some(""));
    // The node leaves itself out by its host name (a StatefulSet pod's is its stable name).
    assert_eq!(discovery.node_name, "");
    // The certificate and credentials discovery uses come from mounted Secrets.
    let tls_mount = m.mount("tls");
    let credentials_mount = m.mount("credentials");
    assert!(discovery.ca.as_ref().unwrap().starts_with(&tls_mount));
    assert!(
        discovery
            .password_file
            .as_ref()
            .unwrap()
            .starts_with(&credentials_mount)
    );
    // The NetworkPolicy lets the other pods reach that port.
    let policy = object(&m.objects, "NetworkPolicy", "ferry");
    let peers_allowed = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .any(|rule| {
            rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"] == target)
                && rule["from"].as_array().unwrap().iter().any(|f| {
                    f["podSelector"]["matchLabels"] == set["spec"]["template"]["metadata"]["labels"]
                })
        });
    assert!(
        peers_allowed,
        "the NetworkPolicy keeps peers from port {target}"
    );
}

#[test]
fn the_grace_period_outlasts_the_drain_and_memory_covers_the_limits() {
    if !have("kubectl", "the_grace_period_outlasts_the_drain") {
        return;
    }
    let m = Manifests::load();
    let grace = m.pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let drain = m.config.limits.shutdown_drain_secs;
    assert!(grace > drain, "grace period {grace} s <= drain {drain} s");

    // docs/SECURITY.md: per connection, the memory budget, the upload windows (the connection
    // window plus a quarter window per stream) and one frame; times the connections; plus the
    // node's bookkeeping (statefulset.yaml has the same arithmetic).
    let l = &m.config.limits;
    let per_connection = l.max_memory_per_connection as u64
        + l.connection_window
        + l.max_streams_per_connection as u64 * u64::from(l.stream_window) / 4
        + u64::from(l.max_frame);
    let worst = l.max_connections as u64 * per_connection + 64 * MIB;
    let limit = m.container["resources"]["limits"]["memory"]
        .as_str()
        .unwrap();
    let limit = match limit.strip_suffix("Gi") {
        Some(gib) => gib.parse::<u64>().unwrap() * 1024 * MIB,
        None => limit.strip_suffix("Mi").unwrap().parse::<u64>().unwrap() * MIB,
    };
    assert!(
        worst <= limit,
        "the limits allow {} MiB, the container gets {} MiB",
        worst / MIB,
        limit / MIB
    );
    let security = &m.container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(m.pod["securityContext"]["runAsNonRoot"], true);
}

#[test]
fn the_prometheus_rule_holds_the_alert_rules_and_the_scrape_finds_the_metrics_port() {
    if !have("kubectl", "the_prometheus_rule_holds_the_alert_rules") {
        return;
    }
    let m = Manifests::load();
    let rule = object(&m.objects, "PrometheusRule", "ferry");
    let alerts: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo().join("deploy/alerts.yml")).unwrap(),
    )
    .unwrap();
    assert_eq!(rule["spec"]["groups"], alerts["groups"]);

    // The ServiceMonitor selects exactly the headless Service (each pod scraped once), on its
    // metrics port, and gives the targets the job label the rules expect.
    let monitor = object(&m.objects, "ServiceMonitor", "ferry");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    let selected: Vec<&str> = m
        .objects
        .iter()
        .filter(|o| o["kind"] == "Service")
        .filter(|s| {
            selector
                .iter()
                .all(|(k, v)| s["metadata"]["labels"].get(k) == Some(v))
        })
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(selected, ["ferry-headless"]);
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let service = object(&m.objects, "Service", "ferry-headless");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == endpoint["port"] && p["targetPort"] == "metrics")
    );
    assert!(
        endpoint["relabelings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["targetLabel"] == "job" && r["replacement"] == "ferryd")
    );
    assert!(alerts.to_string().contains(r#"job=\"ferryd\""#));
    let annotations =
        &object(&m.objects, "StatefulSet", "ferry")["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["prometheus.io/port"].as_str().unwrap(),
        m.port("metrics").to_string()
    );
}

/// Where a pod's absolute path lives in the test's directory.
fn in_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

#[test]
fn a_pod_as_configured_serves_its_probes_and_another_pod_can_verify_and_join_it() {
    if !have("kubectl", "a_pod_as_configured_serves_its_probes")
        || !have("openssl", "a_pod_as_configured_serves_its_probes")
    {
        return;
    }
    let m = Manifests::load();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pod");
    std::fs::create_dir_all(&root).unwrap();
    // Traversable by the image's user (the test runs ferryd as that user when it can).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();

    // The Secrets, as the documented command makes them, in the files the pod mounts.
    let secrets = dir.path().join("secrets");
    let made = Command::new(repo().join("deploy/kubernetes/make-secrets.sh"))
        .args(["--namespace", &m.namespace, "--out"])
        .arg(&secrets)
        .env("FERRY", env!("CARGO_BIN_EXE_ferry"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "make-secrets.sh failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let install = |from: &str, mount: &str, to: &str| {
        let path = in_root(&root, &m.mount(mount)).join(to);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::copy(secrets.join(from), &path).unwrap();
        // defaultMode 0440 and the group fsGroup give the pod's user read access.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(
            path.parent().unwrap(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    };
    install("users.toml", "credentials", "users.toml");
    install("peer-password", "credentials", "peer-password");
    install("ca.crt", "tls", "ca.crt");
    install("tls.crt", "tls", "tls.crt");
    install("tls.key", "tls", "tls.key");

    // ferryd.toml with the pod's absolute paths moved under `root`, on loopback with
    // OS-chosen ports, and discovery's DNS server a closed loopback port (its rounds fail
    // fast; this test is about one pod).
    let mut config: toml::Table = toml::from_str(&m.config_text).unwrap();
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let resolver = closed.local_addr().unwrap().to_string();
    drop(closed);
    if let Some(security) = config
        .get_mut("security")
        .and_then(toml::Value::as_table_mut)
    {
        security.insert("tls".into(), "127.0.0.1:0".into());
    }
    if let Some(discovery) = config
        .get_mut("discovery")
        .and_then(toml::Value::as_table_mut)
    {
        discovery.insert("resolver".into(), resolver.into());
    }
    let text = toml::to_string(&config)
        .unwrap()
        .replace("\"/etc/ferry/", &format!("\"{}/etc/ferry/", root.display()))
        .replace("\"/data/", &format!("\"{}/data/", root.display()));
    let config_path = in_root(&root, &m.mount("config"));
    std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
    std::fs::write(&config_path, text).unwrap();
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644)).unwrap();

    // The data volume as the kubelet prepares it with fsGroup: the root's, group fsGroup,
    // group-writable and setgid. ferryd creates its data directory inside and makes it its own.
    let data_mount = m.mount("data");
    let data_dir = m.effective_data_dir();
    assert!(
        Path::new(&data_dir).starts_with(&data_mount) && data_dir != data_mount,
        "the data directory {data_dir} must be inside the volume {data_mount} (ferryd chmods it)"
    );
    let pod_security = &m.pod["securityContext"];
    assert_eq!(
        pod_security["runAsUser"].as_u64(),
        Some(u64::from(IMAGE_UID))
    );
    assert_eq!(
        pod_security["runAsGroup"].as_u64(),
        Some(u64::from(IMAGE_UID))
    );
    assert_eq!(pod_security["fsGroup"].as_u64(), Some(u64::from(IMAGE_UID)));
    let build_images = std::fs::read_to_string(repo().join("deploy/build-images.sh")).unwrap();
    assert!(build_images.contains(&format!("'USER {IMAGE_UID}:{IMAGE_UID}'")));
    let volume = in_root(&root, &data_mount);
    std::fs::create_dir_all(&volume).unwrap();
    // SAFETY: geteuid has no preconditions.
    let as_image_user = unsafe { libc::geteuid() } == 0;
    if as_image_user {
        std::os::unix::fs::chown(&volume, Some(0), Some(IMAGE_UID)).unwrap();
        std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o2775)).unwrap();
    } else {
        eprintln!(
            "NOTE: not root: ferryd runs as this test's user, not uid {IMAGE_UID} in an \
             fsGroup volume (CI runs as root and checks that)"
        );
    }

    // The container's command line and environment, paths moved likewise; metrics on an
    // OS-chosen port (the probe port is checked against the file and the env below).
    let binary = dir.path().join("ferryd");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_ferryd"), &binary).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_ferryd"), &binary).unwrap();
    }
    let args: Vec<String> = m.container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            match a.starts_with('/') {
                true => in_root(&root, a).display().to_string(),
                false => a.to_owned(),
            }
        })
        .collect();
    let mut command = Command::new(&binary);
    command.args(&args).env_clear().stdout(Stdio::piped());
    for env in m.container["env"].as_array().unwrap() {
        let (name, value) = (
            env["name"].as_str().unwrap(),
            env["value"].as_str().unwrap(),
        );
        let value = match name {
            "FERRYD_METRICS" => "127.0.0.1:0".to_owned(),
            "FERRYD_DATA_DIR" => in_root(&root, value).display().to_string(),
            "FERRY_URI" => format!(
                "unix://{}",
                in_root(&root, &value["unix://".len()..]).display()
            ),
            _ => value.to_owned(),
        };
        command.env(name, value);
    }
    if as_image_user {
        command.uid(IMAGE_UID).gid(IMAGE_UID);
    }
    let mut child = command.spawn().expect("starting ferryd");
    let ready = first_line_with(child.stdout.take().unwrap(), "ferryd ready:", READY_WITHIN);
    let ready = ready.unwrap_or_else(|| {
        let _ = child.kill();
        let status = child.wait().unwrap();
        panic!("ferryd with the pod's configuration did not start ({status}); see its log above")
    });
    let _guard = KillOnDrop(child);
    let field = |key: &str| {
        ready
            .split_whitespace()
            .find_map(|part| part.strip_prefix(&format!("{key}=")))
            .unwrap()
            .to_owned()
    };
    assert_eq!(field("tcp"), "off");

    // The probes: their paths and port are ferryd's, and they answer.
    let metrics_port = m.port("metrics");
    assert_eq!(port_of(&m.config.metrics), metrics_port);
    assert_eq!(port_of(&m.env("FERRYD_METRICS").unwrap()), metrics_port);
    for (probe, path) in [
        ("startupProbe", LIVEZ),
        ("livenessProbe", LIVEZ),
        ("readinessProbe", READYZ),
    ] {
        let get = &m.container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "metrics", "{probe}");
        let (status, body) = http_get(&field("metrics"), path);
        assert_eq!(status, 200, "{probe} {path}: {body}");
    }
    // The data directory is the image user's now, and private.
    let data = in_root(&root, &data_dir);
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    if as_image_user {
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), IMAGE_UID);
    }

    // Another pod's view: it connects to this one by its SRV target's name, verifies the
    // certificate with the CA of the Secret and authenticates as the peer user.
    let tls_address = field("tls");
    let peer_name = format!("ferry-1.ferry-headless.{}.svc.cluster.local", m.namespace);
    let password = std::fs::read_to_string(secrets.join("peer-password")).unwrap();
    actix_rt::System::new().block_on(async {
        let tls = ClientTls::from_ca_file(&secrets.join("ca.crt")).unwrap();
        let client = ferry_actors::Client::connect_tls(
            &tls_address,
            &peer_name,
            &tls,
            ClientConfig::default(),
        )
        .await
        .expect("the pod's certificate does not verify for its SRV target's name");
        client
            .authenticate("peer", password.trim())
            .await
            .expect("the peer user of the Secret is refused");
        client.ping().await.unwrap();
        // A name the certificate does not carry is refused.
        assert!(
            ferry_actors::Client::connect_tls(
                &tls_address,
                "ferry-1.elsewhere.svc.cluster.local",
                &tls,
                ClientConfig::default()
            )
            .await
            .is_err()
        );
    });
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
