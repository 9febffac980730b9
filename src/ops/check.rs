//! `buildit check`: build, then rebuild N times in fresh sandboxes with
//! variations that expose nondeterminism, and say for each output whether it is
//! reproducible and, when it is not, how the rebuild differs. A binary cache can
//! be challenged the same way: its NAR for each output is compared with ours.

use std::path::PathBuf;

use buildit_store::{Hash, LocalStore, StorePath};
use serde::Serialize;
use thiserror::Error;

use crate::audit::outputs::{self, DiffOptions, OutputDiff, OutputDiffError};
use crate::cache::{BinaryCache, CacheError};
use crate::fetch::Fetcher;
use crate::realise::events::Progress;
use crate::realise::{display_name, BuildError, Options, Report, Variation};

#[derive(Debug, Error)]
pub enum CheckError {
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A round did not finish: the report says which steps failed and why.
    #[error("{what} did not finish")]
    Incomplete { what: String, report: Box<Report> },
    #[error(transparent)]
    Store(#[from] buildit_store::StoreError),
    #[error(transparent)]
    Diff(#[from] OutputDiffError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One check rebuild: its number, how it varied the build, and what it made.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: usize,
    pub variation: String,
    #[serde(serialize_with = "as_string")]
    pub nar_hash: Hash,
    pub matches: bool,
    /// Where the differing rebuild was kept (under the store's `var/check/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<PathBuf>,
}

/// The verdict on one output.
#[derive(Debug, Serialize)]
pub struct OutputCheck {
    pub name: String,
    pub drv: String,
    pub output: String,
    #[serde(serialize_with = "as_string")]
    pub nar_hash: Hash,
    pub reproducible: bool,
    pub rounds: Vec<Round>,
    /// How the first differing rebuild differs from the registered output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<OutputDiff>,
}

/// What a binary cache holds for one output, against ours.
#[derive(Debug, Serialize)]
pub struct Challenge {
    pub cache: String,
    pub output: String,
    /// `same`, `differs`, or `absent`.
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_nar_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<OutputDiff>,
}

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub outputs: Vec<OutputCheck>,
    pub challenges: Vec<Challenge>,
}

impl CheckReport {
    pub fn reproducible(&self) -> bool {
        self.outputs.iter().all(|o| o.reproducible)
            && self.challenges.iter().all(|c| c.verdict != "differs")
    }
}

fn as_string<S: serde::Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&h.to_string())
}

/// The variation of round `round` (1-based) and the cores it gives each build.
/// Odd rounds change everything they can: a tmpfs under /build, the
/// environment reversed, one CPU, a 2.6 kernel in `uname`, and a core count
/// other than the first build's. Even rounds change the core count only (to a
/// third value), so that two rounds can tell the causes apart.
pub fn variation(round: usize, base_cores: usize) -> (Variation, usize) {
    let base = base_cores.max(1);
    if round % 2 == 1 {
        let cores = if base == 1 { 2 } else { 1 };
        (
            Variation {
                reverse_env: true,
                build_dir_tmpfs: true,
                one_cpu: true,
                uname26: true,
            },
            cores,
        )
    } else {
        (Variation::default(), base * 2 + 1)
    }
}

/// `targets` and every derivation below them that buildit builds itself from
/// source (sandboxed builds) or writes (images): what `check --deep` rebuilds.
/// Downloads, `.deb` unpacking and build-root merges are left out: their outputs
/// are pinned by hash or are plain copies of pinned inputs.
pub fn deep_targets(
    store: &LocalStore,
    targets: &[StorePath],
) -> Result<Vec<StorePath>, CheckError> {
    use buildit_store::builtins::Kind;
    let mut out: Vec<StorePath> = targets.to_vec();
    let mut seen: std::collections::BTreeSet<StorePath> = targets.iter().cloned().collect();
    let mut queue: std::collections::VecDeque<StorePath> = targets.iter().cloned().collect();
    while let Some(p) = queue.pop_front() {
        let drv = store.read_derivation(&p)?;
        for input in drv.input_drvs.keys() {
            if !seen.insert(input.clone()) {
                continue;
            }
            let d = store.read_derivation(input)?;
            if !matches!(
                Kind::of(&d),
                Kind::FetchUrl | Kind::UnpackDeb | Kind::BuildRoot
            ) {
                out.push(input.clone());
            }
            queue.push_back(input.clone());
        }
    }
    Ok(out)
}

/// Say in words what a round varied.
pub fn describe(v: Variation, cores: usize) -> String {
    let mut parts = vec![format!("NIX_BUILD_CORES={cores}")];
    if v.one_cpu {
        parts.push("1 CPU".into());
    }
    if v.reverse_env {
        parts.push("environment reversed".into());
    }
    if v.build_dir_tmpfs {
        parts.push("/build on tmpfs".into());
    }
    if v.uname26 {
        parts.push("uname 2.6".into());
    }
    parts.join(", ")
}

