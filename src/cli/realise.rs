//! `buildit realise DRV…|DIR` and `buildit build DIR`: build what is missing, in
//! sandboxes, and leave `result` links.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use buildit_lang::model::container::ImageFormat;

use super::output::note;
use super::progress::{Reporter, ReporterOptions};
use super::{CliError, CliResult, Global};
use crate::ops::build::{
    self as ops_build, Availability, BuildEvent, BuildOptions, BuildOutcome, BuildProgress,
    BuildRequest, ImageChoice, PushRequest, RealiseRequest,
};
use crate::ops::cache::{self as cache_ops, CacheRequest};
use crate::ops::debian::FetchOptions;
use crate::ops::realise::SourceOptions;
use crate::realise::events::{Event, Progress};
use crate::realise::{CancelToken, Options, Report};

/// Options of every command that builds.
#[derive(clap::Args, Debug, Clone)]
pub struct BuildArgs {
    /// Steps to run at once.
    #[arg(short = 'j', long, value_name = "N", default_value_t = 1)]
    jobs: usize,
    /// Cores each build may use (NIX_BUILD_CORES); default: all.
    #[arg(long, value_name = "N")]
    cores: Option<usize>,
    /// Go on with what does not depend on a failed step.
    #[arg(short = 'k', long)]
    keep_going: bool,
    /// Kill a build that runs longer than this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Kill a build that prints nothing for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    max_silent_time: Option<u64>,
    /// At most this many processes and threads at once in one build (0: no
    /// limit of buildit's own).
    #[arg(long, value_name = "N", default_value_t = crate::realise::DEFAULT_MAX_PROCESSES)]
    max_processes: u64,
    /// Keep the build directory of a failed build (under the store's var/kept/).
    #[arg(short = 'K', long)]
    keep_failed: bool,
    /// A directory of source files, matched by hash (repeatable); tried before any
    /// download.
    #[arg(long = "source-dir", value_name = "DIR")]
    source_dirs: Vec<PathBuf>,
    /// A directory of .deb files, matched by name (repeatable).
    #[arg(long = "deb-dir", value_name = "DIR")]
    deb_dirs: Vec<PathBuf>,
    /// Never download: sources must be in the store or the given directories.
    #[arg(long)]
    offline: bool,
    /// Print every build's log as it runs, prefixed with the package name.
    #[arg(short = 'L', long)]
    print_build_logs: bool,
    /// Where the link to the (first) output goes; more outputs get `-1`, `-2`, ….
    #[arg(short = 'o', long, value_name = "LINK", default_value = "result")]
    out_link: PathBuf,
    /// Leave no link (and so no GC root).
    #[arg(long)]
    no_link: bool,
    /// Also take missing paths from this binary cache (repeatable): file://,
    /// http(s)://, s3://, ssh://, oci://.
    #[arg(long = "cache", value_name = "URL")]
    caches: Vec<String>,
    /// A public key (`name:base64`) trusted for the `--cache` caches (repeatable).
    #[arg(long = "trusted-public-key", value_name = "KEY")]
    trusted_keys: Vec<String>,
    /// Build everything here: take nothing from binary caches.
    #[arg(long)]
    no_substitute: bool,
    /// `LOCATION[,LOCATION…][,push=True]`: caches found the appc way (or URLs), and
    /// whether to push to the repository after a successful build.
    #[arg(long, value_name = "LOCATIONS")]
    discover: Option<String>,
    /// After a successful build, push to the configuration's `repository`.
    #[arg(long)]
    push: bool,
    /// The key that signs what is pushed (default: the config's `secret-key-file`).
    #[arg(long, value_name = "FILE")]
    secret_key_file: Option<PathBuf>,
}

impl BuildArgs {
    /// The caches to ask besides the configuration's: `--cache`, `--discover`.
    pub(super) fn cache_request(&self) -> CacheRequest {
        CacheRequest {
            substitute: !self.no_substitute,
            urls: self.caches.clone(),
            trusted_keys: self.trusted_keys.clone(),
            discover: self
                .discover
                .as_deref()
                .map(|d| cache_ops::parse_discover(d).0)
                .unwrap_or_default(),
            offline: self.offline,
        }
    }

    fn wants_push(&self) -> bool {
        self.push
            || self
                .discover
                .as_deref()
                .is_some_and(|d| cache_ops::parse_discover(d).1)
    }

    pub(super) fn options(&self, check: bool, cancel: &CancelToken) -> Options {
        let mut o = Options {
            cancel: cancel.clone(),
            jobs: self.jobs.max(1),
            keep_going: self.keep_going,
            timeout: self.timeout.map(Duration::from_secs),
            max_silent_time: self.max_silent_time.map(Duration::from_secs),
            max_processes: (self.max_processes > 0).then_some(self.max_processes),
            keep_failed: self.keep_failed,
            check,
            substitute: !self.no_substitute,
            ..Default::default()
        };
        if let Some(c) = self.cores {
            o.cores = c.max(1);
        }
        o
    }

