//! `pkg.yaml`: an embedded package, i.e. a recipe from the repository (`base:`) with
//! the user's patches, build options and overrides. Also: resolving the build options
//! of a recipe against `use: {with, without}`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use marked_yaml::Node;

use super::inputs::unresolved;
use super::recipe::{check_recipe_ref, check_url, env_map, parse_source, DepSpec, Recipe};
use super::SourceSpec;
use crate::inroot::{AllowedRoots, ResolveError};
use crate::yaml::{
    describe, did_you_mean, load_yaml, short, top_map, Located, Map, Pairs, SourceFile, SpecError,
    TopLevel,
};

/// `use: {with: [...], without: [...]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UseFlags {
    pub with: Vec<Located<String>>,
    pub without: Vec<Located<String>>,
}

/// Where a patch comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatchSource {
    /// A file of the spec: absolute, without symlinks, inside the spec directory
    /// (or a directory the configuration allows); it exists.
    Local(PathBuf),
    /// An `https://` URL (pinned by hash in the lock file).
    Url(String),
}

/// One patch, applied in the order written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patch {
    pub source: PatchSource,
    /// As written in pkg.yaml (the key), with its position.
    pub written: Located<String>,
    pub description: String,
}

/// A checked pkg.yaml.
#[derive(Clone, Debug)]
pub struct PkgFile {
    pub file: Arc<SourceFile>,
    /// The package directory (as given, joined to the spec dir).
    pub dir: PathBuf,
    /// `CATEGORY/NAME-VERSION` (or without version: the newest).
    pub base: Located<String>,
    pub author: Option<Located<String>>,
    pub patches: Vec<Patch>,
    pub use_flags: UseFlags,
    pub configure_flags: Vec<Located<String>>,
    pub build_depends: Vec<Located<DepSpec>>,
    pub runtime_depends: Vec<Located<DepSpec>>,
    /// A version override; always comes with `source`.
    pub version: Option<Located<String>>,
    pub source: Option<SourceSpec>,
    pub env: Pairs,
}

const KEYS: &[&str] = &[
    "base",
    "author",
    "patches",
    "use",
    "configure-flags",
    "build-depends",
    "runtime-depends",
    "version",
    "source",
    "env",
];
const EXAMPLE: &str = "  base: www-servers/nginx-1.22.1\n  author: Sysadmin42 <sys@admin42.org>\n  patches:\n    patches/https-only.patch: \"This patch denies all plain http requests\"\n  use:\n    with: [ipv6]";
const USE_EXAMPLE: &str = "  use:\n    with:\n      - ipv6\n    without:\n      - http2";
const PATCH_EXAMPLE: &str = "  patches:\n    patches/https-only.patch: \"This patch denies all plain http requests\"\n    https://example.org/fix.patch: \"Fix buffer overruns\"";
const SOURCE_EXAMPLE: &str = "  version: 1.24.0\n  source:\n    url: https://nginx.org/download/nginx-1.24.0.tar.gz\n    sha256: <64 hex digits>";

