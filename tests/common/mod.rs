//! Shared helpers for end-to-end tests that run the `buildit` binary as a user would.
#![allow(dead_code)]

pub mod build;
pub mod https;
pub mod images;
pub mod skip;
pub mod sshd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory with its own store root.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn root(&self) -> PathBuf {
        self.path("root")
    }

    /// `buildit --root <root> ARGS…`, not yet run.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_buildit"));
        c.arg("--root").arg(self.root()).args(args);
        c.env_remove("BUILDIT_ROOT");
        c
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "buildit {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Run and require failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "buildit {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run buildit")
    }
}

/// Write a small tree with a file, an executable, a symlink and a subdirectory.
pub fn sample_tree(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(dir.join("etc/motd"), "hello\n").unwrap();
    std::fs::write(dir.join("bin/run"), "#!/bin/sh\necho run\n").unwrap();
    std::fs::set_permissions(dir.join("bin/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("bin/run", dir.join("link")).unwrap();
}
