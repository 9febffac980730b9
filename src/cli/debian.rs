//! `buildit debian …`: Debian binary packages as exact, pinned inputs — resolve names
//! to a closure of exact versions with the host's apt, show what apt knows, and lock
//! the closure in `buildit.lock`.

use std::io::{self, Write};
use std::path::PathBuf;

use buildit_lang::lockfile::{LockError, LockFile};
use clap::Subcommand;
use serde_json::json;

use super::output::{note, print_json};
use super::{CliError, CliResult, Global};
use crate::debian::resolve::ResolveError;
use crate::ops::debian::{self as ops_debian, LockDebianError, LockRequest};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the exact closure apt would install on an empty system.
    ///
    /// One `NAME VERSION ARCH SIZE` line per package, sorted by name; --json adds the
    /// sha256 and the pool file name.
    Resolve {
        #[arg(long)]
        json: bool,
        /// `NAME`, `NAME=VERSION`, `NAME:ARCH`, optionally prefixed `debian:`.
        #[arg(required = true, value_name = "PACKAGE")]
        packages: Vec<String>,
    },
    /// Show every version apt knows of a package, with its file and hash.
    Show {
        #[arg(long)]
        json: bool,
        /// `NAME` or `NAME:ARCH`.
        #[arg(value_name = "PACKAGE")]
        package: String,
    },
    /// Resolve packages and record their closure in the lock file's `debian` section.
    ///
    /// Every package of the closure is locked at the version apt resolves now; other
    /// locked packages are kept, unless --update is given: then only this closure and
    /// the closures of the build roots in the lock stay.
    Lock {
        /// The lock file to update (created if missing).
        #[arg(long, value_name = "FILE", default_value = "buildit.lock")]
        lock: PathBuf,
        /// Drop locked packages that neither this closure nor a locked build root needs.
        #[arg(long)]
        update: bool,
        /// Also lock every package of this build-root definition (YAML), and record
        /// the build root's closure in the lock. May be repeated.
        #[arg(long, value_name = "FILE")]
        build_root: Vec<PathBuf>,
        /// `NAME`, `NAME=VERSION`, `NAME:ARCH`, optionally prefixed `debian:`.
        #[arg(required_unless_present = "build_root", value_name = "PACKAGE")]
        packages: Vec<String>,
    },
    /// Download the locked `.deb`s (all, or those named) into the store, checking
    /// each against its sha256. Prints their store paths.
    Fetch {
        #[command(flatten)]
        src: SourceArgs,
        #[arg(long)]
        json: bool,
        #[arg(value_name = "PACKAGE")]
        packages: Vec<String>,
    },
    /// Fetch and unpack locked packages into store paths holding their file trees.
    Unpack {
        #[command(flatten)]
        src: SourceArgs,
        #[arg(long)]
        json: bool,
        #[arg(required = true, value_name = "PACKAGE")]
        packages: Vec<String>,
    },
    /// Build a build root (a definition such as build-roots/debian-12-c.yaml) from the
    /// packages the lock pins for it. Prints its store path.
    BuildRoot {
        #[command(flatten)]
        src: SourceArgs,
        /// Make a symlink here to the result and register it as a GC root.
        #[arg(long, short = 'o', value_name = "LINK")]
        out_link: Option<PathBuf>,
        definition: PathBuf,
    },
}

/// Where locked `.deb`s come from.
#[derive(clap::Args)]
struct SourceArgs {
    /// The lock file that pins the packages.
    #[arg(long, value_name = "FILE", default_value = "buildit.lock")]
    lock: PathBuf,
    /// Look here (by file name) for `.deb`s before downloading. May be repeated.
    #[arg(long, value_name = "DIR")]
    deb_dir: Vec<PathBuf>,
    /// Never download: only the store, --deb-dir and apt's cache.
    #[arg(long)]
    offline: bool,
    /// How many packages to fetch or unpack at once.
    #[arg(long, short = 'j', default_value_t = 2)]
    jobs: usize,
}

impl SourceArgs {
    fn options(&self) -> crate::ops::debian::FetchOptions {
        crate::ops::debian::FetchOptions {
            deb_dirs: self.deb_dir.clone(),
            offline: self.offline,
            jobs: self.jobs,
        }
    }

    fn load_lock(&self) -> CliResult<LockFile> {
        if !self.lock.exists() {
            return Err(CliError::usage(
                format!("{} does not exist", self.lock.display()),
                Some("`buildit debian lock NAMES…` (or --build-root FILE) writes it"),
            ));
        }
        Ok(LockFile::load(&self.lock)?)
    }
}

type NamedOp = fn(
    &buildit_store::LocalStore,
    &LockFile,
    &[String],
    &crate::ops::debian::FetchOptions,
    &(dyn Fn(&str) + Sync),
) -> Result<Vec<(String, buildit_store::StorePath)>, crate::realise::BuildError>;

/// `fetch` and `unpack`: an operation on locked packages, printing their store paths.
fn named(
    global: &Global,
    src: &SourceArgs,
    packages: &[String],
    json: bool,
    op: NamedOp,
) -> CliResult<()> {
    let store = global.open_store()?;
    let lock = src.load_lock()?;
    let paths = op(&store, &lock, packages, &src.options(), &progress)?;
    print_paths(&paths, json)
}

/// One status line per step on stderr, as the seed's output does.
fn progress(line: &str) {
    note!("{line}");
}

