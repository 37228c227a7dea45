//! The container image, checked without building it (base images cannot be
//! pulled here): every path `deploy/Containerfile` copies exists in the
//! repository or the build output, and `admitd` starts through the image's
//! start script the way the StatefulSet runs it: as uid 65532 with no
//! capabilities, on a read-only root file system with only the data volume
//! writable, and answers the gRPC health check the probes use.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::support::{admitd_path, bounded};

/// The image's user (distroless "nonroot"); also the StatefulSet's runAsUser.
const UID: u32 = 65532;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `COPY` lines of the Containerfile: (`--from` stage or None, sources, destination).
fn copies(containerfile: &str) -> Vec<(Option<String>, Vec<String>, String)> {
    containerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("COPY "))
        .map(|rest| {
            let mut words: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
            let from = words
                .first()
                .and_then(|w| w.strip_prefix("--from="))
                .map(str::to_owned);
            if from.is_some() {
                words.remove(0);
            }
            let dest = words.pop().expect("COPY has a destination");
            (from, words, dest)
        })
        .collect()
}

#[test]
fn containerfile_copies_only_what_exists() {
    let cf = read("deploy/Containerfile");
    let copies = copies(&cf);
    assert!(copies.len() >= 6, "COPY lines: {copies:?}");
    let mut shipped = Vec::new();
    for (from, sources, dest) in &copies {
        for src in sources {
            match from.as_deref() {
                // the build stage's WORKDIR is /src: a release binary of this workspace
                Some("build") => {
                    let bin = src
                        .strip_prefix("/src/target/release/")
                        .unwrap_or_else(|| panic!("unexpected build output {src}"));
                    let manifest = read(&format!("crates/{bin}/Cargo.toml"));
                    assert!(
                        manifest.contains(&format!("name = \"{bin}\"")),
                        "{bin} is not a workspace crate"
                    );
                    assert!(
                        repo().join(format!("crates/{bin}/src/main.rs")).exists(),
                        "{bin} has no main.rs: not a binary"
                    );
                    shipped.push(format!("{dest}{bin}"));
                }
                Some(other) => panic!("COPY from an unknown stage {other}"),
                None => {
                    assert!(
                        repo().join(src).exists(),
                        "Containerfile copies {src}, which is not in the repository"
                    );
                    if dest.starts_with('/') {
                        shipped.push(dest.clone());
                    }
                }
            }
        }
    }
    // what the image runs is what it holds
    for needed in [
        "/usr/local/bin/admitd",
        "/usr/local/bin/admitctl",
        "/usr/local/bin/admit-start",
    ] {
        assert!(
            shipped.iter().any(|s| s == needed),
            "{needed} not shipped: {shipped:?}"
        );
    }
    assert!(cf.contains("ENTRYPOINT [\"/usr/local/bin/admitd\"]"));
    assert!(
        cf.contains("USER 65532:65532"),
        "the image runs as non-root"
    );
    let sts = read("deploy/kubernetes/base/statefulset.yaml");
    assert!(
        sts.contains("command: [\"/busybox/sh\", \"/usr/local/bin/admit-start\"]"),
        "the StatefulSet starts the shipped start script"
    );
    assert!(sts.contains(&format!("runAsUser: {UID}")));
    // the admitd and admitctl the image copies are what `cargo build` makes
    let admitd = admitd_path();
    let dir = admitd.parent().unwrap();
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-q", "-p", "admitctl", "--target-dir"])
        .arg(dir.parent().unwrap())
        .status()
        .expect("cargo build -p admitctl");
    assert!(st.success());
    assert!(
        dir.join("admitctl").exists(),
        "admitctl built next to admitd"
    );
}

/// Runs deploy/admit-start.sh in a new mount namespace where every file
/// system is read-only but a tmpfs data volume, as uid/gid 65532 with no
/// capabilities and no new privileges. The `sh` given as the command
/// replaces itself with admitd, so the child's pid is admitd's.
fn start_locked_down(volume: &Path, env: &[(&str, String)]) -> std::process::Child {
    let bin_dir = admitd_path().parent().unwrap().to_path_buf();
    let script = repo().join("deploy/admit-start.sh");
    let probe = volume.parent().unwrap().join("root-fs-probe");
    let inner = format!(
        r#"set -eu
mount --make-rprivate /
for m in $(awk '{{print $2}}' /proc/self/mounts | grep -Ev '^/(proc|sys|dev)(/|$)'); do
    mount -o remount,bind,ro "$m" 2>/dev/null || true
done
mount -t tmpfs -o size=256m,mode=0700,uid={UID},gid={UID} data '{vol}'
drop() {{ setpriv --reuid={UID} --regid={UID} --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all "$@"; }}
if drop touch '{probe}' 2>/dev/null; then echo 'root file system is writable' >&2; exit 97; fi
drop touch '{vol}/writable' || {{ echo 'data volume not writable' >&2; exit 98; }}
rm -f '{vol}/writable'
exec setpriv --reuid={UID} --regid={UID} --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all sh '{script}'"#,
        vol = volume.display(),
        probe = probe.display(),
        script = script.display(),
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "sh", "-c", &inner])
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin_dir.display()),
        )
        .env("ADMIT_VOLUME", volume)
        .env("ADMIT_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn unshare (util-linux)")
}

