//! Builds that go wrong, end to end through the binary: a failing builder, a kept
//! build dir, `--timeout` and `--max-silent-time`, stopping early or going on with
//! `-k`, the ELF check against the runtime closure, a source nobody has, buildit
//! killed mid-build, and what a builder can and cannot reach in its sandbox.
//!
//! Every recipe lives in the test's own spec directory (`recipes/test/NAME/`),
//! uses GNU hello's tarball as its source (fed by `--source-dir`) and has short
//! phases of its own. Builds go to the shared store root (see `common::build`),
//! where the C build root is already made; a recipe that must really build every
//! run carries a per-run comment in its phases, so its derivation is new.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::build::*;

const HELLO_URL: &str = "https://ftp.gnu.org/gnu/hello/hello-2.10.tar.gz";
const HELLO_SHA256: &str = "31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b";
const INSTALL: &str = "mkdir -p $out/usr/share/x && echo hi > $out/usr/share/x/f";

/// A test recipe: name, version, dependencies (YAML flow lists) and the build and
/// install phases (unpack and patch are the defaults, configure does nothing).
struct Recipe<'a> {
    name: &'a str,
    version: &'a str,
    source_url: &'a str,
    source_sha256: &'a str,
    build_depends: &'a str,
    runtime_depends: &'a str,
    build: String,
    install: String,
}

impl<'a> Recipe<'a> {
    fn new(name: &'a str, version: &'a str, build: &str) -> Recipe<'a> {
        Recipe {
            name,
            version,
            source_url: HELLO_URL,
            source_sha256: HELLO_SHA256,
            build_depends: "[]",
            runtime_depends: "[debian:libc6]",
            build: build.to_string(),
            install: INSTALL.to_string(),
        }
    }

    fn id(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }

    fn yaml(&self) -> String {
        let block = |text: &str| -> String {
            text.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        };
        format!(
            "name: {}\nversion: \"{}\"\nsources:\n  - url: {}\n    sha256: {}\n\
             build-root: debian-12-c\nbuild-depends: {}\nruntime-depends: {}\noptions: {{}}\n\
             phases:\n  configure: ':'\n  build: |\n{}  install: |\n{}",
            self.name,
            self.version,
            self.source_url,
            self.source_sha256,
            self.build_depends,
            self.runtime_depends,
            block(&self.build),
            block(&self.install),
        )
    }
}

/// Digits unique to this run of the tests: put in a phase, they make a derivation
/// that no earlier run has built.
fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!("{}{nanos:09}", std::process::id())
    })
}

/// Write a spec directory `dir` building `recipes` from its own recipe repository,
/// and lock it (see [`lock`]).
fn spec(dir: &Path, recipes: &[Recipe]) -> PathBuf {
    let mut container = format!(
        "---\n- vars:\n    name: {}\n    version: '1'\n",
        dir.file_name().unwrap().to_str().unwrap()
    );
    let mut files = vec![(
        ".buildit-config.yaml".to_string(),
        "recipe-paths: [recipes]\n".to_string(),
    )];
    for r in recipes {
        container.push_str(&format!("- package:\n    recipe: test/{}\n", r.id()));
        files.push((format!("recipes/test/{}/{}.yaml", r.name, r.id()), r.yaml()));
    }
    files.push(("container.yaml".to_string(), container));
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    write_files(dir, &files);
    lock(dir, recipes);
    dir.to_path_buf()
}

