//! Crash safety and concurrency of the store, with real processes: a `buildit store
//! add` killed at every step of the add protocol and at random moments, and several
//! processes adding at once. After each, the store verifies clean and the path is
//! either absent or whole.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::Env;

/// A tree large enough that an add takes a while: many small files and some big ones.
fn big_tree(dir: &std::path::Path) {
    for d in 0..20 {
        let sub = dir.join(format!("d{d:02}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..50 {
            std::fs::write(
                sub.join(format!("f{f:02}")),
                format!("{d}/{f}\n").repeat(40),
            )
            .unwrap();
        }
    }
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for b in 0..8 {
        let mut data = chunk.clone();
        data[0] = b;
        std::fs::write(dir.join(format!("big{b}")), data.repeat(4)).unwrap();
    }
}

/// The store verifies clean, and `path` (if given) is valid with its full contents or
/// absent.
fn assert_consistent(env: &Env, tree: &std::path::Path) {
    let out = env.run(&["store", "verify", "--check-contents", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert!(out.status.success());
    // Nothing half-written is left anywhere.
    let left: Vec<_> = std::fs::read_dir(env.root().join("var/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "var/tmp: {left:?}");
    let store_entries: Vec<_> = std::fs::read_dir(env.root().join("store"))
        .unwrap()
        .flatten()
        .collect();
    assert!(store_entries.len() <= 1);
    if store_entries.len() == 1 {
        let expected = env.ok(&["store", "hash-path", tree.to_str().unwrap()]);
        let info: serde_json::Value = serde_json::from_str(&env.ok(&[
            "store",
            "path-info",
            "--json",
            store_entries[0].path().to_str().unwrap(),
        ]))
        .unwrap();
        assert_eq!(info[0]["narHash"], expected.trim());
    }
}

#[test]
fn killed_at_each_step_of_the_protocol() {
    let tree_env = Env::new();
    let tree = tree_env.path("tree");
    big_tree(&tree);
    for point in [
        "before-normalise",
        "before-pending",
        "before-rename",
        "before-register",
    ] {
        let env = Env::new();
        let out = env
            .cmd(&["store", "add", tree.to_str().unwrap()])
            .env("BUILDIT_FAULT_POINT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: the fault must fire");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(point),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_consistent(&env, &tree);
        // The path is not there, and the next add succeeds.
        assert_eq!(
            std::fs::read_dir(env.root().join("store")).unwrap().count(),
            0,
            "{point}: nothing registered, nothing left"
        );
        env.ok(&["store", "add", tree.to_str().unwrap()]);
        assert_consistent(&env, &tree);
    }
}

/// Whether the `store add` with PID is at work: from the moment it starts its temp
/// tree (`var/tmp/add-PID-…` and its lock) until it has committed it and removed
/// them, just before it exits.
fn add_at_work(env: &Env, pid: u32) -> bool {
    let prefix = format!("add-{pid}-");
    std::fs::read_dir(env.root().join("var/tmp")).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
    })
}

/// `store add TREE` started, once its temp tree is there.
fn start_add(env: &Env, tree: &std::path::Path) -> Child {
    let mut child = env
        .cmd(&["store", "add", tree.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !add_at_work(env, child.id()) {
        let exited = child.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "the add ended ({exited:?}) before it started work"
        );
        assert!(Instant::now() < deadline, "the add did not start work");
        std::thread::sleep(Duration::from_millis(1));
    }
    child
}

/// Kills spread over the add's work, each one checked to interrupt it: the add is
/// stopped (SIGSTOP) first, found at work (its temp tree there, not exited), and
/// only then killed. A kill that would come after the add finished is tried again
/// earlier.
#[test]
fn sigkill_at_random_moments() {
    use nix::sys::signal::{kill, Signal};
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    let tree = env.path("tree");
    big_tree(&tree);
    // How long an add works here (temp tree to exit), to spread the kills over it.
    let probe = Env::new();
    let mut child = start_add(&probe, &tree);
    let t = Instant::now();
    assert!(child.wait().unwrap().success());
    let work = t.elapsed();
    let steps = 12u32;
    let mut retried = 0;
    for i in 0..steps {
        let mut delay = work * i / steps;
        loop {
            let env = Env::new();
            let mut child = start_add(&env, &tree);
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            std::thread::sleep(delay);
            // Not reaped yet, so the pid is still this child's.
            kill(pid, Signal::SIGSTOP).unwrap();
            let at_work = child.try_wait().unwrap().is_none() && add_at_work(&env, child.id());
            let _ = kill(pid, Signal::SIGKILL);
            let status = child.wait().unwrap();
            if at_work {
                assert_eq!(status.signal(), Some(9), "kill {i}: {status}");
                assert_consistent(&env, &tree);
                break;
            }
            // The add was done before the stop: the machine is busier than
            // when it was timed.
            retried += 1;
            assert!(
                retried <= 2 * steps,
                "the adds keep finishing before the kill"
            );
            delay /= 2;
        }
    }
    eprintln!("{steps} kills over {work:?} of work, {retried} tried again earlier");
}

#[test]
fn several_processes_add_at_once() {
    let env = Env::new();
    let trees: Vec<_> = (0..3)
        .map(|i| {
            let t = env.path(&format!("t{i}"));
            std::fs::create_dir(&t).unwrap();
            for f in 0..200 {
                std::fs::write(t.join(format!("f{f}")), format!("{i}:{f}\n").repeat(64)).unwrap();
            }
            t
        })
        .collect();
    let children: Vec<(usize, Child)> = (0..9)
        .map(|k| {
            let t = &trees[k % 3];
            (
                k % 3,
                env.cmd(&["store", "add", t.to_str().unwrap()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let mut results: Vec<Vec<String>> = vec![vec![]; 3];
    for (i, c) in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        results[i].push(String::from_utf8(out.stdout).unwrap());
    }
    for r in &results {
        assert!(r.iter().all(|p| p == &r[0]), "{r:?}");
    }
    let report = env.ok(&["store", "verify", "--check-contents", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["checked"], 3);
    assert_eq!(report["problems"], serde_json::json!([]));
    // Readers are not blocked by a writer: path-info while another add runs.
    let mut writer = env
        .cmd(&[
            "store",
            "add",
            env.path("t0").to_str().unwrap(),
            "--name",
            "again",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    env.ok(&["store", "path-info", results[1][0].trim()]);
    assert!(Instant::now() < deadline);
    assert!(writer.wait().unwrap().success());
}
