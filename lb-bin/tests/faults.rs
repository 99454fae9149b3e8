//! Node faults a disk or an operator causes, on the binary as a user runs it: a state file that
//! is empty, truncated or garbage, a state directory that cannot be written. Each node runs with
//! `--dry-run` (it decides everything and announces nothing), alone, on the example config.
//! Also an edit that moves no address but changes how one is announced: the plan in force
//! (kept between passes) must not outlive the configuration it was made from.
//! The read-only directory case needs root (a read-only bind mount in a mount namespace of its
//! own) and is skipped without it unless `LB_REQUIRE_NETNS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/config.yaml")
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lb-faults-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A node that is killed (by PID) when dropped, with its stdout and stderr read by threads.
struct Node {
    child: Child,
    out: mpsc::Receiver<String>,
    err: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn start(mut cmd: Command) -> Node {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lb-bin");
        let (tx, out) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let e2 = err.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut e = e2.lock().unwrap();
                e.push_str(&l);
                e.push('\n');
            }
        });
        Node { child, out, err }
    }

    /// The addresses of the first plan it prints (within 20 s).
    fn first_plan(&self) -> Vec<String> {
        self.next_plan()
            .iter()
            .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string())
            .collect()
    }

    /// The lines of the next plan it prints (within 20 s): service, address, protocol, how.
    fn next_plan(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut seen = false;
        while let Ok(l) = self.out.recv_timeout(Duration::from_secs(20)) {
            if l.contains("would announce") {
                seen = true;
                continue;
            }
            if seen {
                lines.push(l);
                // The plan is printed at once: a short wait ends it.
                while let Ok(l) = self.out.recv_timeout(Duration::from_millis(300)) {
                    lines.push(l);
                }
                break;
            }
        }
        assert!(seen, "no plan printed; stderr:\n{}", self.stderr());
        lines
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }
}

fn standalone(state_dir: &Path) -> Command {
    standalone_on(&example(), state_dir)
}

fn standalone_on(config: &Path, state_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lb-bin"));
    c.args(["standalone", "--config"])
        .arg(config)
        .args(["--node-name", "node1", "--dry-run", "--bind", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(state_dir);
    c
}

/// The saved allocations: service -> addresses.
fn saved(dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    let t = std::fs::read_to_string(dir.join("allocations.json")).unwrap();
    serde_json::from_str(&t).unwrap()
}

#[test]
fn an_empty_truncated_or_garbage_state_file_is_moved_aside_and_the_node_runs() {
    // What a healthy run writes, to cut short for the truncated case.
    let good = temp_dir("good");
    let ips = {
        let n = Node::start(standalone(&good));
        n.first_plan()
    };
    assert!(!ips.is_empty(), "the example announces something");
    let written = std::fs::read_to_string(good.join("allocations.json")).unwrap();
    for (tag, text) in [
        ("empty", String::new()),
        ("truncated", written[..written.len() / 2].to_string()),
        ("garbage", "\u{0}\u{7f}garbage".to_string()),
    ] {
        let d = temp_dir(tag);
        std::fs::write(d.join("allocations.json"), &text).unwrap();
        let n = Node::start(standalone(&d));
        assert_eq!(n.first_plan(), ips, "{tag}: {}", n.stderr());
        drop(n);
        let aside: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("allocations.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{tag}: {aside:?}");
        assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), text, "{tag}");
        assert!(!saved(&d).is_empty(), "{tag}: a good file again");
        let _ = std::fs::remove_dir_all(&d);
    }
    let _ = std::fs::remove_dir_all(&good);
}

fn root() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    if !root && std::env::var("LB_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("LB_REQUIRE_NETNS=1 but not root");
    }
    root
}

#[test]
fn a_read_only_state_dir_is_reported_and_the_node_runs() {
    if !root() {
        eprintln!("skipped: needs root for a read-only bind mount");
        return;
    }
    let d = temp_dir("ro");
    // A mount namespace of the node's own: the read-only mount goes away with it.
    let cmd = standalone(&d);
    let mut argv = vec![cmd.get_program().to_string_lossy().into_owned()];
    argv.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@""#)
        .arg(&d)
        .args(&argv);
    let n = Node::start(c);
    let ips = n.first_plan();
    assert!(!ips.is_empty(), "{}", n.stderr());
    // The write fails and is logged with the reason.
    std::thread::sleep(Duration::from_millis(500));
    let err = n.stderr();
    assert!(err.contains("Read-only file system"), "the reason:\n{err}");
    assert!(!d.join("allocations.json").exists());
    // The disk comes back (remounted read-write inside the node's mount namespace): the
    // retry writes the file without any event of the node's own.
    let pid = n.child.id().to_string();
    let ok = Command::new("nsenter")
        .args(["-t", &pid, "-m", "mount", "-o", "remount,bind,rw"])
        .arg(&d)
        .status()
        .unwrap();
    assert!(ok.success());
    let mut written = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        if d.join("allocations.json").exists() {
            written = true;
            break;
        }
    }
    // The file is on the bind mount, which is the same directory seen from here.
    assert!(written, "retried once writable:\n{}", n.stderr());
    assert!(!saved(&d).is_empty());
    assert!(!n.stderr().contains("panicked"));
    drop(n);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_edit_that_moves_no_address_still_changes_the_plan() {
    let d = temp_dir("edit");
    let config = d.join("config.yaml");
    let text = std::fs::read_to_string(example()).unwrap();
    assert!(text.contains("interfaces: [eth0]"));
    std::fs::write(&config, &text).unwrap();
    let n = Node::start(standalone_on(&config, &d.join("state")));
    let first = n.next_plan();
    assert!(first.iter().any(|l| l.ends_with("on eth0")), "{first:?}");
    // Written whole under another name and renamed: a reload never reads half a file.
    let tmp = d.join("config.yaml.new");
    std::fs::write(
        &tmp,
        text.replace("interfaces: [eth0]", "interfaces: [eth1]"),
    )
    .unwrap();
    std::fs::rename(&tmp, &config).unwrap();
    let next = n.next_plan();
    let moved = |p: &[String]| -> Vec<String> {
        p.iter()
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(moved(&next), moved(&first), "the same addresses");
    assert!(
        next.iter().any(|l| l.ends_with("on eth1")) && !next.iter().any(|l| l.ends_with("on eth0")),
        "{next:?}\n{}",
        n.stderr()
    );
    drop(n);
    let _ = std::fs::remove_dir_all(&d);
}