impl PkgFile {
    /// Parse and check a pkg.yaml whose package directory is `dir` (local patches are
    /// looked up there, and must resolve inside `inputs`).
    pub fn parse(
        file: Arc<SourceFile>,
        dir: &Path,
        inputs: &AllowedRoots,
    ) -> Result<PkgFile, SpecError> {
        let node = load_yaml(&file, TopLevel::Mapping)?;
        let m = top_map(&file, &node, "pkg.yaml", KEYS, EXAMPLE)?;
        let base = m.required_str("base", "  base: www-servers/nginx-1.22.1")?;
        if let Err(msg) = check_recipe_ref(&base) {
            return Err(base.error(msg, None));
        }
        let author = m.str("author")?;
        if let Some(a) = &author {
            check_author(a)?;
        }
        let patches = parse_patches(&m, dir, inputs)?;
        let use_flags = match m.map("use", &["with", "without"], USE_EXAMPLE)? {
            Some(u) => parse_use(&u)?,
            None => UseFlags::default(),
        };
        let deps = |key: &str| -> Result<Vec<Located<DepSpec>>, SpecError> {
            m.str_list(key, &format!("  {key}: [debian:libpcre2-dev]"))?
                .into_iter()
                .map(|s| match DepSpec::parse(&s) {
                    Ok(d) => Ok(s.map(|_| d)),
                    Err(msg) => Err(s.error(msg, None)),
                })
                .collect()
        };
        let build_depends = deps("build-depends")?;
        let runtime_depends = deps("runtime-depends")?;
        let configure_flags = m.str_list("configure-flags", "  configure-flags: [--with-foo]")?;
        let env = env_map(&m)?;
        let version = m.str("version")?;
        let source = match m.map("source", &["url", "sha256"], SOURCE_EXAMPLE)? {
            Some(s) => Some(parse_source(
                &s,
                SOURCE_EXAMPLE,
                &["https", "http", "ftp", "mirror"],
            )?),
            None => None,
        };
        match (&version, &source) {
            (Some(v), None) => {
                return Err(v.error(
                    format!(
                        "a version override ({}) needs a `source:` with its sha256",
                        short(v)
                    ),
                    Some(format!(
                    "the recipe's sources are for its own version; for example:\n{SOURCE_EXAMPLE}"
                )),
                ))
            }
            (None, Some(_)) => {
                return Err(m.key_loc("source").error(
                    "a `source:` override needs a `version:` too",
                    Some(format!("for example:\n{SOURCE_EXAMPLE}")),
                ))
            }
            (Some(v), Some(_)) if !v.starts_with(|c: char| c.is_ascii_digit()) => {
                return Err(v.error(
                    format!("'{}' is not a valid version", short(v)),
                    Some("a version starts with a digit".into()),
                ))
            }
            _ => {}
        }
        Ok(PkgFile {
            dir: dir.to_path_buf(),
            base,
            author,
            patches,
            use_flags,
            configure_flags,
            build_depends,
            runtime_depends,
            version,
            source,
            env,
            file,
        })
    }
}

/// `Name <mail>`, or just a name.
fn check_author(a: &Located<String>) -> Result<(), SpecError> {
    let s = a.trim();
    let ok = match s.find('<') {
        None => !s.is_empty() && !s.contains('>'),
        Some(i) => {
            let mail = &s[i + 1..];
            mail.ends_with('>') && mail[..mail.len() - 1].contains('@')
        }
    };
    if ok {
        Ok(())
    } else {
        Err(a.error(
            format!("'{}' is not an author", short(s)),
            Some("write `author: Name <mail@example.org>` (the mail part is optional)".into()),
        ))
    }
}

fn parse_use(u: &Map<'_>) -> Result<UseFlags, SpecError> {
    let flags = UseFlags {
        with: u.str_list("with", USE_EXAMPLE)?,
        without: u.str_list("without", USE_EXAMPLE)?,
    };
    for w in &flags.with {
        if let Some(o) = flags.without.iter().find(|o| o.value == w.value) {
            return Err(o.error(
                format!("option '{}' is both in `with` and in `without`", short(o)),
                Some(format!(
                    "it is also in `with` on line {}: keep it in one of the two lists",
                    w.loc.line
                )),
            ));
        }
    }
    Ok(flags)
}