/// `buildit lock DIR`, made cheap: resolving Debian packages takes seconds, and
/// most specs here ask for the same ones. A lock made for recipes with the same
/// dependencies is copied with its package entries renamed; `buildit lock` then
/// finds it up to date (or, if the copy were wrong, resolves as usual).
fn lock(dir: &Path, recipes: &[Recipe]) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    type Deps = (String, String);
    static LOCKS: OnceLock<Mutex<HashMap<Deps, serde_json::Value>>> = OnceLock::new();
    let locks = LOCKS.get_or_init(Default::default);
    let deps = |r: &Recipe| (r.build_depends.to_string(), r.runtime_depends.to_string());
    let same_deps = recipes.windows(2).all(|w| deps(&w[0]) == deps(&w[1]));
    let file = dir.join("buildit.lock");
    let known = locks.lock().unwrap().get(&deps(&recipes[0])).cloned();
    if let (true, Some(mut l)) = (same_deps, known) {
        let packages = l["packages"].as_object_mut().unwrap();
        let entry = packages.values().next().unwrap().clone();
        packages.clear();
        for r in recipes {
            let key = format!("test/{}", r.id());
            let mut e = entry.clone();
            e["recipe"] = key.clone().into();
            packages.insert(key, e);
        }
        fs::write(&file, serde_json::to_string_pretty(&l).unwrap()).unwrap();
    }
    ok(buildit(&shared_root(), &["lock", dir.to_str().unwrap()]));
    if same_deps {
        let l = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
        locks.lock().unwrap().insert(deps(&recipes[0]), l);
    }
}

/// A package of a spec, from `buildit eval --json`.
#[derive(Debug)]
struct Pkg {
    key: String,
    drv: String,
    out: String,
}

fn plan(dir: &Path) -> Vec<Pkg> {
    let json = ok(buildit(
        &shared_root(),
        &["eval", "--json", dir.to_str().unwrap()],
    ));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Pkg {
            key: p["key"].as_str().unwrap().to_string(),
            drv: p["drv"].as_str().unwrap().to_string(),
            out: p["out"].as_str().unwrap().to_string(),
        })
        .collect()
}

/// The package of recipe `test/ID`.
fn package(dir: &Path, id: &str) -> Pkg {
    let all = plan(dir);
    let text = format!("{all:?}");
    let key = format!("test/{id}");
    all.into_iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no package {key} in {text}"))
}

/// The C build root (and GNU hello's tarball) in the shared root before any test
/// times a build: the first run as a new user makes them here, once.
fn warm() {
    static WARM: OnceLock<()> = OnceLock::new();
    WARM.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let dir = spec(
            &t.path().join("rf-warm"),
            &[Recipe::new("rf-warm", "1", "echo warm")],
        );
        let out = build(&dir, &[]);
        assert!(out.status.success(), "warm-up build:\n{}", show(&out));
    });
}

/// `buildit build DIR` in the shared root with the tarballs as a source dir and
/// the result link (if any) inside DIR.
fn build(dir: &Path, extra: &[&str]) -> Output {
    build_cmd(dir, extra).output().expect("run buildit")
}

fn build_cmd(dir: &Path, extra: &[&str]) -> std::process::Command {
    let link = dir.join("result");
    let mut args = vec!["-o", link.to_str().unwrap()];
    args.extend_from_slice(extra);
    common::build::build_cmd(&shared_root(), dir, &args)
}

