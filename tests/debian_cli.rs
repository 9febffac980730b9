//! `buildit debian resolve|show|lock` end to end, checked against the host's apt.
//!
//! Tests that need apt's package lists run `apt-get update` once when there are none
//! (as root, as in CI); without lists (and without root to fetch them) they skip,
//! saying why, and fail under CI (`common::skip`).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;

use buildit_lang::lockfile::{DebianPackage, LockFile};
use common::Env;
use serde_json::Value;

/// Whether apt has `Packages` lists here (after one `apt-get update` if it had none
/// and we are root). Skips, saying why, when not.
fn apt_lists() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let has_lists = || -> Result<bool, String> {
            let out = Command::new("apt-get")
                .args([
                    "indextargets",
                    "--format",
                    "$(FILENAME)",
                    "Identifier: Packages",
                ])
                .output()
                .map_err(|e| format!("apt-get cannot run here: {e}"))?;
            Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty())
        };
        if has_lists()? {
            return Ok(());
        }
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("apt has no package lists and apt-get update needs root".into());
        }
        let st = Command::new("apt-get")
            .args(["update", "-q"])
            .status()
            .map_err(|e| e.to_string())?;
        if st.success() && has_lists()? {
            Ok(())
        } else {
            Err(format!(
                "apt has no package lists and apt-get update failed ({st})"
            ))
        }
    });
    match ready {
        Ok(()) => true,
        Err(why) => {
            common::skip::skip(why);
            false
        }
    }
}

/// apt-cache against an empty dpkg status, as buildit resolves (the host's installed
/// packages must not change the candidates).
fn apt_cache(args: &[&str]) -> String {
    let status = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("apt-cache")
        .env("LC_ALL", "C")
        .arg("-o")
        .arg(format!("Dir::State::status={}", status.path().display()))
        .args(args)
        .output()
        .expect("apt-cache");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The candidate version of each name, from one `apt-cache policy` call.
fn candidates(names: &[&str]) -> BTreeMap<String, String> {
    let mut args = vec!["policy"];
    args.extend(names);
    let policy = apt_cache(&args);
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in policy.lines() {
        if !line.starts_with(' ') {
            if let Some(n) = line.strip_suffix(':') {
                current = Some(n.to_string());
            }
        } else if let (Some(n), Some(c)) = (&current, line.trim().strip_prefix("Candidate: ")) {
            out.insert(n.clone(), c.to_string());
        }
    }
    for n in names {
        assert!(out.contains_key(*n), "no candidate for {n}:\n{policy}");
    }
    out
}

fn candidate(name: &str) -> String {
    candidates(&[name]).remove(name).unwrap()
}

/// `apt-cache show ARGS…`: (Package, Version, Architecture, SHA256, Filename, Size)
/// of every stanza.
fn stanzas(args: &[String]) -> Vec<[String; 6]> {
    let mut all = vec!["show"];
    all.extend(args.iter().map(String::as_str));
    let text = apt_cache(&all);
    let mut out = Vec::new();
    for para in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        let field = |f: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(&format!("{f}: ")))
                .unwrap_or("")
                .to_string()
        };
        out.push(
            [
                "Package",
                "Version",
                "Architecture",
                "SHA256",
                "Filename",
                "Size",
            ]
            .map(field),
        );
    }
    out
}

