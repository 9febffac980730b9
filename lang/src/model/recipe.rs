//! Recipe files: `recipes/CATEGORY/NAME/NAME-VERSION.yaml` in a recipe repository.
//! A recipe says where the source is (by sha256), which build root and dependencies
//! it needs, which build options it has, and the shell of each build phase.

use std::cmp::Ordering;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use marked_yaml::Node;

use crate::yaml::{
    check_sha256, load_yaml, node_loc, short, top_map, Located, Map, Pairs, SourceFile, SpecError,
    TopLevel,
};

/// A recipe at an exact version: `CATEGORY/NAME-VERSION`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecipeId {
    pub category: String,
    pub name: String,
    pub version: String,
}

impl fmt::Display for RecipeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}-{}", self.category, self.name, self.version)
    }
}

/// A dependency as written: `debian:NAME`, `CATEGORY/NAME` or `CATEGORY/NAME-VERSION`.
/// A recipe reference keeps its text: where the name ends and the version starts is
/// decided by the repository (see `Repository::find`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DepSpec {
    Debian(String),
    Recipe(String),
}

impl DepSpec {
    /// Check the shape of a dependency; the message says what is wrong.
    pub fn parse(s: &str) -> Result<DepSpec, String> {
        let s = s.trim();
        if let Some(name) = s.strip_prefix("debian:") {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
            {
                return Err(format!(
                    "'{}' is not a Debian package name (lowercase letters, digits, + - .; versions are pinned in buildit.lock)",
                    short(name)
                ));
            }
            return Ok(DepSpec::Debian(name.to_string()));
        }
        check_recipe_ref(s)?;
        Ok(DepSpec::Recipe(s.to_string()))
    }
}

impl fmt::Display for DepSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DepSpec::Debian(n) => write!(f, "debian:{n}"),
            DepSpec::Recipe(r) => f.write_str(r),
        }
    }
}

/// Characters of category, name and version parts.
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+-._".contains(c)
}

/// `CATEGORY/NAME[-VERSION]`, shape only.
pub(crate) fn check_recipe_ref(s: &str) -> Result<(), String> {
    let help = "a recipe is named CATEGORY/NAME or CATEGORY/NAME-VERSION (e.g. www-servers/nginx-1.22.1), a Debian package debian:NAME";
    let Some((cat, rest)) = s.split_once('/') else {
        return Err(format!("'{}' is not a recipe name: {help}", short(s)));
    };
    if cat.is_empty()
        || rest.is_empty()
        || rest.contains('/')
        || !cat.chars().all(name_char)
        || !rest.chars().all(|c| name_char(c) || "~".contains(c))
    {
        return Err(format!("'{}' is not a recipe name: {help}", short(s)));
    }
    Ok(())
}

/// One source archive: URL and its sha256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSpec {
    pub url: Located<String>,
    /// Lowercase hex.
    pub sha256: Located<String>,
}

/// A build option (a USE flag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionDef {
    pub name: Located<String>,
    pub description: String,
    pub default: bool,
    pub configure_flags: Vec<Located<String>>,
    pub build_depends: Vec<Located<DepSpec>>,
    pub runtime_depends: Vec<Located<DepSpec>>,
    pub env: Pairs,
    /// Options that must be enabled too when this one is.
    pub requires: Vec<Located<String>>,
}

/// Shell snippets of the build phases; a missing one uses the builder's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    pub unpack: Option<Located<String>>,
    pub patch: Option<Located<String>>,
    pub configure: Option<Located<String>>,
    pub build: Option<Located<String>>,
    pub install: Option<Located<String>>,
    pub check: Option<Located<String>>,
}

/// A checked recipe.
#[derive(Clone, Debug)]
pub struct Recipe {
    pub file: Arc<SourceFile>,
    pub id: RecipeId,
    pub name: Located<String>,
    pub version: Located<String>,
    pub description: Option<Located<String>>,
    pub homepage: Option<Located<String>>,
    pub license: Option<Located<String>>,
    /// At least one.
    pub sources: Vec<SourceSpec>,
    pub build_root: Located<String>,
    pub build_depends: Vec<Located<DepSpec>>,
    pub runtime_depends: Vec<Located<DepSpec>>,
    /// Flags for every build of this recipe (before the options').
    pub configure_flags: Vec<Located<String>>,
    /// Environment for every build of this recipe (options' and pkg.yaml's win).
    pub env: Pairs,
    /// In file order.
    pub options: Vec<OptionDef>,
    pub phases: Phases,
}