fn show(o: &Output) -> String {
    format!(
        "status: {}\n--- stdout:\n{}--- stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The summary line (the last line of stderr).
fn summary(o: &Output) -> String {
    stderr(o).lines().last().unwrap_or("").to_string()
}

fn is_valid(path: &str) -> bool {
    buildit(&shared_root(), &["store", "path-info", path])
        .output()
        .unwrap()
        .status
        .success()
}

/// `store verify --check-contents` finds nothing wrong.
fn assert_store_clean(context: &str) {
    let out = buildit(&shared_root(), &["store", "verify", "--check-contents"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains(" 0 problem(s)"),
        "store verify after {context}:\n{}",
        show(&out)
    );
}

/// Processes whose command line contains `needle` (other than this one).
fn processes_with(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(raw) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// Poll `cond` every 100 ms until it holds or `limit` passes; whether it held.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_file(drv: &str) -> PathBuf {
    let base = drv.trim_start_matches("/store/");
    shared_root()
        .join("var/log/drvs")
        .join(&base[..2])
        .join(&base[2..])
}

#[test]
fn a_failing_build_reports_its_log_and_leaves_nothing_behind() {
    warm();
    let t = tempfile::tempdir().unwrap();
    let dir = spec(
        &t.path().join("rf-fail"),
        &[Recipe::new(
            "rf-fail",
            "1",
            "echo start\necho 'MARKER: about to fail'\nexit 3",
        )],
    );
    let pkg = package(&dir, "rf-fail-1");
    let out = build(&dir, &[]);
    let all = show(&out);
    let err = stderr(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        err.contains("error: rf-fail-1 failed: builder failed with exit code 3"),
        "{all}"
    );
    assert!(err.contains("  > MARKER: about to fail"), "{all}");
    assert!(err.contains(&format!("(buildit log {})", pkg.drv)), "{all}");
    assert!(summary(&out).ends_with(", 1 failed"), "{all}");

    let log = ok(buildit(&shared_root(), &["log", &pkg.drv]));
    assert!(log.contains("MARKER: about to fail"), "{log}");
    assert!(log.contains("=== buildit: build phase"), "{log}");

    assert!(
        !is_valid(&pkg.out),
        "{} is valid after a failure\n{all}",
        pkg.out
    );
    assert!(
        !shared_root()
            .join("store")
            .join(pkg.out.trim_start_matches("/store/"))
            .exists(),
        "{} exists on disk\n{all}",
        pkg.out
    );
    assert!(
        dir.join("result").symlink_metadata().is_err(),
        "a result link was made\n{all}"
    );
    assert_store_clean("a failed build");
}

#[test]
fn keep_failed_keeps_the_build_dir_and_says_where() {
    warm();
    let t = tempfile::tempdir().unwrap();
    let dir = spec(
        &t.path().join("rf-keep"),
        &[Recipe::new("rf-keep", "1", "echo keep me; exit 4")],
    );
    let kept_dir = shared_root().join("var/kept");
    let kept_entries = || -> Vec<PathBuf> {
        fs::read_dir(&kept_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with("rf-keep-1")
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    // Left by an earlier run that stopped half-way.
    for p in kept_entries() {
        fs::remove_dir_all(p).unwrap();
    }

    let out = build(&dir, &[]);
    let all = show(&out);
    assert!(!out.status.success(), "{all}");
    assert!(!stderr(&out).contains("kept at"), "{all}");
    assert!(
        kept_entries().is_empty(),
        "kept without -K: {:?}\n{all}",
        kept_entries()
    );

    let out = build(&dir, &["--keep-failed"]);
    let all = show(&out);
    assert!(!out.status.success(), "{all}");
    let err = stderr(&out);
    let kept: PathBuf = err
        .split("; build dir kept at ")
        .nth(1)
        .unwrap_or_else(|| panic!("no 'build dir kept at' in:\n{all}"))
        .lines()
        .next()
        .unwrap()
        .into();
    assert!(kept.starts_with(&kept_dir), "{}\n{all}", kept.display());
    assert!(
        kept.join("hello-2.10/configure").is_file(),
        "{} has no unpacked source\n{all}",
        kept.display()
    );
    assert_eq!(kept_entries(), vec![kept.clone()], "{all}");
    fs::remove_dir_all(&kept).unwrap();
}

#[test]
fn timeout_kills_the_build_and_its_daemons() {
    warm();
    let t = tempfile::tempdir().unwrap();
    let daemon = format!("sleep 1000.{}", run_id());
    let dir = spec(
        &t.path().join("rf-timeout"),
        &[Recipe::new(
            "rf-timeout",
            "1",
            &format!("{daemon} &\necho daemon started\nsleep 60"),
        )],
    );
    let start = Instant::now();
    let out = build(&dir, &["--timeout", "2"]);
    let took = start.elapsed();
    let all = show(&out);
    assert!(!out.status.success(), "{all}");
    assert!(took < Duration::from_secs(15), "took {took:?}\n{all}");
    assert!(
        stderr(&out).contains("rf-timeout-1 failed: builder timed out after 2 s"),
        "{all}"
    );
    assert!(stderr(&out).contains("  > daemon started"), "{all}");
    // The sandbox's PID namespace went with it; give the kernel a moment.
    wait_for(Duration::from_secs(2), || {
        processes_with(&daemon).is_empty()
    });
    let left = processes_with(&daemon);
    assert!(left.is_empty(), "survived the timeout: {left:?}\n{all}");
}

#[test]
fn max_silent_time_kills_a_quiet_build() {
    warm();
    let t = tempfile::tempdir().unwrap();
    let dir = spec(
        &t.path().join("rf-silent"),
        &[Recipe::new("rf-silent", "1", "echo once\nsleep 60")],
    );
    let start = Instant::now();
    let out = build(&dir, &["--max-silent-time", "2"]);
    let took = start.elapsed();
    let all = show(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        stderr(&out).contains("rf-silent-1 failed: builder printed no output for 2 s"),
        "{all}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}\n{all}");
}

#[test]
fn a_failure_stops_the_run_unless_keep_going() {
    warm();
    let t = tempfile::tempdir().unwrap();
    let bad = || Recipe::new("rf-bad", "1", "echo bad\nexit 3");

    // Without -k: the slow one is cancelled (or never started).
    let dir = spec(
        &t.path().join("rf-stop"),
        &[bad(), Recipe::new("rf-slow", "1", "sleep 30\necho slow")],
    );
    let slow = package(&dir, "rf-slow-1");
    let start = Instant::now();
    let out = build(&dir, &["-j2"]);
    let took = start.elapsed();
    let all = show(&out);
    let err = stderr(&out);
    assert!(!out.status.success(), "{all}");
    assert!(took < Duration::from_secs(20), "took {took:?}\n{all}");
    assert!(err.contains("error: rf-bad-1 failed:"), "{all}");
    assert!(
        err.contains(&format!("cancelled: {} (after a failure", slow.drv))
            || err.contains(&format!("not built: {} (after a failure", slow.drv)),
        "{all}"
    );
    assert!(summary(&out).contains(" failed"), "{all}");
    assert!(!is_valid(&slow.out), "{all}");

    // With -k: the good one is built all the same.
    let good = Recipe::new(
        "rf-good",
        "1",
        &format!("# run {}\nsleep 3\necho good", run_id()),
    );
    let dir = spec(&t.path().join("rf-keep-going"), &[bad(), good]);
    let (bad, good) = (package(&dir, "rf-bad-1"), package(&dir, "rf-good-1"));
    let out = build(&dir, &["-j2", "-k"]);
    let all = show(&out);
    let err = stderr(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        err.contains("error: rf-bad-1 failed: builder failed with exit code 3"),
        "{all}"
    );
    assert!(!err.contains("rf-good-1 failed"), "{all}");
    let line = summary(&out);
    assert!(line.starts_with("1 built, "), "{all}");
    assert!(line.ends_with(", 1 failed"), "{all}");
    assert!(is_valid(&good.out), "{all}");
    assert!(!is_valid(&bad.out), "{all}");
}

#[test]
fn an_elf_file_needs_its_libraries_in_the_runtime_closure() {
    warm();
    let t = tempfile::tempdir().unwrap();
    let zv = |version: &'static str, runtime: &'static str| {
        let mut r = Recipe::new(
            "rf-zv",
            version,
            &format!(
                "# run {}\n\
                 printf '#include <stdio.h>\\n#include <zlib.h>\\nint main(void) {{ puts(zlibVersion()); return 0; }}\\n' > zv.c\n\
                 cc -o zv zv.c -lz",
                run_id()
            ),
        );
        r.build_depends = "[debian:zlib1g-dev]";
        r.runtime_depends = runtime;
        r.install = "install -D zv $out/usr/bin/zv".into();
        r
    };

    // One spec, built with -k: 1 leaves libz.so.1 out of its runtime closure
    // (it is in the build root, as zlib1g-dev needs it), 2 declares it.
    let dir = spec(
        &t.path().join("rf-zv"),
        &[
            zv("1", "[debian:libc6]"),
            zv("2", "[debian:libc6, debian:zlib1g]"),
        ],
    );
    let (undeclared, declared) = (package(&dir, "rf-zv-1"), package(&dir, "rf-zv-2"));
    let out = build(&dir, &["-k", "-j2"]);
    let all = show(&out);
    let err = stderr(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        err.contains(
            "error: rf-zv-1 failed: rf-zv-1 needs libraries that nothing in its runtime closure provides:"
        ),
        "{all}"
    );
    let line = err
        .lines()
        .find(|l| l.contains("needs libz.so.1"))
        .unwrap_or_else(|| panic!("no line about libz.so.1:\n{all}"));
    assert!(
        line.trim_start().starts_with("/usr/bin/zv needs libz.so.1"),
        "{all}"
    );
    let provider = line
        .split("(provided by ")
        .nth(1)
        .unwrap_or_else(|| panic!("no provider named:\n{all}"));
    assert!(provider.starts_with("zlib1g"), "{all}");
    assert!(!err.contains("rf-zv-2 failed"), "{all}");
    assert!(!is_valid(&undeclared.out), "{all}");
    assert!(is_valid(&declared.out), "{all}");

    let info = ok(buildit(
        &shared_root(),
        &["store", "path-info", "--json", &declared.out],
    ));
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    let refs: Vec<&str> = v[0]["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        refs.iter()
            .any(|r| r.split_once('-').unwrap().1.starts_with("zlib1g-")),
        "{info}"
    );
    assert!(refs.iter().any(|r| r.contains("-libc6-")), "{info}");
}

#[test]
fn a_source_nobody_has_fails_offline_and_adds_nothing() {
    warm();
    let t = tempfile::tempdir().unwrap();
    let mut r = Recipe::new("rf-nosrc", "1", ":");
    r.source_url = "https://example.invalid/x.tar.gz";
    r.source_sha256 = "0000000000000000000000000000000000000000000000000000000000000000";
    let dir = spec(&t.path().join("rf-nosrc"), &[r]);
    let pkg = package(&dir, "rf-nosrc-1");
    // A file of that name, but not those bytes.
    let srcs = t.path().join("srcs");
    write_files(&srcs, &[("x.tar.gz", "not the tarball\n")]);
    let out = buildit(
        &shared_root(),
        &[
            "build",
            dir.to_str().unwrap(),
            "--offline",
            "--source-dir",
            srcs.to_str().unwrap(),
            "-o",
            dir.join("result").to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let all = show(&out);
    let err = stderr(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        err.contains("error: x.tar.gz failed: could not fetch x.tar.gz"),
        "{all}"
    );
    // Why: nothing in the source dirs has the hash, and no download is allowed.
    assert!(
        err.contains("no file in the source dirs (")
            && err.contains(&format!("sha256:{}", "0".repeat(64))),
        "{all}"
    );
    assert!(
        err.contains("--offline rules out downloading https://example.invalid/x.tar.gz"),
        "{all}"
    );
    assert!(err.contains(&format!("not built: {}", pkg.drv)), "{all}");
    assert!(!is_valid(&pkg.out), "{all}");
    let in_store: Vec<String> = fs::read_dir(shared_root().join("store"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("-x.tar.gz"))
        .collect();
    assert!(in_store.is_empty(), "{in_store:?}\n{all}");
    assert_store_clean("a failed fetch");
}

#[test]
fn killing_buildit_mid_build_kills_the_sandbox_and_a_rerun_builds() {
    warm();
    let t = tempfile::tempdir().unwrap();
    let sleeper = format!("sleep 5.{}", run_id());
    let dir = spec(
        &t.path().join("rf-killed"),
        &[Recipe::new(
            "rf-killed",
            "1",
            &format!("echo sleeping\n{sleeper}\necho woke"),
        )],
    );
    let pkg = package(&dir, "rf-killed-1");
    let log = log_file(&pkg.drv);
    let stderr_file = t.path().join("stderr");
    let mut child = build_cmd(&dir, &[])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    let what = || {
        format!(
            "--- buildit's stderr:\n{}--- log:\n{}",
            fs::read_to_string(&stderr_file).unwrap_or_default(),
            fs::read_to_string(&log).unwrap_or_default()
        )
    };
    let started = wait_for(Duration::from_secs(120), || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("sleeping"))
            && !processes_with(&sleeper).is_empty()
    });
    if !started {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the build did not get to its sleep\n{}", what());
    }
    // The kill interrupts work: the build is in its sleep (above), buildit has not
    // exited, and the builder has not got to its last line.
    assert!(child.try_wait().unwrap().is_none(), "{}", what());
    let woke = || fs::read_to_string(&log).is_ok_and(|l| l.contains("woke"));
    assert!(!woke(), "{}", what());
    let buildit_pid = child.id();
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{}",
        what()
    );

    // The sandbox dies with buildit: the sleep, and buildit's own helpers (which
    // have its command line, spec dir included).
    let spec_arg = dir.to_str().unwrap().to_string();
    let gone = || processes_with(&sleeper).is_empty() && processes_with(&spec_arg).is_empty();
    wait_for(Duration::from_secs(3), gone);
    assert!(
        gone(),
        "left running: {:?} {:?}\n{}",
        processes_with(&sleeper),
        processes_with(&spec_arg),
        what()
    );
    assert!(!is_valid(&pkg.out), "{}", what());
    assert!(!woke(), "the build went on after the kill\n{}", what());
    assert_store_clean("killing buildit");
    // Opening the store cleaned up the killed process's temp trees.
    let stale: Vec<_> = fs::read_dir(shared_root().join("var/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("add-{buildit_pid}-")))
        .collect();
    assert!(stale.is_empty(), "{stale:?}\n{}", what());

    let out = build(&dir, &["--no-link"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(is_valid(&pkg.out), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        pkg.out,
        "{}",
        show(&out)
    );
}

#[test]
fn a_build_cannot_reach_the_host_and_gets_a_fixed_environment() {
    warm();
    let t = tempfile::tempdir().unwrap();
    // A file on the host, outside anything the sandbox is given.
    let host_file = t.path().join("host-file");
    fs::write(&host_file, "host\n").unwrap();
    let mut r = Recipe::new("rf-sandbox", "1", ":");
    r.install = format!(
        r#"# run {}
mkdir -p $out/usr/share
try() {{
  if (eval "$1") >/dev/null 2>&1; then echo "ALLOWED: $1"; else echo "blocked: $1"; fi
}}
{{
  try 'echo x > /build/control && echo x > $out/control'
  try 'echo x > /etc/passwd'
  try 'touch /store/foo'
  try 'test -n "$(ls -A /root 2>/dev/null)$(ls -A /home 2>/dev/null)"'
  try 'grep -v -e "^ *lo:" -e "|" /proc/net/dev | grep -q .'
  try 'test -e {}'
}} | tee $out/usr/share/attempts
for v in HOME TMPDIR SOURCE_DATE_EPOCH TZ LC_ALL NIX_BUILD_CORES; do echo "$v=${{!v}}"; done > $out/usr/share/env
echo "uid=$(id -u)" >> $out/usr/share/env
echo "hostname=$(hostname)" >> $out/usr/share/env
echo "umask=$(umask)" >> $out/usr/share/env
rm $out/control
cat $out/usr/share/env"#,
        run_id(),
        host_file.display()
    );
    let dir = spec(&t.path().join("rf-sandbox"), &[r]);
    let pkg = package(&dir, "rf-sandbox-1");
    let out = build(&dir, &["--cores", "3", "--no-link"]);
    let all = show(&out);
    assert!(out.status.success(), "{all}");
    let log = ok(buildit(&shared_root(), &["log", &pkg.out]));
    let physical = shared_root()
        .join("store")
        .join(pkg.out.trim_start_matches("/store/"));
    let attempts = fs::read_to_string(physical.join("usr/share/attempts")).unwrap();
    let context = format!("{all}--- log:\n{log}--- attempts:\n{attempts}");
    // The control works; every attempt to get out is blocked.
    let expected = vec![
        "ALLOWED: echo x > /build/control && echo x > $out/control".to_string(),
        "blocked: echo x > /etc/passwd".to_string(),
        "blocked: touch /store/foo".to_string(),
        "blocked: test -n \"$(ls -A /root 2>/dev/null)$(ls -A /home 2>/dev/null)\"".to_string(),
        "blocked: grep -v -e \"^ *lo:\" -e \"|\" /proc/net/dev | grep -q .".to_string(),
        format!("blocked: test -e {}", host_file.display()),
    ];
    let lines: Vec<&str> = attempts.lines().collect();
    assert_eq!(lines, expected, "{context}");
    for l in &lines {
        assert!(log.contains(l), "{context}");
    }

    let env = fs::read_to_string(physical.join("usr/share/env")).unwrap();
    let want = [
        "HOME=/homeless-shelter",
        "TMPDIR=/build",
        "SOURCE_DATE_EPOCH=315532800",
        "TZ=UTC",
        "LC_ALL=C.UTF-8",
        "NIX_BUILD_CORES=3",
        "uid=1000",
        "hostname=localhost",
        "umask=0022",
    ];
    assert_eq!(
        env.lines().collect::<Vec<_>>(),
        want,
        "{context}\n--- env:\n{env}"
    );
}

/// A build holds no host privilege, whoever runs buildit: a build that writes
/// a kernel setting back (harmless if it worked) is refused, its ids map to
/// no host root, it cannot make set-id files, and a fork loop stops at
/// `--max-processes`.
#[test]
fn a_build_holds_no_host_privilege() {
    warm();
    let t = tempfile::tempdir().unwrap();
    let before = fs::read_to_string("/proc/sys/kernel/printk_ratelimit").unwrap();
    let mut r = Recipe::new("rf-noroot", "1", ":");
    r.install = format!(
        r#"# run {}
mkdir -p $out/usr/share
{{
  echo "uid_map $(cat /proc/self/uid_map)"
  echo "id $(id -u):$(id -g)"
  v=$(cat /proc/sys/kernel/printk_ratelimit)
  if (echo "$v" > /proc/sys/kernel/printk_ratelimit) 2>/build/err; then
    echo "printk_ratelimit written"
  else
    echo "printk_ratelimit refused: $(sed 's/.*: //' /build/err)"
  fi
  touch /build/s
  if chmod u+s /build/s 2>/dev/null; then echo "setuid allowed"; else echo "setuid refused"; fi
  sh -c 'i=0; while [ $i -lt 500 ]; do sleep 60 >/dev/null 2>&1 & i=$((i+1)); echo $i > /build/n; done' 2>/dev/null || true
  echo "processes $(cat /build/n)"
}} > $out/usr/share/report
cat $out/usr/share/report"#,
        run_id()
    );
    let dir = spec(&t.path().join("rf-noroot"), &[r]);
    let pkg = package(&dir, "rf-noroot-1");
    let out = build(&dir, &["--no-link", "--max-processes", "64"]);
    let all = show(&out);
    assert!(out.status.success(), "{all}");
    let physical = shared_root()
        .join("store")
        .join(pkg.out.trim_start_matches("/store/"));
    let report = fs::read_to_string(physical.join("usr/share/report")).unwrap();
    let lines: Vec<&str> = report.lines().collect();
    let map: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        (map[0], map[1], map[3]),
        ("uid_map", "1000", "1"),
        "{report}"
    );
    let host_uid: u32 = map[2].parse().unwrap();
    if nix::unistd::geteuid().is_root() {
        assert_ne!(host_uid, 0, "{report}");
    } else {
        assert_eq!(host_uid, nix::unistd::geteuid().as_raw(), "{report}");
    }
    assert_eq!(lines[1], "id 1000:1000", "{report}");
    assert!(
        lines[2].starts_with("printk_ratelimit refused: ")
            && (lines[2].contains("Read-only file system")
                || lines[2].contains("Permission denied")),
        "{report}"
    );
    assert_eq!(lines[3], "setuid refused", "{report}");
    let n: u32 = lines[4]
        .strip_prefix("processes ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(n < 64, "{n} processes under --max-processes 64: {report}");
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/printk_ratelimit").unwrap(),
        before
    );
    // The output belongs to the store's owner, whoever the build ran as.
    use std::os::unix::fs::MetadataExt;
    let md = fs::symlink_metadata(physical.join("usr/share/report")).unwrap();
    assert_eq!(md.uid(), nix::unistd::geteuid().as_raw());
    assert_store_clean("a build as an unprivileged id");
}