    pub(super) fn print_build_logs(&self) -> bool {
        self.print_build_logs
    }

    pub(super) fn keep_going(&self) -> bool {
        self.keep_going
    }

    pub(super) fn sources(&self) -> SourceOptions {
        SourceOptions {
            fetch: FetchOptions {
                deb_dirs: self.deb_dirs.clone(),
                offline: self.offline,
                jobs: self.jobs.max(1),
            },
            source_dirs: self.source_dirs.clone(),
        }
    }

    fn build_options(&self, cancel: &CancelToken) -> BuildOptions {
        BuildOptions {
            realise: self.options(false, cancel),
            sources: self.sources(),
            caches: self.cache_request(),
            out_link: (!self.no_link).then(|| self.out_link.clone()),
        }
    }
}

#[derive(clap::Args)]
pub struct RealiseArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// Rebuild the given derivations (whose outputs are valid) in fresh sandboxes
    /// and report whether the NAR hashes match.
    #[arg(long)]
    check: bool,
    /// `.drv` paths, or a spec directory (evaluated first).
    #[arg(required = true, value_name = "DRV|DIR")]
    targets: Vec<String>,
}

#[derive(clap::Args)]
pub struct BuildDirArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// Build the images of one format only (packages are always built).
    #[arg(long, value_enum)]
    format: Option<ImageFormatArg>,
    /// The spec directory (holding container.yaml).
    dir: PathBuf,
}

pub fn exec_realise(global: &Global, args: RealiseArgs) -> CliResult<()> {
    let store = global.open_store()?;
    let request = RealiseRequest {
        targets: args.targets,
        check: args.check,
        options: args.build.build_options(&global.cancel),
    };
    let view = BuildView::new(&args.build);
    let outcome = view.finish(
        ops_build::realise_targets(&store, &request, &view),
        args.check,
    )?;
    if args.check {
        return check_result(&outcome.report);
    }
    Ok(())
}

pub fn exec_build(global: &Global, args: BuildDirArgs) -> CliResult<()> {
    let store = global.open_store()?;
    let request = BuildRequest {
        dir: args.dir,
        images: args.format.map(|f| match f {
            ImageFormatArg::Oci => ImageChoice::Oci,
            ImageFormatArg::OciArchive => ImageChoice::OciArchive,
            ImageFormatArg::Aci => ImageChoice::Aci,
        }),
        push: args.build.wants_push().then(|| PushRequest {
            secret_key_file: args.build.secret_key_file.clone(),
        }),
        options: args.build.build_options(&global.cancel),
    };
    let view = BuildView::new(&args.build);
    let outcome = view.finish(ops_build::build(&store, &request, &view), false)?;
    if let Some(p) = &outcome.pushed {
        note!("{} paths uploaded to {}", p.paths.len(), p.url);
    }
    Ok(())
}

/// `--format`: build only images of one format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormatArg {
    /// An OCI image layout directory.
    Oci,
    /// An OCI image as one tar (`oci-archive:`).
    OciArchive,
    /// An appc ACI.
    Aci,
}

/// Renders a build as it goes: the realiser's events through the [`Reporter`],
/// the build's own on stderr, the outputs on stdout.
struct BuildView {
    reporter: Reporter,
    keep_going: bool,
    /// The first write that failed: events cannot return it, the command does.
    failed: Mutex<Option<CliError>>,
}

impl BuildView {
    fn new(args: &BuildArgs) -> BuildView {
        BuildView {
            reporter: Reporter::new(ReporterOptions {
                print_logs: args.print_build_logs,
                quiet: false,
            }),
            keep_going: args.keep_going,
            failed: Mutex::new(None),
        }
    }

