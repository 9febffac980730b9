//! Command-line interface: argument parsing (clap) and rendering. Each command
//! group has its own module with `Args` and `exec`; the work itself is in `ops`.

#![forbid(unsafe_code)]
// println!/eprintln! panic on a closed pipe: see `output` for what is used instead.
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod check;
mod debian;
mod diff;
mod eval;
mod image;
mod interrupt;
mod lock;
mod log;
mod output;
mod progress;
mod push;
mod realise;
mod show_derivation;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use output::{CliError, CliResult};

#[derive(Parser)]
#[command(
    name = "buildit",
    version,
    about = "Package-centric, source-based, reproducible container builds"
)]
pub struct Cli {
    /// Physical root of the store (the logical store directory is always /store).
    #[arg(long, global = true, env = "BUILDIT_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with the store directly: add, dump, restore, inspect, verify, collect garbage.
    Store(store::Args),
    /// Debian packages as exact, pinned inputs: resolve, show, lock, fetch.
    Debian(debian::Args),
    /// Check a spec directory and lower it to derivations in the store (nothing built).
    Eval(eval::Args),
    /// Pin a spec's build roots, Debian packages and remote patches in DIR/buildit.lock.
    Lock(lock::Args),
    /// Print derivations (.drv) as JSON, in the shape of `nix show-derivation`.
    ShowDerivation(show_derivation::Args),
    /// Build derivations (or a spec directory's packages) in sandboxes; `--check`
    /// rebuilds valid outputs and compares.
    Realise(realise::RealiseArgs),
    /// Explain why two builds differ: derivations (.drv, spec directories, lock
    /// files) by their causes, outputs (store paths, NARs, directories, images)
    /// file by file. Exit 0 same, 1 different, 2 trouble.
    Diff(diff::Args),
    /// Rebuild outputs with variations (and compare with binary caches): are they
    /// reproducible, and if not, how do the builds differ? Exit 0 yes, 1 no, 2 error.
    Check(check::Args),
    /// Evaluate a spec directory and build it (`buildit DIR` means the same).
    Build(realise::BuildDirArgs),
    /// Print the log of the last build of a derivation (or of an output's deriver).
    Log(log::Args),
    /// Look into images buildit wrote.
    Image(image::Args),
    /// Upload store paths (or a spec's derivations, packages, sources and images)
    /// to a binary cache, signed.
    Push(push::Args),
}

/// `buildit DIR` is `buildit build DIR`, as in the design card: insert `build`
/// before the first operand when it is a directory and not a command.
fn with_default_command(mut argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i].to_string_lossy();
        if a == "--root" {
            i += 2;
            continue;
        }
        if a.starts_with('-') {
            i += 1;
            continue;
        }
        let is_command = cmd
            .get_subcommands()
            .any(|c| c.get_name() == a || c.get_all_aliases().any(|x| x == a));
        if !is_command && std::path::Path::new(&argv[i]).is_dir() {
            argv.insert(i, "build".into());
        }
        break;
    }
    argv
}

/// Options every command shares.
pub struct Global {
    pub root: PathBuf,
    /// Set by the first interrupt while a realisation runs.
    pub cancel: crate::realise::CancelToken,
}

impl Global {
    pub fn open_store(&self) -> CliResult<buildit_store::LocalStore> {
        Ok(buildit_store::LocalStore::open(&self.root)?)
    }
}

pub fn main() -> ExitCode {
    // Before any thread exists: every thread inherits the blocked signals.
    let cancel = interrupt::watch();
    let cli = Cli::parse_from(with_default_command(std::env::args_os().collect()));
    let global = Global {
        cancel,
        root: cli
            .root
            .unwrap_or_else(buildit_store::LocalStore::default_root),
    };
    let result = match cli.command {
        Command::Store(args) => store::exec(&global, args),
        Command::Debian(args) => debian::exec(&global, args),
        Command::Eval(args) => eval::exec(&global, args),
        Command::Lock(args) => lock::exec(&global, args),
        Command::ShowDerivation(args) => show_derivation::exec(&global, args),
        Command::Realise(args) => realise::exec_realise(&global, args),
        Command::Build(args) => realise::exec_build(&global, args),
        Command::Check(args) => check::exec(&global, args),
        Command::Diff(args) => diff::exec(&global, args),
        Command::Log(args) => log::exec(&global, args),
        Command::Image(args) => image::exec(&global, args),
        Command::Push(args) => push::exec(&global, args),
    };
    output::finish(result)
}