const KEYS: &[&str] = &[
    "name",
    "version",
    "description",
    "homepage",
    "license",
    "sources",
    "build-root",
    "build-depends",
    "runtime-depends",
    "configure-flags",
    "env",
    "options",
    "phases",
];
const OPTION_KEYS: &[&str] = &[
    "description",
    "default",
    "configure-flags",
    "build-depends",
    "runtime-depends",
    "env",
    "requires",
];
const PHASES: &[&str] = &["unpack", "patch", "configure", "build", "install", "check"];
const SOURCE_KEYS: &[&str] = &["url", "sha256"];

const EXAMPLE: &str = "  name: hello\n  version: 2.10\n  sources:\n    - url: https://ftp.gnu.org/gnu/hello/hello-2.10.tar.gz\n      sha256: 31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b\n  build-root: debian-12-c";
const OPTION_EXAMPLE: &str = "  options:\n    ssl:\n      description: HTTPS support\n      default: true\n      configure-flags: [--with-http_ssl_module]\n      build-depends: [debian:libssl-dev]";
const SOURCE_EXAMPLE: &str =
    "  sources:\n    - url: https://example.org/foo-1.0.tar.gz\n      sha256: <64 hex digits>";

/// Where a recipe file must be: `.../CATEGORY/NAME/NAME-VERSION.yaml`. Returns
/// (category, directory name, file stem).
fn path_parts(path: &Path) -> Option<(String, String, String)> {
    if path.extension()? != "yaml" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?.to_string();
    let dir = path.parent()?;
    let name = dir.file_name()?.to_str()?.to_string();
    let cat = dir.parent()?.file_name()?.to_str()?.to_string();
    Some((cat, name, stem))
}

impl Recipe {
    pub fn load(path: &Path) -> Result<Recipe, SpecError> {
        Recipe::parse(Arc::new(SourceFile::read(path)?))
    }