    fn render(&self, event: BuildEvent<'_>) -> CliResult<()> {
        match event {
            BuildEvent::Untrusted { config } => super::output::warn_untrusted(config),
            BuildEvent::Evaluated { title } => {
                writeln!(std::io::stderr(), "Building {title}")?;
            }
            BuildEvent::Package {
                package: p,
                platform,
                availability,
            } => {
                let from = if p.key == p.id.to_string() {
                    format!("recipe {}", p.key)
                } else {
                    format!("'./{}'", p.key)
                };
                let hash = p.out.hash_part();
                let mut err = std::io::stderr().lock();
                writeln!(
                    err,
                    "Processing package from {from} for {platform}.\n    HASH: {hash}"
                )?;
                match availability {
                    Availability::LocalStore => {
                        writeln!(err, "    Found {hash} in the local store.")?
                    }
                    Availability::Cache(url) => writeln!(err, "    Found {hash} in {url}.")?,
                    Availability::Missing => writeln!(
                        err,
                        "    Can't find {hash} in any known location...\n    Defaulting to local build..."
                    )?,
                }
            }
            BuildEvent::Image { image } => {
                let f = match image.format {
                    ImageFormat::Aci => "ACI",
                    ImageFormat::Oci => "OCI",
                };
                writeln!(
                    std::io::stderr(),
                    "Image {} as {f}: {}",
                    image.title,
                    image.out
                )?;
            }
            BuildEvent::Realised { report } => {
                self.reporter.finish();
                summarise(report, self.keep_going)?;
            }
            BuildEvent::Linked { outputs } => {
                let mut stdout = std::io::stdout().lock();
                for o in outputs {
                    writeln!(stdout, "{}{}", o.path, o.inside)?;
                }
            }
            BuildEvent::Uploaded { name, ok, elapsed } => {
                let line = super::progress::step_line(
                    "Uploading",
                    &format!("packages to '{name}'"),
                    ok,
                    Some(elapsed),
                );
                note!("{line}");
            }
        }
        Ok(())
    }

    /// The outcome, once what it says has been rendered; a failed or
    /// interrupted realisation is an exit status.
    fn finish(
        &self,
        result: Result<BuildOutcome, ops_build::BuildOpError>,
        check: bool,
    ) -> CliResult<BuildOutcome> {
        self.reporter.finish();
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(e) = failed {
            return Err(e);
        }
        let outcome = result?;
        if outcome.report.interrupted {
            note!("interrupted: running builds were stopped, nothing was registered for them");
            return Err(CliError::Reported(130));
        }
        // A check's verdict says more than its status: the caller renders it.
        if !check && !outcome.report.ok() {
            return Err(CliError::Reported(1));
        }
        Ok(outcome)
    }
}

impl Progress for BuildView {
    fn event(&self, event: Event<'_>) {
        self.reporter.event(event);
    }
}

impl BuildProgress for BuildView {
    fn build_event(&self, event: BuildEvent<'_>) {
        if let Err(e) = self.render(event) {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.get_or_insert(e);
        }
    }
}

/// What was built, what failed and why, on stderr.
pub(super) fn summarise(report: &Report, keep_going: bool) -> CliResult<()> {
    let mut err = std::io::stderr().lock();
    for f in &report.failed {
        writeln!(err, "error: {} failed: {}", f.name, f.reason)?;
        if let Some((path, tail)) = &f.log {
            if !tail.is_empty() {
                writeln!(err, "  last {} lines of the log:", tail.len())?;
                for l in tail {
                    writeln!(err, "  > {l}")?;
                }
            }
            writeln!(
                err,
                "  full log: {} (buildit log {})",
                path.display(),
                f.drv
            )?;
        }
    }
    let why = if report.interrupted {
        "interrupted"
    } else if keep_going {
        "an input failed"
    } else {
        "after a failure; -k (--keep-going) builds what does not depend on it"
    };
    for s in &report.cancelled {
        writeln!(err, "cancelled: {s} ({why})")?;
    }
    for s in &report.skipped {
        writeln!(err, "not built: {s} ({why})")?;
    }
    for (name, note) in &report.notes {
        writeln!(err, "note: {name}: {note}")?;
    }
    for why in &report.not_substituted {
        writeln!(err, "not from a cache: {why}")?;
    }
    let mut parts = vec![format!("{} built", report.built.len())];
    if !report.substituted.is_empty() {
        parts.push(format!("{} downloaded", report.substituted.len()));
    }
    parts.push(format!("{} already valid", report.already_valid));
    if !report.checked.is_empty() {
        parts.push(format!("{} checked", report.checked.len()));
    }
    if !report.failed.is_empty() {
        parts.push(format!("{} failed", report.failed.len()));
    }
    if !report.cancelled.is_empty() {
        parts.push(format!("{} cancelled", report.cancelled.len()));
    }
    if !report.skipped.is_empty() {
        parts.push(format!("{} not built", report.skipped.len()));
    }
    writeln!(err, "{}", parts.join(", "))?;
    Ok(())
}

fn check_result(report: &Report) -> CliResult<()> {
    let mut out = std::io::stdout().lock();
    let mut differ = 0;
    for c in &report.checked {
        if c.matches() {
            writeln!(out, "{} reproducible ({})", c.output, c.actual)?;
        } else {
            differ += 1;
            writeln!(
                out,
                "{} DIFFERS: registered {}, rebuilt {}",
                c.output, c.expected, c.actual
            )?;
        }
    }
    if differ > 0 {
        note!("`buildit check` rebuilds with variations and shows how the outputs differ");
    }
    if differ > 0 || !report.ok() {
        return Err(CliError::Reported(1));
    }
    Ok(())
}