pub struct Checker<'a> {
    pub store: &'a LocalStore,
    pub fetcher: &'a Fetcher,
    pub caches: &'a [BinaryCache],
    /// The options of the first build; rounds vary them.
    pub options: Options,
    pub progress: &'a dyn Progress,
    pub diff: DiffOptions,
}

impl Checker<'_> {
    fn realise(&self, options: Options, targets: &[StorePath]) -> Result<Report, BuildError> {
        crate::ops::realise::realise(
            self.store,
            targets,
            &options,
            self.fetcher,
            self.caches,
            self.progress,
        )
    }

    /// Build `targets` (or take them from the caches), then rebuild them `rounds`
    /// times. Only the targets are rebuilt; their inputs are used as they are.
    pub fn check(&self, targets: &[StorePath], rounds: usize) -> Result<CheckReport, CheckError> {
        let first = self.realise(self.options.clone(), targets)?;
        if !first.ok() {
            return Err(CheckError::Incomplete {
                what: "the first build".into(),
                report: Box::new(first),
            });
        }
        self.forget_kept(targets)?;
        let mut outputs: Vec<OutputCheck> = Vec::new();
        for round in 1..=rounds.max(1) {
            let (variation, cores) = variation(round, self.options.cores);
            let options = Options {
                check: true,
                keep_differing: true,
                substitute: false,
                variation,
                cores,
                ..self.options.clone()
            };
            let report = self.realise(options, targets)?;
            if !report.ok() {
                return Err(CheckError::Incomplete {
                    what: format!("check round {round}"),
                    report: Box::new(report),
                });
            }
            for c in report.checked {
                let entry = match outputs
                    .iter_mut()
                    .find(|o| o.output == c.output.to_string())
                {
                    Some(e) => e,
                    None => {
                        let drv = self.store.read_derivation(&c.drv)?;
                        outputs.push(OutputCheck {
                            name: display_name(&c.drv, &drv),
                            drv: c.drv.to_string(),
                            output: c.output.to_string(),
                            nar_hash: c.expected.clone(),
                            reproducible: true,
                            rounds: Vec::new(),
                            diff: None,
                        });
                        outputs.last_mut().expect("just pushed")
                    }
                };
                let matches = c.matches();
                entry.reproducible &= matches;
                if !matches && entry.diff.is_none() {
                    if let Some(kept) = &c.rebuilt {
                        let ours = self.store.physical_path(&c.output);
                        entry.diff = Some(outputs::diff(&ours, kept, &self.diff)?);
                    }
                }
                entry.rounds.push(Round {
                    round,
                    variation: describe(variation, cores),
                    nar_hash: c.actual,
                    matches,
                    kept: c.rebuilt,
                });
            }
        }
        Ok(CheckReport {
            outputs,
            challenges: Vec::new(),
        })
    }

    /// Remove the rebuilds an earlier check kept of these targets' outputs, so
    /// that `var/check/` holds only the latest check's (`NAME.check-ROUND`).
    fn forget_kept(&self, targets: &[StorePath]) -> Result<(), CheckError> {
        let dir = self.store.root().join("var/check");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let names: Vec<String> = crate::ops::realise::outputs(self.store, targets)?
            .into_iter()
            .map(|(_, out)| format!("{}.check-", out.base_name()))
            .collect();
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if names.iter().any(|n| name.starts_with(n.as_str())) {
                buildit_store::local::remove_tree(&e.path())?;
            }
        }
        Ok(())
    }

    /// Compare what each cache holds for `outputs` with the local paths
    /// (Guix's `challenge`). A differing NAR is downloaded into a temp dir, not
    /// the store, and diffed.
    pub fn challenge(
        &self,
        caches: &[BinaryCache],
        outputs: &[StorePath],
    ) -> Result<Vec<Challenge>, CheckError> {
        let mut out = Vec::new();
        for cache in caches {
            for path in outputs {
                let ours = self.store.require_info(path)?;
                let Some(info) = cache.narinfo(path)? else {
                    out.push(Challenge {
                        cache: cache.url().to_string(),
                        output: path.to_string(),
                        verdict: "absent",
                        cache_nar_hash: None,
                        diff: None,
                    });
                    continue;
                };
                let same = info.nar_hash == ours.nar_hash;
                let diff = if same {
                    None
                } else {
                    // In the store's temp area: cleaned even if buildit is killed.
                    let theirs = self.store.temp_tree()?;
                    cache.restore_nar(&info, theirs.path())?;
                    Some(outputs::diff(
                        &self.store.physical_path(path),
                        theirs.path(),
                        &self.diff,
                    )?)
                };
                out.push(Challenge {
                    cache: cache.url().to_string(),
                    output: path.to_string(),
                    verdict: if same { "same" } else { "differs" },
                    cache_nar_hash: Some(info.nar_hash.to_string()),
                    diff,
                });
            }
        }
        Ok(out)
    }
}
