//! `buildit store …`: direct work on the store.

use std::io::{self, Write};
use std::path::PathBuf;

use buildit_store::nar;
use buildit_store::signing::SecretKey;
use buildit_store::{FileIngestion, HashAlgo, StorePath};
use clap::{Subcommand, ValueEnum};

use super::output::{note, print_json};
use super::{CliError, CliResult, Global};
use crate::ops::store::{ls, StoreLocation};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Add files or trees to the store by content; prints their store paths.
    Add {
        /// Hash algorithm of the content address (recursive sha256 unless told).
        #[arg(long, value_name = "ALGO")]
        fixed: Option<HashAlgo>,
        /// Hash the file's bytes instead of its NAR (a regular file only).
        #[arg(long)]
        flat: bool,
        /// Store path name (default: the file's own name).
        #[arg(long)]
        name: Option<String>,
        /// Also make a symlink here to the added path and register it as a GC root.
        #[arg(long, short = 'o', value_name = "LINK")]
        out_link: Option<PathBuf>,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Write the NAR of a store path (or of any file or tree) to stdout.
    Dump { path: String },
    /// Restore a NAR from stdin into DIR, which must not exist (all or nothing:
    /// written beside DIR under a temporary name, renamed into place at the end).
    Restore { dir: PathBuf },
    /// Print the NAR hash of a file or tree, as `nix hash path` does.
    HashPath {
        #[arg(long, default_value = "sha256")]
        algo: HashAlgo,
        #[arg(long, value_enum, default_value_t = HashFormat::Sri)]
        format: HashFormat,
        path: PathBuf,
    },
    /// Show what the store knows about paths.
    PathInfo {
        #[arg(long)]
        json: bool,
        /// Include everything the paths refer to, transitively.
        #[arg(long, short = 'r')]
        closure: bool,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// List a directory inside a store path.
    Ls {
        #[arg(long, short = 'R')]
        recursive: bool,
        #[arg(long, short = 'l')]
        long: bool,
        #[arg(long)]
        json: bool,
        path: String,
    },
    /// Print a file inside a store path.
    Cat { path: String },
    /// Check every valid path exists (and with --check-contents, still hashes right).
    Verify {
        #[arg(long)]
        check_contents: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete every path no GC root keeps alive.
    Gc {
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// List GC roots.
    Roots {
        #[arg(long)]
        json: bool,
    },
    /// Signing keys for binary caches.
    Key {
        #[command(subcommand)]
        command: KeyCmd,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Make an ed25519 key pair in Nix's NAME:base64 format.
    Generate {
        name: String,
        /// Where to write the secret key (mode 0600; never overwritten).
        #[arg(long, value_name = "FILE")]
        secret_key_file: Option<PathBuf>,
        /// Where to write the public key.
        #[arg(long, value_name = "FILE")]
        public_key_file: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum HashFormat {
    /// sha256-<base64>
    Sri,
    /// nix32, as in store paths
    Nix32,
    /// lowercase hex
    Hex,
    /// algo:nix32, as in narinfo files
    Prefixed,
}

pub fn exec(global: &Global, args: Args) -> CliResult<()> {
    match args.command {
        Cmd::Add {
            fixed,
            flat,
            name,
            out_link,
            paths,
        } => add(global, fixed, flat, name, out_link, paths),
        Cmd::Dump { path } => dump(global, &path),
        Cmd::Restore { dir } => {
            let mut input = io::BufReader::with_capacity(1 << 16, io::stdin().lock());
            crate::ops::store::restore_nar(&mut input, &dir)?;
            Ok(())
        }
        Cmd::HashPath { algo, format, path } => {
            let (h, _) = nar::hash_path(&path, algo)?;
            let s = match format {
                HashFormat::Sri => h.to_sri(),
                HashFormat::Nix32 => h.to_nix32(),
                HashFormat::Hex => h.to_hex(),
                HashFormat::Prefixed => h.to_prefixed_nix32(),
            };
            writeln!(io::stdout(), "{s}")?;
            Ok(())
        }
        Cmd::PathInfo {
            json,
            closure,
            paths,
        } => path_info(global, json, closure, &paths),
        Cmd::Ls {
            recursive,
            long,
            json,
            path,
        } => {
            let store = global.open_store()?;
            let loc = StoreLocation::resolve(&store, &path)?;
            let entries = ls(&loc, recursive)?;
            if json {
                return print_json(&serde_json::to_value(&entries).map_err(io::Error::from)?);
            }
            let mut out = io::stdout().lock();
            for e in entries {
                let name = if e.name.is_empty() {
                    loc.display()
                } else {
                    e.name
                };
                if long {
                    let mode = match (e.kind, e.executable) {
                        ("directory", _) => "dr-xr-xr-x",
                        ("symlink", _) => "lrwxrwxrwx",
                        (_, true) => "-r-xr-xr-x",
                        _ => "-r--r--r--",
                    };
                    let size = e.size.unwrap_or(0);
                    match e.target {
                        Some(t) => writeln!(out, "{mode} {size:>12} {name} -> {t}")?,
                        None => writeln!(out, "{mode} {size:>12} {name}")?,
                    }
                } else {
                    writeln!(out, "{name}")?;
                }
            }
            Ok(())
        }
        Cmd::Cat { path } => {
            let store = global.open_store()?;
            let loc = StoreLocation::resolve(&store, &path)?;
            let md =
                loc.physical
                    .symlink_metadata()
                    .map_err(|e| buildit_store::StoreError::Io {
                        path: loc.physical.clone(),
                        error: e,
                    })?;
            if !md.is_file() {
                return Err(CliError::usage(
                    format!("{} is not a regular file", loc.display()),
                    Some("use `buildit store ls` for directories and symlinks"),
                ));
            }
            let mut f = std::fs::File::open(&loc.physical)?;
            io::copy(&mut f, &mut io::stdout().lock())?;
            Ok(())
        }
        Cmd::Verify {
            check_contents,
            json,
        } => {
            let store = global.open_store()?;
            let report = store.verify(check_contents)?;
            if json {
                print_json(&serde_json::to_value(&report).map_err(io::Error::from)?)?;
            } else {
                for p in &report.problems {
                    note!("error: {p}");
                }
                note!(
                    "checked {} paths{}: {} problem(s)",
                    report.checked,
                    if check_contents {
                        " and their contents"
                    } else {
                        ""
                    },
                    report.problems.len()
                );
            }
            if report.problems.is_empty() {
                Ok(())
            } else {
                Err(CliError::Reported(1))
            }
        }
        Cmd::Gc { dry_run, json } => {
            let store = global.open_store()?;
            let report = store.gc(dry_run)?;
            if json {
                return print_json(&serde_json::to_value(&report).map_err(io::Error::from)?);
            }
            let mut out = io::stdout().lock();
            for p in &report.deleted {
                writeln!(out, "{p}")?;
            }
            note!(
                "{} {} paths ({:.1} MiB), {} live",
                if dry_run { "would delete" } else { "deleted" },
                report.deleted.len(),
                report.bytes_freed as f64 / (1024.0 * 1024.0),
                report.live
            );
            Ok(())
        }
        Cmd::Roots { json } => {
            let store = global.open_store()?;
            let roots = store.roots()?;
            if json {
                return print_json(&serde_json::to_value(&roots).map_err(io::Error::from)?);
            }
            let mut out = io::stdout().lock();
            for r in roots {
                writeln!(out, "{} -> {}", r.link.display(), r.path)?;
            }
            Ok(())
        }
        Cmd::Key {
            command:
                KeyCmd::Generate {
                    name,
                    secret_key_file,
                    public_key_file,
                },
        } => key_generate(&name, secret_key_file, public_key_file),
    }
}

fn add(
    global: &Global,
    fixed: Option<HashAlgo>,
    flat: bool,
    name: Option<String>,
    out_link: Option<PathBuf>,
    paths: Vec<PathBuf>,
) -> CliResult<()> {
    if (name.is_some() || out_link.is_some()) && paths.len() > 1 {
        return Err(CliError::usage(
            "--name and --out-link need exactly one PATH",
            None,
        ));
    }
    let store = global.open_store()?;
    let method = if flat {
        FileIngestion::Flat
    } else {
        FileIngestion::Recursive
    };
    let algo = fixed.unwrap_or(HashAlgo::Sha256);
    let mut out = io::stdout().lock();
    for p in paths {
        let n = match &name {
            Some(n) => n.clone(),
            None => p
                .file_name()
                .and_then(|n| n.to_str())
                .map(String::from)
                .ok_or_else(|| {
                    CliError::usage(
                        format!("cannot take a store path name from '{}'", p.display()),
                        Some("pass --name NAME"),
                    )
                })?,
        };
        let sp = store.add_path(&p, &n, method, algo)?;
        if let Some(link) = &out_link {
            store.add_indirect_root(link, &sp)?;
        }
        writeln!(out, "{sp}")?;
    }
    Ok(())
}

fn dump(global: &Global, path: &str) -> CliResult<()> {
    // A store path (logical, physical or via a link) is dumped from the store; any
    // other path is dumped as it is on disk.
    let store = global.open_store()?;
    let physical = match StoreLocation::resolve(&store, path) {
        Ok(loc) => loc.physical,
        Err(_) if !path.starts_with(buildit_store::STORE_DIR) => PathBuf::from(path),
        Err(e) => return Err(e.into()),
    };
    let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    nar::dump_path(&physical, &mut out)?;
    out.flush()?;
    Ok(())
}

fn path_info(global: &Global, json: bool, closure: bool, args: &[String]) -> CliResult<()> {
    let store = global.open_store()?;
    let mut paths: Vec<StorePath> = Vec::new();
    for a in args {
        let (p, sub) = store.resolve(a)?;
        if !sub.as_os_str().is_empty() {
            return Err(CliError::usage(
                format!("'{a}' is inside a store path, not a store path"),
                Some(&format!("did you mean {p}?")),
            ));
        }
        if !store.is_valid(&p)? {
            return Err(buildit_store::StoreError::NotValid(p).into());
        }
        paths.push(p);
    }
    let paths: Vec<StorePath> = if closure {
        store.closure(&paths)?.into_iter().collect()
    } else {
        paths
    };
    let infos = paths
        .iter()
        .map(|p| store.require_info(p))
        .collect::<Result<Vec<_>, _>>()?;
    if json {
        let v = serde_json::Value::Array(infos.iter().map(|i| i.to_json()).collect());
        return print_json(&v);
    }
    let mut out = io::stdout().lock();
    for i in infos {
        writeln!(out, "{}\t{}\t{}", i.path, i.nar_size, i.nar_hash)?;
    }
    Ok(())
}

fn key_generate(name: &str, secret: Option<PathBuf>, public: Option<PathBuf>) -> CliResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let sk = SecretKey::generate(name).map_err(|e| CliError::usage(e.to_string(), None))?;
    let secret = secret.unwrap_or_else(|| PathBuf::from(format!("{name}.secret")));
    let public = public.unwrap_or_else(|| PathBuf::from(format!("{name}.public")));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret)
        .map_err(|e| {
            CliError::usage(
                format!("cannot create {}: {e}", secret.display()),
                Some("keys are never overwritten; remove the old file first"),
            )
        })?;
    writeln!(f, "{sk}")?;
    let pk = sk.to_public();
    std::fs::write(&public, format!("{pk}\n"))?;
    note!(
        "secret key written to {} (keep it private), public key to {}",
        secret.display(),
        public.display()
    );
    writeln!(std::io::stdout(), "{pk}")?;
    Ok(())
}
