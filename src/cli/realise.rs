//! `buildit realise DRV…|DIR` and `buildit build DIR`: build what is missing, in
//! sandboxes, and leave `result` links.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use buildit_lang::model::container::ImageFormat;
use buildit_lang::model::{Config, Spec};
use buildit_store::{LocalStore, StorePath};

use super::output::note;
use super::progress::{Reporter, ReporterOptions};
use super::{CliError, CliResult, Global};
use crate::cache::BinaryCache;
use crate::ops::cache as cache_ops;
use crate::ops::debian::FetchOptions;
use crate::ops::load;
use crate::ops::realise::{link_results, outputs, realise, SourceOptions};
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
    /// The caches to substitute from: the config's, `--cache`, `--discover`.
    pub(super) fn caches(&self, config: Option<&Config>) -> CliResult<Vec<BinaryCache>> {
        if self.no_substitute {
            return Ok(Vec::new());
        }
        let mut specs = cache_ops::configured(config);
        let keys = self
            .trusted_keys
            .iter()
            .map(|k| {
                k.parse()
                    .map_err(|e| CliError::usage(format!("--trusted-public-key {k}: {e}"), None))
            })
            .collect::<CliResult<Vec<_>>>()?;
        for url in &self.caches {
            specs.push(cache_ops::CacheSpec {
                url: url.clone(),
                priority: cache_ops::CLI_PRIORITY,
                keys: keys.clone(),
            });
        }
        if let Some(d) = &self.discover {
            for loc in cache_ops::parse_discover(d).0 {
                let mut spec = cache_ops::discover(&loc)?;
                spec.keys.extend(keys.iter().cloned());
                specs.push(spec);
            }
        }
        if self.offline {
            // No network: only caches on this machine.
            specs.retain(|s| s.url.starts_with("file://"));
        }
        Ok(cache_ops::open_all(&specs)?)
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

/// A spec directory: one holding container.yaml.
fn is_spec_dir(arg: &str) -> bool {
    Path::new(arg).join("container.yaml").is_file()
}

pub fn exec_realise(global: &Global, args: RealiseArgs) -> CliResult<()> {
    let store = global.open_store()?;
    let (drvs, config) = resolve_targets(&store, &args.targets)?;
    let targets: Vec<Target> = drvs
        .into_iter()
        .map(|drv| Target {
            drv,
            link: None,
            show: String::new(),
        })
        .collect();
    let caches = args.build.caches(config.as_ref())?;
    run(
        &store,
        &targets,
        &args.build,
        args.check,
        config.as_ref(),
        &caches,
        &global.cancel,
    )
}

pub fn exec_build(global: &Global, args: BuildDirArgs) -> CliResult<()> {
    let loaded = load::load(&args.dir)?;
    let store = global.open_store()?;
    let plan = load::eval(&loaded, &store)?;
    let mut err = std::io::stderr().lock();
    let var = |k: &str| loaded.vars.get(k).map(|v| v.to_string());
    let title = match (var("author"), var("name"), var("version")) {
        (Some(a), Some(n), Some(v)) => format!("{a}/{n}-{v}"),
        (None, Some(n), Some(v)) => format!("{n}-{v}"),
        (_, Some(n), None) => n,
        _ => loaded.dir.display().to_string(),
    };
    writeln!(err, "Building {title}")?;
    let caches = args.build.caches(loaded.config.as_ref())?;
    let platform = format!(
        "{}/{}",
        var("os").unwrap_or_else(|| "linux".into()),
        var("arch").unwrap_or_else(|| "amd64".into())
    );
    for p in plan.packages.iter().filter(|p| p.direct) {
        let from = if p.key == p.id.to_string() {
            format!("recipe {}", p.key)
        } else {
            format!("'./{}'", p.key)
        };
        writeln!(
            err,
            "Processing package from {from} for {platform}.\n    HASH: {}",
            p.out.hash_part()
        )?;
        if store.is_valid(&p.out)? {
            writeln!(err, "    Found {} in the local store.", p.out.hash_part())?;
        } else if let Some(c) = caches
            .iter()
            .find(|c| matches!(c.trusted_narinfo(&p.out), Ok(Some(_))))
        {
            writeln!(err, "    Found {} in {}.", p.out.hash_part(), c.url())?;
        } else {
            writeln!(
                err,
                "    Can't find {} in any known location...\n    Defaulting to local build...",
                p.out.hash_part()
            )?;
        }
    }
    let formats = args.format.map(|f| vec![f]).unwrap_or_else(|| {
        vec![
            ImageFormatArg::Aci,
            ImageFormatArg::Oci,
            ImageFormatArg::OciArchive,
        ]
    });
    let wanted = |f: ImageFormat| {
        formats.iter().any(|x| match f {
            ImageFormat::Aci => *x == ImageFormatArg::Aci,
            ImageFormat::Oci => matches!(x, ImageFormatArg::Oci | ImageFormatArg::OciArchive),
        })
    };
    for i in plan.images.iter().filter(|i| wanted(i.format)) {
        let f = match i.format {
            ImageFormat::Aci => "ACI",
            ImageFormat::Oci => "OCI",
        };
        writeln!(err, "Image {} as {f}: {}", i.title, i.out)?;
    }
    drop(err);
    let mut targets: Vec<Target> = plan
        .packages
        .iter()
        .filter(|p| p.direct)
        .map(|p| Target {
            drv: p.drv.clone(),
            link: None,
            show: String::new(),
        })
        .collect();
    for i in plan.images.iter().filter(|i| wanted(i.format)) {
        let (link, show) = match i.format {
            ImageFormat::Aci => ("aci", ""),
            ImageFormat::Oci if formats.contains(&ImageFormatArg::Oci) => ("oci", "/oci"),
            ImageFormat::Oci => ("oci", "/image.oci.tar"),
        };
        targets.push(Target {
            drv: i.drv.clone(),
            link: Some(link.to_string()),
            show: show.to_string(),
        });
    }
    run(
        &store,
        &targets,
        &args.build,
        false,
        loaded.config.as_ref(),
        &caches,
        &global.cancel,
    )?;
    if args.build.wants_push() {
        let config = loaded.config.as_ref();
        let (name, url) = cache_ops::upload_target(config).ok_or_else(|| {
            CliError::usage(
                "pushing needs a repository to upload to",
                Some("add `repository:` with `upload-type` and `upload-path` to .buildit-config.yaml"),
            )
        })?;
        let key = cache_ops::secret_key(args.build.secret_key_file.as_deref(), config)?;
        let mut drvs: Vec<StorePath> = plan.packages.iter().map(|p| p.drv.clone()).collect();
        drvs.extend(plan.images.iter().map(|i| i.drv.clone()));
        let paths = cache_ops::spec_paths(&store, &drvs)?;
        let cache = BinaryCache::new(crate::cache::open(&url)?, 0, Default::default());
        let start = std::time::Instant::now();
        let pushed = cache.push(&store, &paths, &key, &|_| {});
        let line = super::progress::step_line(
            "Uploading",
            &format!("packages to '{name}'"),
            pushed.is_ok(),
            Some(start.elapsed()),
        );
        note!("{line}");
        let pushed = pushed?;
        note!("{} paths uploaded to {url}", pushed.len());
    }
    Ok(())
}

/// What to realise, and how to show it.
struct Target {
    drv: StorePath,
    /// `Some(suffix)`: linked as `LINK-suffix`; `None`: as `LINK`, `LINK-1`, ….
    link: Option<String>,
    /// Appended to the printed output path (a file inside it).
    show: String,
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

fn run(
    store: &LocalStore,
    targets: &[Target],
    args: &BuildArgs,
    check: bool,
    config: Option<&Config>,
    caches: &[BinaryCache],
    cancel: &CancelToken,
) -> CliResult<()> {
    let fetcher = args.sources().fetcher(config);
    // An interrupt now stops the builds cleanly rather than buildit itself.
    cancel.arm();
    let reporter = Reporter::new(ReporterOptions {
        print_logs: args.print_build_logs,
        quiet: false,
    });
    let drvs: Vec<StorePath> = targets.iter().map(|t| t.drv.clone()).collect();
    let report = realise(
        store,
        &drvs,
        &args.options(check, cancel),
        &fetcher,
        caches,
        &reporter,
    );
    reporter.finish();
    let report = report?;
    summarise(&report, args.keep_going)?;
    if report.interrupted {
        note!("interrupted: running builds were stopped, nothing was registered for them");
        return Err(CliError::Reported(130));
    }
    if check {
        return check_result(&report);
    }
    if !report.ok() {
        return Err(CliError::Reported(1));
    }
    let mut numbered = Vec::new();
    let mut stdout = std::io::stdout().lock();
    for t in targets {
        for (_, out) in outputs(store, std::slice::from_ref(&t.drv))? {
            match &t.link {
                Some(suffix) if !args.no_link => {
                    let mut l = args.out_link.as_os_str().to_owned();
                    l.push(format!("-{suffix}"));
                    store.add_indirect_root(Path::new(&l), &out)?;
                }
                Some(_) => {}
                None => numbered.push(out.clone()),
            }
            writeln!(stdout, "{out}{}", t.show)?;
        }
    }
    if !args.no_link {
        link_results(store, &args.out_link, &numbered)?;
    }
    Ok(())
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

/// `.drv` paths, or spec directories (evaluated: their packages and images), and
/// the configuration that applies.
pub(super) fn resolve_targets(
    store: &LocalStore,
    args: &[String],
) -> CliResult<(Vec<StorePath>, Option<Config>)> {
    let mut drvs = Vec::new();
    let mut spec_loaded: Option<Spec> = None;
    for t in args {
        if is_spec_dir(t) {
            let loaded = load::load(Path::new(t))?;
            let plan = load::eval(&loaded, store)?;
            drvs.extend(
                plan.packages
                    .iter()
                    .filter(|p| p.direct)
                    .map(|p| p.drv.clone()),
            );
            drvs.extend(plan.images.iter().map(|i| i.drv.clone()));
            spec_loaded = Some(loaded);
        } else {
            let (p, _) = store.resolve(t)?;
            if !p.is_derivation() {
                return Err(CliError::usage(
                    format!("{t} is not a derivation (.drv) or a spec directory"),
                    Some("`buildit eval DIR` prints the derivations of a spec"),
                ));
            }
            if !store.is_valid(&p)? {
                return Err(CliError::usage(format!("{p} is not in the store"), None));
            }
            drvs.push(p);
        }
    }
    // Without a spec, the configuration that applies where buildit runs (the
    // current directory, its parents, then the user's).
    let config = match spec_loaded.and_then(|s| s.config) {
        Some(c) => Some(c),
        None => match std::env::current_dir() {
            Ok(d) => load::config_for(&d)?,
            Err(_) => None,
        },
    };
    Ok((drvs, config))
}