/// stderr with miette's line wrapping and frame undone, for matching whole phrases.
fn flat(stderr: &str) -> String {
    stderr
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn fails(env: &Env, args: &[&str]) -> String {
    flat(&env.fails(args))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

#[test]
fn resolve_hello_is_aptly_exact() {
    if !apt_lists() {
        return;
    }
    let env = Env::new();
    let v = json(&env.ok(&["debian", "resolve", "--json", "hello"]));
    let entries = v.as_array().expect("an array");
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by name");
    assert!(
        names.contains(&"hello") && names.contains(&"libc6"),
        "{names:?}"
    );
    // Essential packages are not pulled in by apt with an empty status.
    for essential in ["bash", "dash", "coreutils", "base-files"] {
        assert!(!names.contains(&essential), "{essential} in {names:?}");
    }
    // Versions are apt's candidates; files and hashes are what apt-cache show says.
    let cands = candidates(&names);
    let shown = stanzas(
        &entries
            .iter()
            .map(|e| {
                format!(
                    "{}={}",
                    e["name"].as_str().unwrap(),
                    e["version"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>(),
    );
    for e in entries {
        let s = |k: &str| e[k].as_str().unwrap().to_string();
        assert_eq!(s("version"), cands[&s("name")], "{e}");
        let want = [
            s("name"),
            s("version"),
            s("architecture"),
            s("sha256"),
            s("filename"),
            e["size"].to_string(),
        ];
        assert!(shown.contains(&want), "{e} not in {shown:?}");
    }

    // The text form lists the same closure, NAME VERSION ARCH SIZE.
    let text = env.ok(&["debian", "resolve", "debian:hello"]);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), entries.len());
    for (l, e) in lines.iter().zip(entries) {
        assert_eq!(l.len(), 4, "{l:?}");
        assert_eq!(l[0], e["name"].as_str().unwrap());
        assert_eq!(l[1], e["version"].as_str().unwrap());
        assert_eq!(l[2], e["architecture"].as_str().unwrap());
        assert_eq!(l[3], e["size"].to_string());
    }

    // An exact version request gives the same.
    let hello = &cands["hello"];
    let pinned = env.ok(&["debian", "resolve", &format!("hello={hello}")]);
    assert_eq!(pinned, text);
}

#[test]
fn lock_is_deterministic_and_merges() {
    if !apt_lists() {
        return;
    }
    let env = Env::new();
    let lock_path = env.path("buildit.lock");
    let lock = lock_path.to_str().unwrap();

    let first = env.ok(&["debian", "lock", "--lock", lock, "hello"]);
    let hello = candidate("hello");
    assert!(
        first.lines().any(|l| l == format!("+ hello {hello}")),
        "{first}"
    );
    assert!(!first.contains('~') && !first.contains('='), "{first}");
    let bytes = std::fs::read(&lock_path).unwrap();
    let parsed = LockFile::load(&lock_path).unwrap();
    assert_eq!(parsed.debian["hello"].version, hello);
    assert!(parsed.debian.contains_key("libc6"));
    assert_eq!(parsed.to_text().as_bytes(), &bytes[..]);

    // Again: byte-identical, everything unchanged.
    let second = env.ok(&["debian", "lock", "--lock", lock, "hello"]);
    assert_eq!(second, format!("= {} unchanged\n", parsed.debian.len()));
    assert_eq!(std::fs::read(&lock_path).unwrap(), bytes);

    // Merge: a package outside the closure is kept; a stale entry is updated.
    let mut edited = parsed.clone();
    edited.debian.insert(
        "zz-not-in-closure".into(),
        DebianPackage {
            version: "1.0-1".into(),
            architecture: "all".into(),
            sha256: "0".repeat(64),
            size: 1,
            filename: "pool/main/z/zz/zz_1.0-1_all.deb".into(),
        },
    );
    if let Some(h) = edited.debian.get_mut("hello") {
        h.version = "0.1-stale".into();
    }
    edited.save(&lock_path).unwrap();
    let merged = env.ok(&["debian", "lock", "--lock", lock, "hello"]);
    assert!(
        merged
            .lines()
            .any(|l| l == format!("~ hello 0.1-stale → {hello}")),
        "{merged}"
    );
    let after = LockFile::load(&lock_path).unwrap();
    assert!(after.debian.contains_key("zz-not-in-closure"));
    assert_eq!(after.debian["hello"], parsed.debian["hello"]);

    // --update: the section is exactly the closure again.
    let updated = env.ok(&["debian", "lock", "--lock", lock, "--update", "hello"]);
    assert!(
        updated.lines().any(|l| l == "- zz-not-in-closure 1.0-1"),
        "{updated}"
    );
    assert_eq!(std::fs::read(&lock_path).unwrap(), bytes);
}

/// A package with two versions known: lock the older one, then the newest.
#[test]
fn lock_follows_requested_versions() {
    if !apt_lists() {
        return;
    }
    // Some package of hello's closure with several versions (bookworm's libc6 has the
    // point release and the security archive); skip with a reason when none.
    let env = Env::new();
    let closure = json(&env.ok(&["debian", "resolve", "--json", "hello"]));
    let names: Vec<String> = closure
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    let cands = candidates(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let found = stanzas(&names)
        .into_iter()
        .find(|[name, version, ..]| cands.get(name).is_some_and(|c| c != version))
        .map(|[name, older, ..]| {
            let newest = cands[&name].clone();
            (name, older, newest)
        });
    let Some((name, older, newest)) = found else {
        return common::skip::skip("no package of hello's closure has two versions in these lists");
    };
    let lock_path = env.path("buildit.lock");
    let lock = lock_path.to_str().unwrap();
    let out = env.run(&["debian", "lock", "--lock", lock, &format!("{name}={older}")]);
    if !out.status.success() {
        // The older version may need dependencies that are gone: apt says so.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&name), "{err}");
        return common::skip::skip(format!("{name}={older} is not installable here:\n{err}"));
    }
    assert_eq!(
        LockFile::load(&lock_path).unwrap().debian[&name].version,
        older
    );
    let bumped = env.ok(&["debian", "lock", "--lock", lock, &name]);
    assert!(
        bumped
            .lines()
            .any(|l| l == format!("~ {name} {older} → {newest}")),
        "{bumped}"
    );
    assert_eq!(
        LockFile::load(&lock_path).unwrap().debian[&name].version,
        newest
    );
}

#[test]
fn show_lists_versions_with_files() {
    if !apt_lists() {
        return;
    }
    let env = Env::new();
    let hello = candidate("hello");
    let text = env.ok(&["debian", "show", "hello"]);
    assert!(text.starts_with("Package: hello\n"), "{text}");
    assert!(text.contains(&format!("Version: {hello}\n")), "{text}");
    for f in [
        "Architecture: ",
        "Depends: ",
        "Filename: pool/",
        "SHA256: ",
        "Size: ",
        "Description: ",
    ] {
        assert!(text.contains(f), "{f} missing:\n{text}");
    }
    let v = json(&env.ok(&["debian", "show", "--json", "debian:hello"]));
    let first = &v.as_array().unwrap()[0];
    let shown = stanzas(&["hello".to_string()]);
    assert_eq!(shown.len(), v.as_array().unwrap().len());
    assert_eq!(shown[0][1], first["version"].as_str().unwrap());
    assert_eq!(shown[0][3], first["sha256"].as_str().unwrap());
    assert_eq!(shown[0][4], first["filename"].as_str().unwrap());
    assert!(first["description"].as_str().unwrap().contains("hello"));
}

#[test]
fn unknown_packages_and_versions_are_named() {
    if !apt_lists() {
        return;
    }
    let env = Env::new();
    let err = fails(
        &env,
        &["debian", "resolve", "hello", "buildit-no-such-package"],
    );
    assert!(
        err.contains("package 'buildit-no-such-package' is not known to apt")
            && err.contains("apt-get update"),
        "{err}"
    );
    // A name is never a pattern: `hell.` would match hello as a regular expression.
    let err = fails(&env, &["debian", "resolve", "hell."]);
    assert!(err.contains("'hell.' is not known to apt"), "{err}");

    let hello = candidate("hello");
    let err = fails(&env, &["debian", "resolve", "hello=0.0.0-buildit"]);
    assert!(
        err.contains("package 'hello' has no version '0.0.0-buildit'") && err.contains(&hello),
        "{err}"
    );

    let err = fails(&env, &["debian", "show", "buildit-no-such-package"]);
    assert!(
        err.contains("'buildit-no-such-package' is not known to apt"),
        "{err}"
    );

    // The lock file is not touched by a failed resolution.
    let lock_path = env.path("buildit.lock");
    fails(
        &env,
        &[
            "debian",
            "lock",
            "--lock",
            lock_path.to_str().unwrap(),
            "buildit-no-such-package",
        ],
    );
    assert!(!lock_path.exists());
}

#[test]
fn unsatisfiable_requests_show_apts_explanation() {
    if !apt_lists() {
        return;
    }
    let env = Env::new();
    // hello and hello-traditional conflict with each other.
    let traditional = apt_cache(&["show", "hello-traditional"]);
    if !traditional.contains("Conflicts: hello") && !traditional.contains("Breaks: hello") {
        return common::skip::skip("no hello-traditional conflicting with hello in these lists");
    }
    let err = fails(&env, &["debian", "resolve", "hello", "hello-traditional"]);
    assert!(
        err.contains("apt cannot resolve hello hello-traditional"),
        "{err}"
    );
    assert!(
        err.contains("unmet dependencies") && err.contains("hello-traditional"),
        "{err}"
    );
}

#[test]
fn bad_requests_fail_before_apt() {
    let env = Env::new();
    for bad in ["Hello", "-o", "hello=", "hello=x", "hello:AMD64", "a"] {
        let err = fails(&env, &["debian", "resolve", "--", bad]);
        assert!(
            err.contains(&format!("'{bad}' is not a Debian package request")),
            "{err}"
        );
    }
    let err = fails(&env, &["debian", "show", "hello=2.10-3"]);
    assert!(err.contains("without a version"), "{err}");

    // A broken lock file is reported before anything is resolved.
    let lock_path = env.path("buildit.lock");
    std::fs::write(&lock_path, "{ not json").unwrap();
    let err = fails(
        &env,
        &[
            "debian",
            "lock",
            "--lock",
            lock_path.to_str().unwrap(),
            "hello",
        ],
    );
    assert!(err.contains("is not a valid lock file"), "{err}");
}

#[test]
fn missing_apt_is_reported() {
    let env = Env::new();
    let empty = env.path("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let out = env
        .cmd(&["debian", "resolve", "hello"])
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot run apt-get") && err.contains("host's apt"),
        "{err}"
    );
}

#[test]
fn json_and_lock_agree() {
    if !apt_lists() {
        return;
    }
    let env = Env::new();
    let v = json(&env.ok(&["debian", "resolve", "--json", "hello"]));
    let from_json: BTreeMap<String, DebianPackage> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            (
                s("name"),
                DebianPackage {
                    version: s("version"),
                    architecture: s("architecture"),
                    sha256: s("sha256"),
                    size: e["size"].as_u64().unwrap(),
                    filename: s("filename"),
                },
            )
        })
        .collect();
    let lock_path = env.path("x.lock");
    env.ok(&[
        "debian",
        "lock",
        "--lock",
        lock_path.to_str().unwrap(),
        "hello",
    ]);
    assert_eq!(LockFile::load(&lock_path).unwrap().debian, from_json);
}

#[test]
fn lock_build_root_records_its_closure() {
    if !apt_lists() {
        return;
    }
    let env = Env::new();
    let def = env.path("tiny.yaml");
    std::fs::write(&def, "name: tiny\npackages:\n  - debian:hello\n").unwrap();
    let lock_path = env.path("buildit.lock");
    let lock = lock_path.to_str().unwrap();
    let def_arg = def.to_str().unwrap();

    let out = env.ok(&["debian", "lock", "--lock", lock, "--build-root", def_arg]);
    assert!(
        out.lines()
            .any(|l| l == format!("+ hello {}", candidate("hello"))),
        "{out}"
    );
    let locked = LockFile::load(&lock_path).unwrap();
    let root = &locked.build_roots["tiny"];
    assert_eq!(root.requested, vec!["hello"]);
    assert_eq!(
        root.packages,
        locked.debian.keys().cloned().collect::<Vec<_>>()
    );

    // --update keeps what a locked build root needs.
    env.ok(&["debian", "lock", "--lock", lock, "--update", "zlib1g"]);
    let after = LockFile::load(&lock_path).unwrap();
    assert!(after.debian.contains_key("hello") && after.debian.contains_key("zlib1g"));

    // A bad definition names its file, before apt runs.
    std::fs::write(&def, "name: tiny\npackages: []\n").unwrap();
    let err = fails(
        &env,
        &["debian", "lock", "--lock", lock, "--build-root", def_arg],
    );
    assert!(err.contains("tiny.yaml"), "{err}");
}
