//! `buildit build DIR` and `buildit realise DRV…|DIR` as operations: evaluate,
//! say where each package will come from, realise, link the outputs, push. What
//! happens on the way is reported to a [`BuildProgress`]; what came of it is the
//! returned [`BuildOutcome`]. Nothing here prints.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use buildit_lang::lower::plan::PlannedPackage;
use buildit_lang::lower::planned::PlannedImage;
use buildit_lang::model::container::ImageFormat;
use buildit_lang::model::trust::Untrusted;
use buildit_lang::model::Config;
use buildit_store::{LocalStore, StoreError, StorePath};

use crate::cache::{BinaryCache, CacheError};
use crate::ops::cache::{self as cache_ops, CacheRequest, CacheRequestError};
use crate::ops::load::{self, SpecOpError};
use crate::ops::realise::{link_results, outputs, realise, SourceOptions, TargetError};
use crate::realise::events::Progress;
use crate::realise::{BuildError, Options, Report};

/// How to build, whatever the targets.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The realiser's options, with the token that cancels it.
    pub realise: Options,
    pub sources: SourceOptions,
    pub caches: CacheRequest,
    /// The link to the (first) output; more get `-1`, `-2`, …, images `-aci`,
    /// `-oci`. `None`: no link (and so no GC root).
    pub out_link: Option<PathBuf>,
}

/// Which images `build` makes (packages are always built).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageChoice {
    /// An OCI image layout directory.
    Oci,
    /// An OCI image as one tar.
    OciArchive,
    /// An appc ACI.
    Aci,
}

/// `buildit build DIR`.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The spec directory.
    pub dir: PathBuf,
    /// Images of one kind only; `None`: all.
    pub images: Option<ImageChoice>,
    pub options: BuildOptions,
    /// After a successful build, push to the configuration's repository.
    pub push: Option<PushRequest>,
}

#[derive(Debug, Clone, Default)]
pub struct PushRequest {
    /// The signing key; `None`: the configuration's `secret-key-file`.
    pub secret_key_file: Option<PathBuf>,
}

/// `buildit realise DRV…|DIR`.
#[derive(Debug, Clone)]
pub struct RealiseRequest {
    /// `.drv` paths or spec directories.
    pub targets: Vec<String>,
    /// Rebuild valid outputs and compare; nothing is linked.
    pub check: bool,
    pub options: BuildOptions,
}

/// Where a package's output is before anything is built.
#[derive(Debug, Clone, Copy)]
pub enum Availability<'a> {
    LocalStore,
    /// In the binary cache at this URL.
    Cache(&'a str),
    Missing,
}

