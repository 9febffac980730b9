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

#[test]
fn sigkill_at_random_moments() {
    let env = Env::new();
    let tree = env.path("tree");
    big_tree(&tree);
    // How long a whole add takes here, to spread the kills over it.
    let t = Instant::now();
    let probe = Env::new();
    probe.ok(&["store", "add", tree.to_str().unwrap()]);
    let full = t.elapsed();
    let steps = 12u32;
    for i in 0..steps {
        let env = Env::new();
        let mut child: Child = env
            .cmd(&["store", "add", tree.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full * (i + 1) / steps);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        assert_consistent(&env, &tree);
    }
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