fn print_paths(paths: &[(String, buildit_store::StorePath)], json: bool) -> CliResult<()> {
    if json {
        let v: Vec<_> = paths
            .iter()
            .map(|(n, p)| json!({"name": n, "path": p.to_string()}))
            .collect();
        return print_json(&serde_json::Value::Array(v));
    }
    let mut out = io::stdout().lock();
    for (_, p) in paths {
        writeln!(out, "{p}")?;
    }
    Ok(())
}

pub fn exec(global: &Global, args: Args) -> CliResult<()> {
    match args.command {
        Cmd::Fetch {
            src,
            json,
            packages,
        } => named(global, &src, &packages, json, crate::ops::debian::fetch),
        Cmd::Unpack {
            src,
            json,
            packages,
        } => named(global, &src, &packages, json, crate::ops::debian::unpack),
        Cmd::BuildRoot {
            src,
            out_link,
            definition,
        } => {
            let def = buildit_lang::model::build_root::BuildRootDef::load(&definition)?;
            let store = global.open_store()?;
            let lock = src.load_lock()?;
            let (path, report) = crate::ops::debian::build_root(
                &store,
                &def,
                &lock,
                &src.lock,
                &src.options(),
                &progress,
            )?;
            if let Some(link) = out_link {
                store.add_indirect_root(&link, &path)?;
            }
            note!(
                "build root {}: {} built, {} already valid",
                def.name,
                report.built.len(),
                report.already_valid
            );
            writeln!(std::io::stdout(), "{path}")?;
            Ok(())
        }
        Cmd::Resolve { json, packages } => resolve_cmd(&packages, json),
        Cmd::Show { json, package } => show_cmd(&package, json),
        Cmd::Lock {
            lock,
            update,
            build_root,
            packages,
        } => lock_cmd(&LockRequest {
            packages,
            build_roots: build_root,
            lock,
            update,
        }),
    }
}

impl From<ResolveError> for CliError {
    fn from(e: ResolveError) -> Self {
        let help = match &e {
            ResolveError::UnknownVersion { name, .. } => Some(format!(
                "`buildit debian show {name}` lists the versions with their details"
            )),
            _ => None,
        };
        CliError::Usage {
            message: e.to_string(),
            help,
        }
    }
}

impl From<LockDebianError> for CliError {
    fn from(e: LockDebianError) -> Self {
        match e {
            LockDebianError::Resolve(e) => e.into(),
            LockDebianError::BuildRoot(e) => e.into(),
            LockDebianError::Lock(e) => e.into(),
        }
    }
}

impl From<LockError> for CliError {
    fn from(e: LockError) -> Self {
        let help = match &e {
            LockError::Parse { .. } | LockError::Version { .. } => {
                Some("fix the file, or remove it and lock again")
            }
            _ => None,
        };
        CliError::usage(e.to_string(), help)
    }
}

fn to_json(v: impl serde::Serialize) -> CliResult<serde_json::Value> {
    Ok(serde_json::to_value(v).map_err(io::Error::from)?)
}

fn resolve_cmd(packages: &[String], json: bool) -> CliResult<()> {
    let closure = ops_debian::resolve_names(packages)?;
    if json {
        let v: Vec<serde_json::Value> = closure
            .iter()
            .map(|(name, p)| {
                json!({
                    "name": name,
                    "version": p.version,
                    "architecture": p.architecture,
                    "sha256": p.sha256,
                    "size": p.size,
                    "filename": p.filename,
                })
            })
            .collect();
        return print_json(&to_json(v)?);
    }
    let mut out = io::stdout().lock();
    for (name, p) in &closure {
        writeln!(out, "{name} {} {} {}", p.version, p.architecture, p.size)?;
    }
    Ok(())
}

/// The fields `show` prints, in this order.
const SHOW_FIELDS: [&str; 5] = ["Depends", "Pre-Depends", "Filename", "SHA256", "Size"];

fn show_cmd(package: &str, json: bool) -> CliResult<()> {
    let stanzas = ops_debian::show(package)?;
    if json {
        let v: Vec<serde_json::Value> = stanzas
            .iter()
            .map(|s| {
                json!({
                    "package": s.package,
                    "version": s.version,
                    "architecture": s.architecture,
                    "depends": s.field("Depends"),
                    "pre_depends": s.field("Pre-Depends"),
                    "filename": s.field("Filename"),
                    "sha256": s.field("SHA256"),
                    "size": s.size(),
                    "description": s.summary(),
                })
            })
            .collect();
        return print_json(&to_json(v)?);
    }
    let mut out = io::stdout().lock();
    for (i, s) in stanzas.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "Package: {}", s.package)?;
        writeln!(out, "Version: {}", s.version)?;
        writeln!(out, "Architecture: {}", s.architecture)?;
        for f in SHOW_FIELDS {
            if let Some(v) = s.field(f) {
                writeln!(out, "{f}: {}", v.replace('\n', " "))?;
            }
        }
        if let Some(d) = s.summary() {
            writeln!(out, "Description: {d}")?;
        }
    }
    Ok(())
}

fn lock_cmd(request: &LockRequest) -> CliResult<()> {
    let outcome = ops_debian::lock_debian(request)?;
    let mut out = io::stdout().lock();
    for c in &outcome.changes {
        writeln!(out, "{c}")?;
    }
    if outcome.unchanged > 0 {
        writeln!(out, "= {} unchanged", outcome.unchanged)?;
    }
    out.flush()?;
    let path = request.lock.display();
    if outcome.written {
        note!("wrote {path}");
    } else {
        note!("{path} is up to date");
    }
    Ok(())
}