    /// Parse and check a recipe; its path must be `.../CATEGORY/NAME/NAME-VERSION.yaml`
    /// with the name and version written in it.
    pub fn parse(file: Arc<SourceFile>) -> Result<Recipe, SpecError> {
        let node = load_yaml(&file, TopLevel::Mapping)?;
        let m = top_map(&file, &node, "this recipe", KEYS, EXAMPLE)?;
        let name = m.required_str("name", EXAMPLE)?;
        let version = m.required_str("version", EXAMPLE)?;

        let Some((category, dir_name, stem)) = path_parts(&file.path) else {
            return Err(SpecError::File {
                path: file.path.display().to_string(),
                message: "a recipe file must be at CATEGORY/NAME/NAME-VERSION.yaml".into(),
                help: Some("e.g. recipes/www-servers/nginx/nginx-1.22.1.yaml".into()),
            });
        };
        if !name.chars().all(name_char) || name.starts_with('-') {
            return Err(name.error(
                format!("'{}' is not a valid recipe name", short(&name)),
                Some("use letters, digits and + - . _".into()),
            ));
        }
        if !version.starts_with(|c: char| c.is_ascii_digit())
            || !version.chars().all(|c| name_char(c) || c == '~')
        {
            return Err(version.error(
                format!("'{}' is not a valid version", short(&version)),
                Some("a version starts with a digit and uses letters, digits and + - . _ ~".into()),
            ));
        }
        if name.value != dir_name {
            return Err(name.error(
                format!(
                    "this recipe is named '{}', but it is in the directory of '{dir_name}'",
                    short(&name)
                ),
                Some(format!(
                    "a recipe lives at CATEGORY/NAME/NAME-VERSION.yaml: rename the directory, or write `name: {dir_name}`"
                )),
            ));
        }
        let expected_stem = format!("{}-{}", name.value, version.value);
        if stem != expected_stem {
            let file_version = stem.strip_prefix(&format!("{dir_name}-")).unwrap_or(&stem);
            return Err(version.error(
                format!(
                    "this recipe says version {}, but its file is named {stem}.yaml",
                    short(&version)
                ),
                Some(format!(
                    "rename the file to {expected_stem}.yaml, or write `version: {file_version}`"
                )),
            ));
        }
        let id = RecipeId {
            category,
            name: name.value.clone(),
            version: version.value.clone(),
        };

        let sources = match m.get("sources") {
            None => return Err(m.missing("sources", SOURCE_EXAMPLE)),
            Some(Node::Sequence(seq)) if !seq.is_empty() => seq
                .iter()
                .map(|n| {
                    let s = Map::new(
                        &file,
                        n,
                        "a source",
                        node_loc(&file, n),
                        SOURCE_KEYS,
                        SOURCE_EXAMPLE,
                    )?;
                    parse_source(&s, SOURCE_EXAMPLE, &["https", "http", "ftp", "mirror"])
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => {
                return Err(node_loc(&file, other).error(
                    "'sources' must be a list with at least one {url, sha256}",
                    Some(format!("for example:\n{SOURCE_EXAMPLE}")),
                ))
            }
        };
        let build_root = m.required_str("build-root", "  build-root: debian-12-c")?;
        let build_depends = dep_list(&m, "build-depends")?;
        let runtime_depends = dep_list(&m, "runtime-depends")?;
        let configure_flags = m.str_list("configure-flags", "  configure-flags: [--with-foo]")?;
        let env = env_map(&m)?;

        let mut options = Vec::new();
        for (key, node) in m.entries("options", OPTION_EXAMPLE)? {
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_+".contains(c))
            {
                return Err(key.error(
                    format!("'{}' is not a valid option name", short(&key)),
                    Some("use letters, digits and - _ +".into()),
                ));
            }
            let o = Map::new(
                &file,
                node,
                format!("option '{}'", key.value),
                key.loc.clone(),
                OPTION_KEYS,
                OPTION_EXAMPLE,
            )?;
            options.push(OptionDef {
                description: o.str("description")?.map(|d| d.value).unwrap_or_default(),
                default: o.bool("default")?.map(|d| d.value).unwrap_or(false),
                configure_flags: o.str_list("configure-flags", OPTION_EXAMPLE)?,
                build_depends: dep_list(&o, "build-depends")?,
                runtime_depends: dep_list(&o, "runtime-depends")?,
                env: env_map(&o)?,
                requires: o.str_list("requires", "      requires: [ssl]")?,
                name: key,
            });
        }
        // `requires` must name options of this recipe, and the defaults must satisfy
        // them: a user who changes nothing must get a valid set.
        for o in &options {
            for r in &o.requires {
                let Some(req) = options.iter().find(|x| x.name.value == r.value) else {
                    let names: Vec<&str> = options.iter().map(|x| x.name.as_str()).collect();
                    return Err(r.error(
                        format!(
                            "option '{}' requires '{}', which this recipe does not have",
                            o.name.value,
                            short(r)
                        ),
                        Some(crate::yaml::did_you_mean(r, &names)),
                    ));
                };
                if o.default && !req.default {
                    return Err(r.error(
                        format!(
                            "option '{}' is on by default but requires '{}', which is off by default",
                            o.name.value, req.name.value
                        ),
                        Some(format!("turn '{}' on by default, or '{}' off", req.name.value, o.name.value)),
                    ));
                }
            }
        }

        let mut phases = Phases::default();
        if let Some(p) = m.map(
            "phases",
            PHASES,
            "  phases:\n    build: make -j1\n    install: make install DESTDIR=$out",
        )? {
            phases = Phases {
                unpack: p.str("unpack")?,
                patch: p.str("patch")?,
                configure: p.str("configure")?,
                build: p.str("build")?,
                install: p.str("install")?,
                check: p.str("check")?,
            };
        }

        Ok(Recipe {
            id,
            name,
            version,
            description: m.str("description")?,
            homepage: m.str("homepage")?,
            license: m.str("license")?,
            sources,
            build_root,
            build_depends,
            runtime_depends,
            configure_flags,
            env,
            options,
            phases,
            file,
        })
    }

    pub fn option(&self, name: &str) -> Option<&OptionDef> {
        self.options.iter().find(|o| o.name.value == name)
    }
}

/// `{url, sha256}` with the URL's scheme among `schemes`.
pub(crate) fn parse_source(
    m: &Map<'_>,
    example: &str,
    schemes: &[&str],
) -> Result<SourceSpec, SpecError> {
    let url = m.required_str("url", example)?;
    let sha = m.required_str("sha256", example)?;
    check_url(&url, schemes)?;
    let hex = check_sha256(&sha)?;
    Ok(SourceSpec {
        url,
        sha256: sha.map(|_| hex),
    })
}

/// A URL with one of `schemes`; `mirror://NAME/PATH` needs a name and a path.
pub(crate) fn check_url(url: &Located<String>, schemes: &[&str]) -> Result<(), SpecError> {
    let allowed = schemes
        .iter()
        .map(|s| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(", ");
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(url.error(
            format!("'{}' is not a URL", short(url)),
            Some(format!("a URL starts with one of: {allowed}")),
        ));
    };
    if !schemes.contains(&scheme) {
        return Err(url.error(
            format!("URL scheme '{scheme}://' is not supported here"),
            Some(format!("use one of: {allowed}")),
        ));
    }
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    // `file:///path` has an empty host, as RFC 8089 allows.
    if (host.is_empty() && scheme != "file") || url.contains(char::is_whitespace) {
        return Err(url.error(
            format!("'{}' is not a URL", short(url)),
            Some(format!("a URL looks like {scheme}://host/path")),
        ));
    }
    if scheme == "mirror" && path.is_empty() {
        return Err(url.error(
            "a mirror:// URL needs a path after the mirror name",
            Some("e.g. mirror://gnu/hello/hello-2.10.tar.gz".into()),
        ));
    }
    Ok(())
}

fn dep_list(m: &Map<'_>, key: &str) -> Result<Vec<Located<DepSpec>>, SpecError> {
    m.str_list(
        key,
        &format!("  {key}: [debian:libssl-dev, dev-libs/pcre-8.45]"),
    )?
    .into_iter()
    .map(|s| match DepSpec::parse(&s) {
        Ok(d) => Ok(s.map(|_| d)),
        Err(msg) => Err(s.error(msg, None)),
    })
    .collect()
}

/// `env: {NAME: value}` with names a shell accepts.
pub(crate) fn env_map(m: &Map<'_>) -> Result<Pairs, SpecError> {
    let entries = m.str_map("env", "  env:\n    CFLAGS: -O2")?;
    for (k, _) in &entries {
        let ok = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(k.error(
                format!("'{}' is not an environment variable name", short(k)),
                Some("use letters, digits and _, not starting with a digit".into()),
            ));
        }
    }
    Ok(entries)
}

/// Compare versions the way dpkg does (without epochs): alternating runs of
/// non-digits (compared character by character, letters before other characters, `~`
/// before everything, even the end) and digits (compared as numbers). Versions that
/// dpkg calls equal (`1.01`, `1.1`) are ordered by their text, so the order is total.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn order(c: Option<&u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(*c),
            Some(c) => i32::from(*c) + 256,
        }
    }
    let digit = |s: &[u8], i: usize| s.get(i).is_some_and(u8::is_ascii_digit);
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < x.len() || j < y.len() {
        while (i < x.len() && !digit(x, i)) || (j < y.len() && !digit(y, j)) {
            let (cx, cy) = (order(x.get(i)), order(y.get(j)));
            if cx != cy {
                return cx.cmp(&cy);
            }
            i += 1;
            j += 1;
        }
        while x.get(i) == Some(&b'0') {
            i += 1;
        }
        while y.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(x, i) && digit(y, j) {
            if first_diff == Ordering::Equal {
                first_diff = x[i].cmp(&y[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(x, i) {
            return Ordering::Greater;
        }
        if digit(y, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    a.cmp(b)
}

/// The workspace's one way for a test to skip (a failure under CI).
#[cfg(test)]
#[path = "../../../tests/common/skip.rs"]
mod test_skip;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str, text: &str) -> Result<Recipe, SpecError> {
        Recipe::parse(Arc::new(SourceFile {
            path: path.into(),
            text: text.into(),
        }))
    }

    const GOOD: &str = "name: hello\nversion: 2.10\nsources:\n  - url: https://ftp.gnu.org/gnu/hello/hello-2.10.tar.gz\n    sha256: 31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b\nbuild-root: c\nbuild-depends: [debian:gcc, dev-libs/foo]\noptions:\n  nls:\n    description: translations\n    default: true\n  x:\n    requires: [nls]\nphases:\n  build: make\n";

    #[test]
    fn good_recipe() {
        let r = parse("r/app-misc/hello/hello-2.10.yaml", GOOD).unwrap();
        assert_eq!(r.id.to_string(), "app-misc/hello-2.10");
        assert_eq!(r.options.len(), 2);
        assert!(r.options[0].default);
        assert_eq!(r.build_depends[0].value, DepSpec::Debian("gcc".into()));
        assert_eq!(r.phases.build.as_deref().map(String::as_str), Some("make"));
    }

    #[test]
    fn path_must_match() {
        let e = parse("r/app-misc/hello/hello-2.11.yaml", GOOD).unwrap_err();
        assert!(
            e.to_string().contains("file is named hello-2.11.yaml"),
            "{e}"
        );
        let e = parse("r/app-misc/hullo/hello-2.10.yaml", GOOD).unwrap_err();
        assert!(e.to_string().contains("directory of 'hullo'"), "{e}");
    }

    #[test]
    fn versions() {
        let mut v = vec![
            "1.22.1",
            "1.9.0",
            "1.22.1-p1",
            "1.22",
            "1.100.0",
            "1.22.1a",
            "1.22~rc1",
        ];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            v,
            [
                "1.9.0",
                "1.22~rc1",
                "1.22",
                "1.22.1",
                "1.22.1a",
                "1.22.1-p1",
                "1.100.0"
            ]
        );
    }

    /// The order dpkg itself gives (`dpkg --compare-versions`) over versions of
    /// every shape a recipe may write. A recipe's version is all upstream version
    /// to dpkg: each is given with the Debian revision `-0`, so that a `-` in it
    /// stays in the upstream part. Where dpkg calls two versions equal, ours orders
    /// them by their text.
    #[test]
    fn versions_are_ordered_as_dpkg_orders_them() {
        let Some(dpkg) = super::test_skip::require_tool("dpkg", "Debian's dpkg") else {
            return;
        };
        let versions: Vec<&str> = "0 00 0.0 1 1.0 1.00 1.01 1.1 1.1a 1.1b 1.1A 1.1+b1 1.1+dfsg \
            1.1~ 1.1~~ 1.1~rc1 1.1~rc2 1.1~beta 1.1.0 1.1-1 1.1-p1 1.1_1 1.1. 1.a 1a 1+ 1.2 \
            1.9.0 1.10 1.22~rc1 1.22 1.22.1 1.22.1a 1.22.1-p1 1.100.0 2 10 007 7 20230101 \
            3.0.0~git20230102+ds"
            .split_whitespace()
            .collect();
        let dpkg_says = |a: &str, op: &str, b: &str| {
            let st = std::process::Command::new(&dpkg)
                .args([
                    "--compare-versions",
                    &format!("{a}-0"),
                    op,
                    &format!("{b}-0"),
                ])
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(matches!(st.code(), Some(0 | 1)), "dpkg {a} {op} {b}: {st}");
            st.success()
        };
        let mut checked = 0;
        for (i, a) in versions.iter().enumerate() {
            for b in &versions[i + 1..] {
                let want = if dpkg_says(a, "lt", b) {
                    Ordering::Less
                } else if dpkg_says(a, "gt", b) {
                    Ordering::Greater
                } else {
                    a.cmp(b)
                };
                assert_eq!(compare_versions(a, b), want, "{a} against {b}");
                assert_eq!(compare_versions(b, a), want.reverse(), "{b} against {a}");
                checked += 1;
            }
        }
        assert_eq!(checked, versions.len() * (versions.len() - 1) / 2);
    }

    #[test]
    fn dep_specs() {
        assert_eq!(
            DepSpec::parse("www-servers/nginx-1.22.1").unwrap(),
            DepSpec::Recipe("www-servers/nginx-1.22.1".into())
        );
        assert!(DepSpec::parse("nginx").is_err());
        assert!(DepSpec::parse("debian:").is_err());
        assert!(DepSpec::parse("a/b/c").is_err());
    }
}