/// Waits for "admitd listening on ADDR" on the child's stdout.
fn listening(child: &mut std::process::Child) -> std::net::SocketAddr {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix("admitd listening on ") {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(a) => a.parse().expect("an address"),
        Err(_) => {
            let st = child.try_wait().ok().flatten();
            panic!("admitd did not start (exit: {st:?}); see its stderr above")
        }
    }
}

/// Uid and gid lines of /proc/PID/status: (real, effective, saved, fs) each.
fn ids(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    (field("Uid:"), field("Gid:"))
}

async fn health(addr: std::net::SocketAddr) -> ServingStatus {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to admitd");
    let r = HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("grpc.health.v1.Health/Check");
    r.into_inner().status()
}

fn assert_locked_down(pid: u32) {
    let want = format!("{UID} {UID} {UID} {UID}");
    assert_eq!(ids(pid), (want.clone(), want), "admitd runs as {UID}");
    let cap_eff = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_owned()))
        .unwrap();
    assert_eq!(cap_eff, "0000000000000000", "no capabilities");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "admitd", "the start script exec'd admitd");
}

/// A mount point for the data volume that uid 65532 can reach.
fn volume_dir() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let volume = tmp.path().join("data");
    std::fs::create_dir(&volume).unwrap();
    (tmp, volume)
}

/// Starts a pod's admitd (`start_locked_down`), checks who it runs as, and
/// that the health check the probes make answers SERVING.
fn serves_locked_down(volume: &Path, env: &[(&str, String)]) {
    let mut child = start_locked_down(volume, env);
    let addr = listening(&mut child);
    assert_locked_down(child.id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let st = rt.block_on(bounded(60, health(addr)));
    assert_eq!(st, ServingStatus::Serving);
    let _ = child.kill();
    let _ = child.wait();
}

/// Root is needed to make the namespace (as in CI, which runs as root).
fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|v| v.split_whitespace().next().unwrap().to_owned())
        })
        .unwrap();
    assert_eq!(
        uid, "0",
        "this test mounts a read-only root in a mount namespace: run it as root (CI does)"
    );
}

/// The dev overlay's pod: one node, its config file, the start script.
#[test]
fn image_runs_admitd_as_non_root_on_a_read_only_root() {
    require_root();
    let (_tmp, volume) = volume_dir();
    serves_locked_down(
        &volume,
        &[
            ("POD_NAME", "admit-0".into()),
            ("ADMIT_CLUSTER_STATE", "single".into()),
            (
                "ADMIT_CONFIG",
                repo()
                    .join("deploy/kubernetes/overlays/dev/admitd.toml")
                    .display()
                    .to_string(),
            ),
            ("ADMIT_METRICS_LISTEN", "127.0.0.1:0".into()),
        ],
    );
}

/// The production overlay's first pod at cluster creation: it bootstraps
/// from the production config's peers (their DNS names do not resolve
/// here; connections to peers are made lazily, so the node still serves).
#[test]
fn production_pod_bootstraps_as_node_1_non_root_on_a_read_only_root() {
    require_root();
    let (_tmp, volume) = volume_dir();
    let start_env = read("deploy/kubernetes/base/admit-start.env");
    let peer_service = start_env
        .lines()
        .find_map(|l| l.strip_prefix("ADMIT_PEER_SERVICE="))
        .unwrap()
        .to_owned();
    serves_locked_down(
        &volume,
        &[
            ("POD_NAME", "admit-0".into()),
            ("ADMIT_CLUSTER_STATE", "new".into()),
            ("ADMIT_INITIAL_NODES", "3".into()),
            ("ADMIT_PEER_SERVICE", peer_service),
            ("ADMIT_JOIN_VIA", "admit:50051".into()),
            (
                "ADMIT_CONFIG",
                repo()
                    .join("deploy/kubernetes/overlays/production/admitd.toml")
                    .display()
                    .to_string(),
            ),
            ("ADMIT_METRICS_LISTEN", "127.0.0.1:0".into()),
            // the config's fixed peer port (50052) lies in the kernel's
            // ephemeral range: another test's connection can hold it
            ("ADMIT_PEER_LISTEN", "127.0.0.1:0".into()),
            // fewer groups than the real 16, for this 2-core test machine
            ("ADMIT_SHARDS", "8".into()),
        ],
    );
    // the tmpfs lived in the namespace only; the id was recorded there
}