/// What `build` reports as it goes, besides the realiser's own events.
#[derive(Debug, Clone, Copy)]
pub enum BuildEvent<'a> {
    /// A configuration file passed over as untrusted.
    Untrusted { config: &'a Untrusted },
    /// The spec is evaluated; `title` is `author/name-version` or what is known of it.
    Evaluated { title: &'a str },
    /// One of the spec's own packages, and where its output is.
    Package {
        package: &'a PlannedPackage,
        /// `os/arch`.
        platform: &'a str,
        availability: Availability<'a>,
    },
    /// An image that will be made.
    Image { image: &'a PlannedImage },
    /// The realisation is over, whatever its result.
    Realised { report: &'a Report },
    /// The outputs, linked.
    Linked { outputs: &'a [BuiltOutput] },
    /// The upload to the repository ended.
    Uploaded {
        /// The repository's name.
        name: &'a str,
        ok: bool,
        elapsed: Duration,
    },
}

/// The sink of a build: the realiser's events and the build's own.
pub trait BuildProgress: Progress {
    fn build_event(&self, event: BuildEvent<'_>);
}

/// An output of a target.
#[derive(Debug, Clone)]
pub struct BuiltOutput {
    pub drv: StorePath,
    pub path: StorePath,
    /// The file inside the output that is the image (`/oci`, `/image.oci.tar`),
    /// or empty.
    pub inside: String,
}

/// What was uploaded after the build.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub url: String,
    pub paths: Vec<StorePath>,
}

/// What came of a build. Nothing is linked or pushed unless the report is ok
/// (and, for a check, nothing at all).
#[derive(Debug)]
pub struct BuildOutcome {
    pub report: Report,
    pub outputs: Vec<BuiltOutput>,
    pub pushed: Option<Pushed>,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum BuildOpError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Load(#[from] buildit_lang::yaml::SpecError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Spec(#[from] SpecOpError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Caches(#[from] CacheRequestError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("pushing needs a repository to upload to")]
    #[diagnostic(help(
        "add `repository:` with `upload-type` and `upload-path` to .buildit-config.yaml"
    ))]
    NoRepository,
}

/// What to realise, and how its outputs are linked and shown.
struct Target {
    drv: StorePath,
    /// `Some(suffix)`: linked as `LINK-suffix`; `None`: as `LINK`, `LINK-1`, ….
    link: Option<&'static str>,
    inside: &'static str,
}

/// Evaluate the spec in `request.dir`, realise its packages and (chosen) images,
/// link them and, when asked, push the spec's paths.
pub fn build(
    store: &LocalStore,
    request: &BuildRequest,
    progress: &dyn BuildProgress,
) -> Result<BuildOutcome, BuildOpError> {
    let loaded = load::load(&request.dir, &|config| {
        progress.build_event(BuildEvent::Untrusted { config })
    })?;
    let plan = load::eval(&loaded, store)?;
    let var = |k: &str| loaded.vars.get(k).map(|v| v.to_string());
    let title = match (var("author"), var("name"), var("version")) {
        (Some(a), Some(n), Some(v)) => format!("{a}/{n}-{v}"),
        (None, Some(n), Some(v)) => format!("{n}-{v}"),
        (_, Some(n), None) => n,
        _ => loaded.dir.display().to_string(),
    };
    progress.build_event(BuildEvent::Evaluated { title: &title });
    let config = loaded.config.as_ref();
    let caches = cache_ops::for_build(config, &request.options.caches)?;
    let platform = format!(
        "{}/{}",
        var("os").unwrap_or_else(|| "linux".into()),
        var("arch").unwrap_or_else(|| "amd64".into())
    );
    for p in plan.packages.iter().filter(|p| p.direct) {
        let availability = if store.is_valid(&p.out)? {
            Availability::LocalStore
        } else if let Some(c) = caches
            .iter()
            .find(|c| matches!(c.trusted_narinfo(&p.out), Ok(Some(_))))
        {
            Availability::Cache(c.url())
        } else {
            Availability::Missing
        };
        progress.build_event(BuildEvent::Package {
            package: p,
            platform: &platform,
            availability,
        });
    }
    let choice = request.images;
    // An OCI image is one output whatever its form: the choice says which file
    // of it is shown.
    let wanted = |f: ImageFormat| match (f, choice) {
        (_, None) => true,
        (ImageFormat::Aci, Some(c)) => c == ImageChoice::Aci,
        (ImageFormat::Oci, Some(c)) => c != ImageChoice::Aci,
    };
    let images: Vec<&PlannedImage> = plan.images.iter().filter(|i| wanted(i.format)).collect();
    for image in &images {
        progress.build_event(BuildEvent::Image { image });
    }
    let mut targets: Vec<Target> = plan
        .packages
        .iter()
        .filter(|p| p.direct)
        .map(|p| Target {
            drv: p.drv.clone(),
            link: None,
            inside: "",
        })
        .collect();
    for i in images {
        let (link, inside) = match i.format {
            ImageFormat::Aci => ("aci", ""),
            // With every form wanted, the layout directory is the one shown.
            ImageFormat::Oci if choice != Some(ImageChoice::OciArchive) => ("oci", "/oci"),
            ImageFormat::Oci => ("oci", "/image.oci.tar"),
        };
        targets.push(Target {
            drv: i.drv.clone(),
            link: Some(link),
            inside,
        });
    }
    let mut outcome = run(store, &targets, &request.options, config, &caches, progress)?;
    if !outcome.report.ok() {
        return Ok(outcome);
    }
    if let Some(push) = &request.push {
        let (name, url) = cache_ops::upload_target(config).ok_or(BuildOpError::NoRepository)?;
        let key = cache_ops::secret_key(push.secret_key_file.as_deref(), config)?;
        let paths = cache_ops::spec_paths(store, &load::plan_derivations(&plan))?;
        let cache = BinaryCache::new(crate::cache::open(&url)?, 0, Default::default());
        let start = Instant::now();
        let pushed = cache.push(store, &paths, &key, &|_| {});
        progress.build_event(BuildEvent::Uploaded {
            name: &name,
            ok: pushed.is_ok(),
            elapsed: start.elapsed(),
        });
        outcome.pushed = Some(Pushed {
            url,
            paths: pushed?,
        });
    }
    Ok(outcome)
}

/// Realise `.drv`s or spec directories (their packages and images) and link the
/// outputs; with `check`, rebuild valid outputs and compare instead.
pub fn realise_targets(
    store: &LocalStore,
    request: &RealiseRequest,
    progress: &dyn BuildProgress,
) -> Result<BuildOutcome, BuildOpError> {
    let (drvs, config) =
        crate::ops::realise::resolve_targets(store, &request.targets, &|config| {
            progress.build_event(BuildEvent::Untrusted { config })
        })?;
    let targets: Vec<Target> = drvs
        .into_iter()
        .map(|drv| Target {
            drv,
            link: None,
            inside: "",
        })
        .collect();
    let caches = cache_ops::for_build(config.as_ref(), &request.options.caches)?;
    let mut options = request.options.clone();
    options.realise.check = request.check;
    run(
        store,
        &targets,
        &options,
        config.as_ref(),
        &caches,
        progress,
    )
}

fn run(
    store: &LocalStore,
    targets: &[Target],
    options: &BuildOptions,
    config: Option<&Config>,
    caches: &[BinaryCache],
    progress: &dyn BuildProgress,
) -> Result<BuildOutcome, BuildOpError> {
    let fetcher = options.sources.fetcher(config);
    // An interrupt now stops the builds cleanly rather than the whole process.
    options.realise.cancel.arm();
    let drvs: Vec<StorePath> = targets.iter().map(|t| t.drv.clone()).collect();
    let report = realise(store, &drvs, &options.realise, &fetcher, caches, progress)?;
    progress.build_event(BuildEvent::Realised { report: &report });
    let mut outcome = BuildOutcome {
        report,
        outputs: Vec::new(),
        pushed: None,
    };
    if options.realise.check || !outcome.report.ok() {
        return Ok(outcome);
    }
    let mut numbered = Vec::new();
    for t in targets {
        for (drv, path) in outputs(store, std::slice::from_ref(&t.drv))? {
            match (&options.out_link, t.link) {
                (Some(link), Some(suffix)) => {
                    let mut l = link.as_os_str().to_owned();
                    l.push(format!("-{suffix}"));
                    store.add_indirect_root(Path::new(&l), &path)?;
                }
                (None, Some(_)) => {}
                (_, None) => numbered.push(path.clone()),
            }
            outcome.outputs.push(BuiltOutput {
                drv,
                path,
                inside: t.inside.to_string(),
            });
        }
    }
    if let Some(link) = &options.out_link {
        link_results(store, link, &numbered)?;
    }
    progress.build_event(BuildEvent::Linked {
        outputs: &outcome.outputs,
    });
    Ok(outcome)
}
