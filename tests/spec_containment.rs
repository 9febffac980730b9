//! What a spec can reach, end to end through the binary (issue 12, items 3 to 5), as
//! root and as an ordinary user:
//!
//! * every way out of the spec directory — an absolute path, `..`, a symlinked
//!   directory, a symlinked file, an embedded package, a patch, a recipe or build
//!   root file — is refused at the file:line:col of the value, naming where it
//!   leads, and nothing is added to the store; what stays inside (and the
//!   directories the user's own configuration allows) still works, symlinks in a
//!   synced tree staying symlinks;
//! * a `.buildit-config.yaml` above the spec that is not the user's (or root's), or
//!   that others can change, is ignored with a warning that says why and how to
//!   allow it;
//! * YAML nested 30,000 or 1,000,000 levels deep, block or flow, is a clean error.
//!
//! Specs here have no packages to build (a sync and an image) and an empty lock, so
//! `buildit eval` gets as far as adding the synced files to the store: without the
//! checks, the escapes below would put the secret there.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory: `spec/` (with an empty lock), `outside/secret`,
/// `outside/pkg/pkg.yaml`, a store root and a home without configuration.
struct Scratch {
    _dir: tempfile::TempDir,
    top: PathBuf,
    spec: PathBuf,
}

const SECRET: &str = "the secret of outside\n";
const EMPTY_LOCK: &str = "{\n  \"version\": 1\n}\n";

impl Scratch {
    fn new() -> Scratch {
        Scratch::with_spec_at("spec")
    }

