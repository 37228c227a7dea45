//! Logs of `admitd` written to a pipe (a file, a collector): no terminal
//! colour codes in text, one JSON object per line with `--log-format json`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::admitd_path;

/// Runs `admitd` with `args` until it logged its start, then stops it;
/// returns what it wrote to stderr.
fn stderr_of(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(admitd_path())
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--shards", "2", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn admitd");
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            let _ = tx.send(String::from_utf8_lossy(&all).into_owned());
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut text = String::new();
    while !text.contains("admit node serving") {
        assert!(
            std::time::Instant::now() < deadline,
            "no start line: {text}"
        );
        if let Ok(t) = rx.recv_timeout(Duration::from_secs(1)) {
            text = t;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[test]
fn logs_to_a_pipe_are_plain_text_or_json_lines() {
    let text = stderr_of(&[]);
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a piped log: {text:?}"
    );
    assert!(text.contains("INFO"), "{text}");

    let json = stderr_of(&["--log-format", "json"]);
    assert!(!json.contains('\u{1b}'));
    let lines: Vec<&str> = json.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{l}"
        );
    }
}
