//! admitctl run as a binary against a real node on loopback: `--json`
//! output parsed, exit codes checked, the demo replayed on the test clock.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::process::Output;

use serde_json::Value;
use support::*;

const N: &str = "100200300";

/// Runs admitctl against `addr` with `args`; (exit code, stdout, stderr).
async fn ctl(addr: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_admitctl"));
    cmd.arg("--server").arg(addr).args(args);
    cmd.env_remove("ADMIT_SERVER").env_remove("ADMIT_TOKEN");
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().await.expect("run admitctl");
    (
        status.code().expect("exited"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

async fn ctl_json(addr: &str, args: &[&str], code: i32) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let (c, out, err) = ctl(addr, &a).await;
    assert_eq!(c, code, "admitctl {args:?}: {out}{err}");
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("admitctl {args:?}: not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_print_json_and_exit_with_their_codes() {
    bounded(120, async {
        let (srv, _) = InProcess::start(at(1, 9)).await;
        let a = srv.addr.to_string();
        let a = a.as_str();

        let s = ctl_json(
            a,
            &["register", N, "--tier", "TIER_250", "--quality", "high"],
            0,
        )
        .await;
        assert_eq!(s["usage"]["tier"]["limit"], 250);

        // an allowed template send: exit 0, counted
        let d = ctl_json(a, &["admit", N, &cust(1), "--template", "t-1"], 0).await;
        assert_eq!(d["allowed"], true);
        assert_eq!(d["reason"], "new_conversation");
        assert_eq!(d["usage"]["used"], 1);
        // a free-form send outside any window is denied: exit 1
        let d = ctl_json(a, &["admit", N, &cust(2)], 1).await;
        assert_eq!(d["allowed"], false);
        assert_eq!(d["reason"], "outside_service_window");
        // an inbound message opens the window; the free-form send is allowed
        let i = ctl_json(a, &["inbound", N, &cust(2), "--text", "hello"], 0).await;
        assert_eq!(i["window_end_unix_ms"], at(2, 9));
        let d = ctl_json(a, &["admit", N, &cust(2)], 0).await;
        assert_eq!(d["reason"], "service_window");

        // an outcome that fails before delivery releases the conversation
        let first = ctl_json(a, &["admit", N, &cust(3), "--template", "t-1"], 0).await;
        let id = first["admission_id"].as_str().unwrap().to_owned();
        let o = ctl_json(
            a,
            &[
                "outcome",
                N,
                &cust(3),
                "failed",
                "--code",
                "131026",
                "--admission",
                &id,
            ],
            0,
        )
        .await;
        assert!(
            o["effects"]
                .as_array()
                .unwrap()
                .contains(&"released".into()),
            "{o}"
        );

        // a tier event by hand
        let e = ctl_json(a, &["event", "tier", N, "TIER_1K"], 0).await;
        assert_eq!(e["applied"], true);
        let s = ctl_json(a, &["status", N], 0).await;
        assert_eq!(s["usage"]["tier"]["limit"], 1000);
        assert_eq!(s["usage"]["used"], 1);
        assert_eq!(s["quality"], "high");

        // the readable table names the fields
        let (c, out, _) = ctl(a, &["status", N]).await;
        assert_eq!(c, 0);
        for field in [
            "tier",
            "headroom",
            "account status",
            "uniques 7 d",
            "opted out",
        ] {
            assert!(out.contains(field), "{field} missing: {out}");
        }

        // numbers, filtered
        let l = ctl_json(a, &["numbers", "--status", "healthy"], 0).await;
        assert_eq!(l.as_array().unwrap().len(), 1);
        let l = ctl_json(a, &["numbers", "--status", "restricted"], 0).await;
        assert_eq!(l.as_array().unwrap().len(), 0);

        // refused by the server: 4; usage: 2
        let (c, _, err) = ctl(a, &["admit", N, "12", "--template", "t-1"]).await;
        assert_eq!(c, 4, "{err}");
        assert!(err.contains("customer_id"), "names the field: {err}");
        let (c, _, _) = ctl(a, &["status"]).await;
        assert_eq!(c, 2);
        let (c, _, _) = ctl(a, &["admit", N]).await;
        assert_eq!(c, 2);
        srv.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_goes_out_to_a_file_and_back() {
    bounded(120, async {
        let (srv, _) = InProcess::start(at(1, 9)).await;
        let a = srv.addr.to_string();
        let (c, toml_text, err) = ctl(&a, &["policy", "get", "seeds"]).await;
        assert_eq!(c, 0, "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("custom.toml");
        std::fs::write(
            &file,
            toml_text.replace("name = \"seeds\"", "name = \"custom\""),
        )
        .unwrap();
        let p = ctl_json(&a, &["policy", "set", file.to_str().unwrap()], 0).await;
        assert_eq!(p["name"], "custom");
        let seeds = ctl_json(&a, &["policy", "get", "seeds"], 0).await;
        let custom = ctl_json(&a, &["policy", "get", "custom"], 0).await;
        assert_eq!(seeds["ladder"], custom["ladder"]);
        assert_eq!(seeds["upgrade_rules"], custom["upgrade_rules"]);
        // a bad file: usage, nothing sent
        std::fs::write(&file, "name = \"custom\"\nscope = \"galaxy\"\n").unwrap();
        let (c, _, err) = ctl(&a, &["policy", "set", file.to_str().unwrap()]).await;
        assert_eq!(c, 2);
        assert!(err.contains("scope"), "{err}");
        srv.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_exit_3_with_a_clear_message() {
    bounded(120, async {
        // a port nothing listens on any more
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let (c, _, err) = ctl(&addr, &["status", N]).await;
        assert_eq!(c, 3, "{err}");
        assert!(err.contains("cannot reach"), "{err}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_replays_the_seeds_upgrade_examples() {
    bounded(120, async {
        let (srv, _) = InProcess::start(at(1, 9)).await;
        let a = srv.addr.to_string();
        let steps = ctl_json(&a, &["demo", "--pause-ms", "0"], 0).await;
        let steps = steps.as_array().unwrap();
        let step = |ex: u64, at: &str| {
            steps
                .iter()
                .find(|s| s["example"] == ex && s["at"] == at)
                .unwrap_or_else(|| panic!("no step {ex} {at}: {steps:?}"))
                .clone()
        };
        // example 1: the 500th at 15:00 on day 1, 10K from 15:00 on day 2
        assert_eq!(step(1, "day 1 15:00")["used"], 500);
        assert!(step(1, "day 1 15:00")["upgrade_at"].is_string());
        assert_eq!(step(1, "day 2 09:00")["used"], 1, "day 1's 09:00 aged out");
        assert_eq!(step(1, "day 2 14:59")["limit"], 1000);
        assert_eq!(step(1, "day 2 15:00")["limit"], 10000);
        // example 2: the 500th at 19:00 on day 3, 10K from 19:00 on day 4
        assert!(step(2, "day 3 18:00")["upgrade_at"].is_null());
        assert_eq!(step(2, "day 4 18:59")["limit"], 1000);
        let last = step(2, "day 4 19:00");
        assert_eq!(last["limit"], 10000);
        assert_eq!(last["sent"], 1);
        srv.stop().await;

        // a server without the test clock: refused, exit 4
        let (srv, _) = InProcess::start_with(at(1, 9), |c| c.test_clock = false).await;
        let (c, _, err) = ctl(&srv.addr.to_string(), &["demo", "--pause-ms", "0"]).await;
        assert_eq!(c, 4, "{err}");
        assert!(err.contains("--test-clock"), "{err}");
        srv.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_tls_file_is_a_usage_error_naming_it() {
    bounded(60, async {
        let (c, _, err) = ctl("127.0.0.1:1", &["--ca", "/nonexistent/ca.pem", "nodes"]).await;
        assert_eq!(c, 2, "{err}");
        assert!(err.contains("CA file /nonexistent/ca.pem"), "{err}");
    })
    .await
}

/// A reader that stops reading (`admitctl shards | head -1`) ends admitctl
/// quietly with exit 0, not with a panic about a broken pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_quietly() {
    bounded(60, async {
        let (srv, _) = InProcess::start(at(1, 9)).await;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_admitctl"));
        cmd.arg("--server").arg(srv.addr.to_string()).arg("shards");
        cmd.env_remove("ADMIT_SERVER").env_remove("ADMIT_TOKEN");
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("run admitctl");
        // closed before admitctl writes its first line
        drop(child.stdout.take());
        let out = child.wait_with_output().await.expect("admitctl ends");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(out.status.code(), Some(0), "{err}");
    })
    .await;
}