    fn with_spec_at(rel: &str) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let top = std::fs::canonicalize(dir.path()).unwrap();
        // Like a home directory: others may enter (as the user `buildit-test` must,
        // when root gives a file away) but not write.
        chmod(&top, 0o755);
        let spec = top.join(rel);
        std::fs::create_dir_all(spec.join("files")).unwrap();
        std::fs::write(spec.join("buildit.lock"), EMPTY_LOCK).unwrap();
        std::fs::create_dir_all(top.join("outside/pkg")).unwrap();
        std::fs::write(top.join("outside/secret"), SECRET).unwrap();
        std::fs::write(
            top.join("outside/pkg/pkg.yaml"),
            "base: app-misc/hello-2.10\n",
        )
        .unwrap();
        std::fs::create_dir_all(top.join("home/.config")).unwrap();
        Scratch {
            _dir: dir,
            top,
            spec,
        }
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.spec.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn link(&self, rel: &str, target: impl AsRef<Path>) {
        let p = self.spec.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    /// container.yaml with one sync of `src` (its value at line 2, column 10).
    fn sync(&self, src: &str, recursive: bool) {
        let rec = if recursive {
            "    recursive: true\n"
        } else {
            ""
        };
        self.write(
            "container.yaml",
            &format!("- sync:\n    src: {src}\n    dest: /etc/x\n{rec}- image:\n    type: oci\n"),
        );
    }

    fn root(&self) -> PathBuf {
        self.top.join("root")
    }

    fn run(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_buildit"));
        c.arg("--root")
            .arg(self.root())
            .args(args)
            .env_remove("BUILDIT_ROOT")
            .env_remove("BUILDIT_TRUSTED_CONFIG")
            .env("HOME", self.top.join("home"))
            .env("XDG_CONFIG_HOME", self.top.join("home/.config"));
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn eval(&self) -> Output {
        self.run(&["eval", self.spec.to_str().unwrap()], &[])
    }

    /// Names in the store directory (none when it was never made).
    fn store(&self) -> Vec<String> {
        match std::fs::read_dir(self.root().join("store")) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Whether any file in the store holds the secret.
    fn store_has_secret(&self) -> bool {
        self.store().iter().any(|n| {
            let p = self.root().join("store").join(n);
            std::fs::read_to_string(&p).is_ok_and(|t| t == SECRET)
        })
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The diagnostic without layout: miette wraps long messages (paths too, after a
/// '/') and draws boxes, so whitespace and box drawing are dropped here and from
/// what is looked for ([`has`]).
fn flat(out: &Output) -> String {
    squeeze(&stderr(out))
}

/// Without whitespace and the gutters a wrapped message line starts with, in
/// the Unicode and the ASCII rendering (the latter without a terminal or a
/// UTF-8 locale, as under `env -i`).
fn squeeze(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '│' | '·' | '|'))
        .collect()
}

/// Whether the flattened diagnostic says `what`.
fn has(flat: &str, what: &str) -> bool {
    flat.contains(&squeeze(what))
}

/// `buildit eval` must fail as a refused input does: status 1 (not a panic's 101 or
/// an abort's 134), the error at `at` (`FILE:LINE:COL`) saying the value leads to
/// `resolved`, the secret nowhere, and the store empty.
fn refused(s: &Scratch, at: &Path, line_col: &str, resolved: &Path) {
    let out = s.eval();
    let err = flat(&out);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let location = format!("{}:{line_col}", at.display());
    assert!(has(&err, &location), "no {location} in:\n{}", stderr(&out));
    let leads = format!(
        "resolves to {}, outside the spec directory",
        resolved.display()
    );
    assert!(has(&err, &leads), "no '{leads}' in:\n{}", stderr(&out));
    assert!(!has(&err, SECRET.trim()), "{}", stderr(&out));
    assert_eq!(s.store(), Vec::<String>::new(), "{}", stderr(&out));
}

#[test]
fn what_stays_inside_is_synced_and_inner_symlinks_stay_symlinks() {
    let s = Scratch::new();
    s.write("files/tree/a.txt", "a\n");
    s.link("files/tree/to-a", "a.txt");
    // Below a synced directory a symlink is copied as a link, wherever it points:
    // it is not followed.
    s.link("files/tree/to-outside", s.top.join("outside/secret"));
    // A symlink to a directory inside is followed.
    s.link("alias", "files/tree");
    s.sync("./alias", true);
    let out = s.eval();
    assert!(out.status.success(), "{}", stderr(&out));
    let tree = s
        .store()
        .into_iter()
        .find(|n| n.ends_with("-tree"))
        .expect("the synced tree is in the store");
    let tree = s.root().join("store").join(tree);
    assert_eq!(std::fs::read_to_string(tree.join("a.txt")).unwrap(), "a\n");
    assert_eq!(
        std::fs::read_link(tree.join("to-a")).unwrap(),
        Path::new("a.txt")
    );
    assert_eq!(
        std::fs::read_link(tree.join("to-outside")).unwrap(),
        s.top.join("outside/secret")
    );
    assert!(!s.store_has_secret());
}

#[test]
fn absolute_sync_sources_are_refused() {
    let s = Scratch::new();
    s.sync("/etc/shadow", false);
    refused(
        &s,
        &s.spec.join("container.yaml"),
        "2:10",
        Path::new("/etc/shadow"),
    );
    let secret = s.top.join("outside/secret");
    s.sync(secret.to_str().unwrap(), false);
    refused(&s, &s.spec.join("container.yaml"), "2:10", &secret);
}

#[test]
fn dot_dot_sync_sources_are_refused() {
    let s = Scratch::new();
    s.sync(&format!("{}etc/shadow", "../".repeat(24)), false);
    refused(
        &s,
        &s.spec.join("container.yaml"),
        "2:10",
        Path::new("/etc/shadow"),
    );
    s.sync("../outside/secret", false);
    refused(
        &s,
        &s.spec.join("container.yaml"),
        "2:10",
        &s.top.join("outside/secret"),
    );
}

#[test]
fn sync_through_a_symlinked_directory_is_refused() {
    let s = Scratch::new();
    s.link("files/etc", "/etc");
    s.sync("./files/etc/shadow", false);
    refused(
        &s,
        &s.spec.join("container.yaml"),
        "2:10",
        Path::new("/etc/shadow"),
    );
    s.link("files/out", "../../outside");
    s.sync("./files/out/secret", false);
    refused(
        &s,
        &s.spec.join("container.yaml"),
        "2:10",
        &s.top.join("outside/secret"),
    );
    // The synced directory itself a link out.
    s.link("tree", "../outside");
    s.sync("./tree", true);
    refused(
        &s,
        &s.spec.join("container.yaml"),
        "2:10",
        &s.top.join("outside"),
    );
}

#[test]
fn sync_of_a_symlinked_file_is_refused() {
    let s = Scratch::new();
    s.link("files/shadow", "/etc/shadow");
    s.sync("./files/shadow", false);
    refused(
        &s,
        &s.spec.join("container.yaml"),
        "2:10",
        Path::new("/etc/shadow"),
    );
    s.link("files/secret", "../../outside/secret");
    s.sync("./files/secret", false);
    refused(
        &s,
        &s.spec.join("container.yaml"),
        "2:10",
        &s.top.join("outside/secret"),
    );
}

#[test]
fn embedded_packages_outside_are_refused() {
    let s = Scratch::new();
    s.write(
        "container.yaml",
        "- package:\n    path: ../outside/pkg\n- image:\n    type: oci\n",
    );
    refused(
        &s,
        &s.spec.join("container.yaml"),
        "2:11",
        &s.top.join("outside/pkg"),
    );
    s.link("pkgs/app", "../../outside/pkg");
    s.write(
        "container.yaml",
        "- package:\n    path: ./pkgs/app\n- image:\n    type: oci\n",
    );
    refused(
        &s,
        &s.spec.join("container.yaml"),
        "2:11",
        &s.top.join("outside/pkg"),
    );
}

#[test]
fn patches_outside_are_refused() {
    let s = Scratch::new();
    s.write(
        "container.yaml",
        "- package:\n    path: ./pkgs/app\n- image:\n    type: oci\n",
    );
    let pkg = s.spec.join("pkgs/app/pkg.yaml");
    for (patch, leads) in [
        ("/etc/shadow".to_string(), PathBuf::from("/etc/shadow")),
        (
            format!("{}etc/shadow", "../".repeat(24)),
            PathBuf::from("/etc/shadow"),
        ),
        (
            "../../../outside/secret".into(),
            s.top.join("outside/secret"),
        ),
        ("linked.patch".into(), s.top.join("outside/secret")),
    ] {
        s.write(
            "pkgs/app/pkg.yaml",
            &format!("base: app-misc/hello-2.10\npatches:\n  {patch}: \"leak\"\n"),
        );
        if patch == "linked.patch" {
            s.link("pkgs/app/linked.patch", "../../../outside/secret");
        }
        refused(&s, &pkg, "3:3", &leads);
    }
}

#[test]
fn recipe_and_build_root_files_outside_are_refused() {
    let s = Scratch::new();
    s.link(
        "recipes/app-misc/evil/evil-1.0.yaml",
        "../../../../outside/secret",
    );
    s.write(
        "container.yaml",
        "- package:\n    recipe: app-misc/evil-1.0\n- image:\n    type: oci\n",
    );
    refused(
        &s,
        &s.spec.join("container.yaml"),
        "2:13",
        &s.top.join("outside/secret"),
    );

    // The shipped hello names its build root, which the spec's own repository
    // provides first: as a link out.
    let s = Scratch::new();
    s.link(
        "recipes/build-roots/debian-12-c.yaml",
        "../../../outside/secret",
    );
    s.write(
        "container.yaml",
        "- package:\n    recipe: app-misc/hello-2.10\n- image:\n    type: oci\n",
    );
    let hello = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples/recipes/app-misc/hello/hello-2.10.yaml");
    let text = std::fs::read_to_string(&hello).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("build-root:"))
        .unwrap()
        + 1;
    let out = s.eval();
    let err = flat(&out);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        has(&err, &format!("hello-2.10.yaml:{line}:13")),
        "{}",
        stderr(&out)
    );
    assert!(
        has(
            &err,
            &format!(
                "resolves to {}, outside the spec directory",
                s.top.join("outside/secret").display()
            )
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.store(), Vec::<String>::new());
}

#[test]
fn allowed_dirs_of_the_users_config_are_readable() {
    let s = Scratch::new();
    s.sync("../outside/secret", false);
    s.write(".buildit-config.yaml", "allowed-dirs: [../outside]\n");
    chmod(&s.spec.join(".buildit-config.yaml"), 0o644);
    let out = s.eval();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.store_has_secret());
}

/// `top/shared/` (mode `dir_mode`) holds `.buildit-config.yaml` (mode `file_mode`)
/// allowing `top/outside`, and the spec `top/shared/spec`, which syncs
/// `outside/secret`: the sync works exactly when the config is used.
fn shared_config(dir_mode: u32, file_mode: u32) -> (Scratch, PathBuf) {
    let s = Scratch::with_spec_at("shared/spec");
    let config = s.top.join("shared/.buildit-config.yaml");
    std::fs::write(&config, "allowed-dirs: [../outside]\n").unwrap();
    chmod(&config, file_mode);
    chmod(&s.top.join("shared"), dir_mode);
    s.sync("../../outside/secret", false);
    (s, config)
}

/// The config was ignored: the warning names it, says `why` and how to allow it,
/// and the sync it would have allowed is refused.
fn ignored(s: &Scratch, config: &Path, out: &Output, why: &str) {
    let err = flat(out);
    let warning = format!(
        "warning: ignoring the configuration {}: {why}",
        config.display()
    );
    assert!(has(&err, &warning), "no '{warning}' in:\n{}", stderr(out));
    assert!(
        has(
            &err,
            &format!("BUILDIT_TRUSTED_CONFIG={}", config.display())
        ),
        "{}",
        stderr(out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    assert!(has(&err, "outside the spec directory"), "{}", stderr(out));
    assert!(!s.store_has_secret());
}

#[test]
fn a_config_in_a_sticky_shared_directory_counts_only_when_it_is_yours() {
    // Yours, not writable by others, in a sticky world-writable directory (as /tmp):
    // used.
    let (s, _) = shared_config(0o1777, 0o644);
    let out = s.eval();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert!(s.store_has_secret());

    // Someone else's: only root can make that, by giving the file away.
    if nix::unistd::geteuid().is_root() {
        let other = nix::unistd::User::from_name("buildit-test")
            .ok()
            .flatten()
            .map_or(65534, |u| u.uid.as_raw());
        let (s, config) = shared_config(0o1777, 0o644);
        std::os::unix::fs::chown(&config, Some(other), Some(other)).unwrap();
        let out = s.eval();
        ignored(
            &s,
            &config,
            &out,
            &format!("it is owned by uid {other}, neither you (uid 0) nor root"),
        );
        // Trusted by name, it is used.
        let out = s.run(
            &["eval", s.spec.to_str().unwrap()],
            &[("BUILDIT_TRUSTED_CONFIG", &config)],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(s.store_has_secret());
    }
}

#[test]
fn a_config_others_can_change_is_ignored() {
    // Writable by everyone: whoever wrote it last decides.
    let (s, config) = shared_config(0o755, 0o666);
    let out = s.eval();
    ignored(&s, &config, &out, "it is writable by others (mode 0666)");
    // Writable by its group.
    let (s, config) = shared_config(0o755, 0o664);
    ignored(
        &s,
        &config,
        &s.eval(),
        "it is writable by its group (mode 0664)",
    );
    // In a world-writable directory without the sticky bit, anyone could replace it.
    let (s, config) = shared_config(0o777, 0o644);
    ignored(
        &s,
        &config,
        &s.eval(),
        &format!(
            "its directory {} is writable by others (mode 0777",
            s.top.join("shared").display()
        ),
    );
    // Named in BUILDIT_TRUSTED_CONFIG, the world-writable one is used.
    let (s, config) = shared_config(0o755, 0o666);
    let out = s.run(
        &["eval", s.spec.to_str().unwrap()],
        &[("BUILDIT_TRUSTED_CONFIG", &config)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.store_has_secret());
}

/// Status 1 and the position, for YAML nested far beyond the limit.
fn clean_error(s: &Scratch, file: &Path, line_col: &str) {
    let out = s.eval();
    assert_eq!(
        out.status.code(),
        Some(1),
        "status {:?}:\n{}",
        out.status,
        &stderr(&out)[..stderr(&out).len().min(4000)]
    );
    let err = stderr(&out);
    let at = format!("{}:{line_col}", file.display());
    assert!(
        err.contains(&at),
        "no {at} in:\n{}",
        &err[..err.len().min(4000)]
    );
    // The excerpt is cut: a megabyte line is not printed whole.
    assert!(err.len() < 20_000, "{} bytes of stderr", err.len());
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn deep_yaml_is_a_clean_error() {
    let s = Scratch::new();
    let container = s.spec.join("container.yaml");
    for levels in [30_000, 1_000_000] {
        s.write("container.yaml", &format!("{}x\n", "- ".repeat(levels)));
        clean_error(&s, &container, "1:129");
        s.write("container.yaml", &format!("{}x\n", "[".repeat(levels)));
        clean_error(&s, &container, "1:256");
    }
    // The files a spec names go through the same bound: pkg.yaml, the config, the
    // lock file.
    s.write(
        "container.yaml",
        "- package:\n    path: ./pkgs/app\n- image:\n    type: oci\n",
    );
    s.write(
        "pkgs/app/pkg.yaml",
        &format!(
            "base: app-misc/hello-2.10\nenv:\n  A: {}x\n",
            "- ".repeat(30_000)
        ),
    );
    clean_error(&s, &s.spec.join("pkgs/app/pkg.yaml"), "3:");
    s.write(
        ".buildit-config.yaml",
        &format!("mirrors: {}x\n", "- ".repeat(1_000_000)),
    );
    chmod(&s.spec.join(".buildit-config.yaml"), 0o644);
    clean_error(&s, &s.spec.join(".buildit-config.yaml"), "1:");
    std::fs::remove_file(s.spec.join(".buildit-config.yaml")).unwrap();
    s.sync("./files", true);
    s.write("buildit.lock", &"[".repeat(1_000_000));
    let out = s.eval();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a valid lock file"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("line 1 column"), "{}", stderr(&out));
}