fn parse_patches(m: &Map<'_>, dir: &Path, inputs: &AllowedRoots) -> Result<Vec<Patch>, SpecError> {
    let mut patches: Vec<Patch> = Vec::new();
    for (key, value) in m.entries("patches", PATCH_EXAMPLE)? {
        let description = match value {
            Node::Scalar(s) => s.as_str().to_string(),
            other => {
                // A top-level key indented by mistake ends up here as a "patch".
                let help = if KEYS.contains(&key.as_str()) && key.loc.column > 1 {
                    format!(
                        "'{}' is a key of pkg.yaml itself, not a patch: move it left to column 1",
                        key.value
                    )
                } else {
                    format!("each patch is `PATH_OR_URL: \"description\"`, for example:\n{PATCH_EXAMPLE}")
                };
                return Err(key.error(
                    format!(
                        "the patch '{}' needs a description, not {}",
                        short(&key),
                        describe(other)
                    ),
                    Some(help),
                ));
            }
        };
        let written = key.value.trim().to_string();
        let source = if written.contains("://") {
            match written.split_once("://").map(|(s, _)| s) {
                Some("https") => {}
                Some("http") => {
                    return Err(key.error(
                        "this patch is fetched over plain http://, which is insecure",
                        Some(format!(
                            "use https://{}",
                            written.trim_start_matches("http://")
                        )),
                    ))
                }
                _ => {}
            }
            check_url(&key, &["https"])?;
            PatchSource::Url(written.clone())
        } else {
            let path = match inputs.resolve(dir, Path::new(&written)) {
                Ok(p) => Some(p),
                Err(ResolveError::Missing { .. } | ResolveError::NotADirectory { .. }) => None,
                Err(e) => return Err(unresolved(&key, "the patch", &e, inputs)),
            };
            match path {
                Some(p) if !written.is_empty() && p.is_file() => PatchSource::Local(p),
                other => {
                    let what = if other.is_some_and(|p| p.is_dir()) {
                        "is a directory"
                    } else {
                        "does not exist"
                    };
                    return Err(key.error(
                        format!("patch file '{}' {what}", short(&written)),
                        Some(format!(
                            "local patches are paths relative to the package directory ({}); remote ones are https:// URLs",
                            dir.display()
                        )),
                    ));
                }
            }
        };
        if let Some(first) = patches.iter().find(|p| p.source == source) {
            return Err(key.error(
                format!("the patch '{}' is listed twice", short(&written)),
                Some(format!(
                    "it is already listed on line {}",
                    first.written.loc.line
                )),
            ));
        }
        patches.push(Patch {
            source,
            written: key,
            description,
        });
    }
    Ok(patches)
}

/// The enabled options of `recipe`: its defaults, then `use.with` turned on and
/// `use.without` turned off. Unknown options and unmet `requires` point at the
/// user's words.
pub fn resolve_options(
    recipe: &Recipe,
    use_flags: &UseFlags,
) -> Result<BTreeSet<String>, SpecError> {
    for o in use_flags.with.iter().chain(use_flags.without.iter()) {
        if recipe.option(o).is_none() {
            let names: Vec<&str> = recipe.options.iter().map(|x| x.name.as_str()).collect();
            let help = if names.is_empty() {
                format!("{} has no build options", recipe.id)
            } else {
                let list: Vec<String> = recipe
                    .options
                    .iter()
                    .map(|x| {
                        let on = if x.default { " (on by default)" } else { "" };
                        if x.description.is_empty() {
                            format!("  {}{on}", x.name.value)
                        } else {
                            format!("  {}: {}{on}", x.name.value, x.description)
                        }
                    })
                    .collect();
                let hint = did_you_mean(o, &names);
                let hint = if hint.starts_with("did you mean") {
                    format!("{hint} ")
                } else {
                    String::new()
                };
                format!(
                    "{hint}{} has these options:\n{}",
                    recipe.id,
                    list.join("\n")
                )
            };
            return Err(o.error(
                format!("unknown build option '{}' for {}", short(o), recipe.id),
                Some(help),
            ));
        }
    }
    let mut on: BTreeSet<String> = recipe
        .options
        .iter()
        .filter(|o| o.default)
        .map(|o| o.name.value.clone())
        .collect();
    for o in &use_flags.with {
        on.insert(o.value.clone());
    }
    for o in &use_flags.without {
        on.remove(o.as_str());
    }
    for def in &recipe.options {
        if !on.contains(def.name.as_str()) {
            continue;
        }
        for req in &def.requires {
            if on.contains(req.as_str()) {
                continue;
            }
            // Point at what the user wrote: the `without` that turned the required
            // option off, else the `with` that turned this one on.
            let off = use_flags.without.iter().find(|w| w.value == req.value);
            let asked = use_flags.with.iter().find(|w| w.value == def.name.value);
            let err = match (off, asked) {
                (Some(w), _) => w.error(
                    format!(
                        "option '{}' cannot be turned off: '{}' requires it",
                        req.value, def.name.value
                    ),
                    Some(format!(
                        "turn '{}' off as well (add it to `without`), or keep '{}'",
                        def.name.value, req.value
                    )),
                ),
                (None, Some(w)) => w.error(
                    format!("option '{}' requires '{}'", def.name.value, req.value),
                    Some(format!("add '{}' to `with` as well", req.value)),
                ),
                (None, None) => req.error(
                    format!("option '{}' requires '{}'", def.name.value, req.value),
                    None,
                ),
            };
            return Err(err);
        }
    }
    Ok(on)
}
