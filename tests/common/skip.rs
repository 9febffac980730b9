//! What a test does when something it needs is missing (a tool, a compiler, a
//! service, apt's package lists): the one way for every test of the workspace.
//!
//! - Under CI (`CI` set to a non-empty value, as `.ci/run` does) the test fails,
//!   naming what is missing: CI installs everything (`scripts/test.sh`), so a
//!   missing prerequisite there is a broken setup, not a reason to pass.
//! - Elsewhere it prints `SKIPPED: <test name>: <reason>` on the process's real
//!   stderr and the test returns. libtest captures only the `print!`/`eprint!`
//!   macros; a write through `std::io::stderr()` shows even for a passing test.
//!   `scripts/test.sh` collects these lines and reports them at the end.
//!
//! ```ignore
//! let Some(gcc) = skip::require_tool("gcc", "scripts/test.sh installs it") else { return };
//! if !ready { return skip::skip("apt has no package lists"); }
//! ```
//!
//! Integration tests reach it as `common::skip`; the library crates' unit tests and
//! the `lang` and `store` test crates include this same file with `#[path]`, so it
//! depends on std only.
#![allow(dead_code)]

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether a missing prerequisite fails the test: `CI` is set and not empty.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// The running test's name: libtest runs each test on a thread named after it.
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

/// The test cannot do its work because of REASON: under CI this panics; elsewhere
/// it prints `SKIPPED: <test>: <reason>` (once per test and reason: a property test
/// asks for each case) and the caller returns.
#[track_caller]
pub fn skip(reason: impl std::fmt::Display) {
    let test = test_name();
    if under_ci() {
        panic!("{test}: a prerequisite is missing, and CI must have everything: {reason}");
    }
    thread_local! {
        static SAID: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }
    // One line for scripts/test.sh to collect; more lines of a reason are indented.
    let reason = reason.to_string();
    let line = format!(
        "SKIPPED: {test}: {}\n",
        reason.trim_end().replace('\n', "\n    ")
    );
    let new = SAID.with(|s| {
        let mut s = s.borrow_mut();
        let new = !s.contains(&line);
        if new {
            s.push(line.clone());
        }
        new
    });
    if new {
        // Not eprintln!: that goes to the harness's capture, dropped for a pass.
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// `Some(value)`, or `None` after [`skip`] with REASON.
#[track_caller]
pub fn or_skip<T>(value: Option<T>, reason: impl std::fmt::Display) -> Option<T> {
    if value.is_none() {
        skip(reason);
    }
    value
}

/// The workspace's root (where `Cargo.lock` is), for any of its crates.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(here)
        .to_path_buf()
}

/// Where `scripts/image-tools.sh` and `scripts/cache-tools.sh` put the tools they
/// build or install (actool; moto in `venv/bin`).
pub fn tools_dir() -> PathBuf {
    workspace_root().join("target/tools")
}

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Tool NAME: `target/tools/NAME`, else on `PATH`, else in an `sbin` directory
/// (Debian puts runc and sshd in /usr/sbin, which an unprivileged user's `PATH`
/// lacks).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(tools_dir())
        .chain(std::env::split_paths(&path))
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        // Absolute: some tools (sshd) re-execute themselves by the path they were given.
        .find(|p| p.is_absolute() && executable(p))
}

/// Tool NAME, or `None` after [`skip`]: "NAME is not installed (WHERE_FROM)".
#[track_caller]
pub fn require_tool(name: &str, where_from: &str) -> Option<PathBuf> {
    or_skip(
        tool(name),
        format!("{name} is not installed ({where_from})"),
    )
}

/// For a test that proves nothing as root (root reads a mode-000 file): as root,
/// run this same test again from the same test executable as user `nobody`
/// (util-linux's `setpriv`), require that it ran and passed, and return `true`, so
/// the caller returns; as any other user, `false`, so the caller goes on.
pub fn rerun_unprivileged() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user.
    if !std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return false;
    }
    let Some(setpriv) = require_tool("setpriv", "scripts/test.sh installs util-linux") else {
        return true;
    };
    let test = test_name();
    let exe = std::env::current_exe().expect("the test executable");
    let out = std::process::Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args(["--exact", &test, "--test-threads=1"])
        .output()
        .expect("run setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test} run again as nobody ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    true
}
