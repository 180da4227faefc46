//! The administrators' side of IVR flows, through the built binary: `gateway flows check`,
//! `simulate` and `graph` on the shipped flows and on broken copies, and live reload in a running
//! gateway (a valid edit goes live, a broken edit is refused and the old version stays, both
//! visible in `/readyz` and `/metrics`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn shipped_flows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ivr-flows/flows")
}

/// A copy of the shipped flows that a test may edit.
fn copy_flows(into: &Path) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read flows") {
            let entry = entry.expect("entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }
    let dir = into.join("flows");
    copy(&shipped_flows(), &dir);
    dir
}

fn gateway(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(support::gateway_binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("GATEWAY_CONFIG")
        .spawn()
        .expect("spawn gateway");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_shipped_flows() {
    let dir = shipped_flows();
    let (code, out, err) = gateway(&["flows", "check", dir.to_str().expect("utf-8")], "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 7 flows"), "{out}");
    for flow in ["main", "report", "progress", "voicemail", "survey"] {
        assert!(out.contains(flow), "{flow} missing from {out}");
    }
}

#[test]
fn check_names_file_line_and_column_of_a_broken_reference() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = copy_flows(tmp.path());
    let main = dir.join("main.yaml");
    let text = std::fs::read_to_string(&main).expect("read");
    let broken = text.replacen("goto: use_mandarin", "goto: use_mandarn", 1);
    assert_ne!(text, broken, "the fixture edit must apply");
    std::fs::write(&main, broken).expect("write");
    let (code, out, err) = gateway(&["flows", "check", dir.to_str().expect("utf-8")], "");
    assert_eq!(code, 1, "{out}{err}");
    let line = err
        .lines()
        .find(|l| l.contains("use_mandarn"))
        .unwrap_or_else(|| panic!("no diagnostic names the bad step: {err}"));
    let mut parts = line.split(':');
    assert!(
        parts.next().is_some_and(|f| f.ends_with("main.yaml")),
        "{line}"
    );
    assert!(
        parts
            .next()
            .is_some_and(|n| n.trim().parse::<u32>().is_ok()),
        "line number in {line}"
    );
    assert!(
        parts
            .next()
            .is_some_and(|n| n.trim().parse::<u32>().is_ok()),
        "column in {line}"
    );
    assert!(line.contains("use_mandarin"), "a suggestion in {line}");
}

#[test]
fn check_refuses_a_missing_directory() {
    let (code, _, err) = gateway(&["flows", "check", "/nonexistent/flows"], "");
    assert_eq!(code, 1);
    assert!(err.contains("not a directory"), "{err}");
}

#[test]
fn simulate_walks_the_main_menu_from_stdin() {
    let dir = shipped_flows();
    let (code, out, err) = gateway(
        &[
            "flows",
            "simulate",
            "main",
            "--dir",
            dir.to_str().expect("utf-8"),
            "--at",
            "2026-11-23 10:00",
        ],
        "1\n2\n",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("12345"), "greeting: {out}");
    assert!(out.contains("110"), "the emergency notice: {out}");
    assert!(out.contains("查询办理进度请按2"), "main menu: {out}");
    assert!(
        out.contains("订单") || out.contains("工单"),
        "progress asks for an order number: {out}"
    );
    let (code, _, err) = gateway(
        &[
            "flows",
            "simulate",
            "nosuchflow",
            "--dir",
            dir.to_str().expect("utf-8"),
        ],
        "",
    );
    assert_eq!(code, 1);
    assert!(err.contains("main"), "lists the flows: {err}");
}

#[test]
fn graph_prints_mermaid() {
    let dir = shipped_flows();
    let (code, out, err) = gateway(
        &[
            "flows",
            "graph",
            "main",
            "--dir",
            dir.to_str().expect("utf-8"),
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("flowchart"), "{out}");
    assert!(out.contains("main_menu"), "{out}");
}

struct Running {
    child: Child,
    port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The live flow version and refused-edit text from a `/readyz` response.
fn flows_state(response: &str) -> (u64, Option<String>) {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let flows = &v["checks"]["flows"];
    (
        flows["version"].as_u64().unwrap_or(0),
        flows["rejected_edit"].as_str().map(str::to_owned),
    )
}

fn wait_for(port: u16, path: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(body) = http_get(port, path) {
            if pred(&body) {
                return body;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}; last {path}: {last}");
}

#[test]
fn a_running_gateway_applies_valid_edits_and_refuses_broken_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let flows = copy_flows(tmp.path());
    let port = support::free_port();
    let child = Command::new(support::gateway_binary())
        .arg("run")
        .env_remove("GATEWAY_CONFIG")
        .env("GATEWAY__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("GATEWAY__NODE__DATA_DIR", tmp.path().join("data"))
        .env("GATEWAY__IVR__FLOWS_DIR", &flows)
        .env("GATEWAY__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gateway");
    let gw = Running { child, port };
    let ready = wait_for(gw.port, "/readyz", "readiness", |b| flows_state(b).0 == 1);
    assert_eq!(flows_state(&ready).1, None, "{ready}");
    // Loading reads the files; that must not count as an edit and reload again and again.
    std::thread::sleep(Duration::from_millis(1500));
    let still = http_get(gw.port, "/readyz").expect("readyz");
    assert_eq!(flows_state(&still).0, 1, "no edit, no reload: {still}");

    let main = flows.join("main.yaml");
    let text = std::fs::read_to_string(&main).expect("read");
    let edited = text.replacen("欢迎致电12345市民服务热线", "欢迎致电12345政务服务热线", 1);
    assert_ne!(text, edited);
    std::fs::write(&main, &edited).expect("valid edit");
    wait_for(gw.port, "/readyz", "the valid edit to go live", |b| {
        flows_state(b).0 == 2
    });

    std::fs::write(
        &main,
        edited.replacen("goto: use_mandarin", "goto: nowhere_step", 1),
    )
    .expect("broken edit");
    let refused = wait_for(gw.port, "/readyz", "the broken edit to be refused", |b| {
        flows_state(b).1.is_some_and(|e| e.contains("nowhere_step"))
    });
    let (version, rejected) = flows_state(&refused);
    assert_eq!(version, 2, "the old version stays live: {refused}");
    assert!(
        rejected.is_some_and(|e| e.contains("main.yaml:")),
        "diagnostics name the file: {refused}"
    );
    let metrics = http_get(gw.port, "/metrics").expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_flows_reload_failures_total") && !l.ends_with(" 0")),
        "{metrics}"
    );

    std::fs::write(&main, &text).expect("repair");
    let repaired = wait_for(gw.port, "/readyz", "the repair to go live", |b| {
        flows_state(b).0 == 3
    });
    assert_eq!(flows_state(&repaired).1, None, "{repaired}");
}
