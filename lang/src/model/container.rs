//! `container.yaml`: a list of steps, each a single-key mapping — `vars`, `package`,
//! `sync` or `image`. Every string is a template rendered with the vars defined above
//! it (see [`super::template`]). This module checks the steps' shape and values; the
//! packages are resolved against the repository by [`crate::resolve::load_spec`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use marked_yaml::Node;

use super::inputs::unresolved;
use super::package::UseFlags;
use super::recipe::check_recipe_ref;
use super::template::{locate_rendered, Templates};
use crate::inroot::{AllowedRoots, ResolveError};
use crate::yaml::{
    describe, did_you_mean, is_null, load_yaml, node_loc, scalar, short, Loc, Located, Map,
    SourceFile, SpecError, TopLevel,
};

/// `NAME: value` of a `vars` step (value rendered with the vars above it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Var {
    pub name: Located<String>,
    pub value: Located<String>,
}

/// `sync`: copy a file or directory of the spec directory into the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncStep {
    pub loc: Loc,
    /// Where `src` resolves: absolute, without symlinks, inside the spec directory
    /// (or a directory the configuration allows); it exists. What is copied.
    pub src: PathBuf,
    /// `src` as written (rendered), for messages.
    pub src_written: Located<String>,
    pub src_is_dir: bool,
    /// Absolute path in the image, without `.`/`..` components.
    pub dest: Located<String>,
    pub recursive: bool,
    /// Permission bits (at most 0o7777).
    pub chmod: Option<Located<u32>>,
    pub owner: Option<Located<Owner>>,
}

/// A user or group: numeric id or name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdOrName {
    Id(u32),
    Name(String),
}

/// `owner: "0:0"`, `"root"`, `"www-data:www-data"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub user: IdOrName,
    pub group: Option<IdOrName>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Aci,
    Oci,
}

/// How an ACI is laid out: one image, or one per package (with dependencies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Single,
    PerPackage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

/// `image: {config: ...}` for OCI images (all rendered).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OciConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `PORT/PROTO` with PROTO tcp, udp or sctp (`443` is written `443/tcp`).
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// `image`: how to package the container.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageStep {
    pub loc: Loc,
    pub format: ImageFormat,
    pub name: Option<Located<String>>,
    /// Rendered `content` (the ACI manifest; for OCI, an image config JSON).
    pub content: Option<Located<String>>,
    /// `content` parsed (it is always valid JSON when given).
    pub manifest: Option<serde_json::Value>,
    /// OCI only.
    pub config: Option<OciConfig>,
    /// ACI only; `single` unless written.
    pub layout: Layout,
    /// `gzip` unless written.
    pub compression: Compression,
    /// OCI only: the most layers the image may have (smallest neighbours are
    /// merged beyond it); `None` = buildit's default.
    pub max_layers: Option<usize>,
}

/// A `package` step before resolution.
#[derive(Clone, Debug)]
pub struct PackageStep {
    pub loc: Loc,
    pub source: PackageSource,
}

#[derive(Clone, Debug)]
pub enum PackageSource {
    /// `path` as written (rendered); `dir` joined to the spec directory.
    Embedded { path: Located<String>, dir: PathBuf },
    Recipe {
        reference: Located<String>,
        use_flags: UseFlags,
    },
}

#[derive(Clone, Debug)]
pub enum ContainerStep {
    Vars(Vec<Var>),
    Package(PackageStep),
    Sync(SyncStep),
    Image(ImageStep),
}

/// container.yaml, checked and rendered.
#[derive(Clone, Debug)]
pub struct ContainerFile {
    pub steps: Vec<ContainerStep>,
    /// The vars after the last step.
    pub vars: BTreeMap<String, String>,
}

const STEPS: &[&str] = &["vars", "package", "sync", "image"];
const EXAMPLE: &str = "  - vars:\n      name: nginx-production\n  - package:\n      path: ./pkgs/nginx\n  - sync:\n      src: ./files/nginx.conf\n      dest: /etc/nginx/nginx.conf\n  - image:\n      type: oci";
const VARS_EXAMPLE: &str = "  - vars:\n      name: nginx-production\n      version: 1.22.1-p1";
const PACKAGE_KEYS: &[&str] = &["type", "path", "recipe", "use"];
const PACKAGE_EXAMPLE: &str = "  - package:\n      type: embedded\n      path: ./pkgs/nginx\nor\n  - package:\n      recipe: app-misc/hello-2.10";
const SYNC_KEYS: &[&str] = &["src", "dest", "recursive", "chmod", "owner"];
const SYNC_EXAMPLE: &str = "  - sync:\n      src: ./files/nginx.conf\n      dest: /etc/nginx/nginx.conf\n      chmod: \"0644\"";
const IMAGE_KEYS: &[&str] = &[
    "type",
    "name",
    "content",
    "config",
    "layout",
    "compression",
    "max-layers",
];
const IMAGE_EXAMPLE: &str =
    "  - image:\n      type: oci\n      config:\n        entrypoint: [/usr/sbin/nginx]";
const CONFIG_KEYS: &[&str] = &[
    "entrypoint",
    "cmd",
    "env",
    "working-dir",
    "user",
    "exposed-ports",
    "labels",
];
const CONFIG_EXAMPLE: &str = "      config:\n        entrypoint: [/usr/sbin/nginx, -g, daemon off;]\n        exposed-ports: [\"443/tcp\"]";

/// Parse container.yaml; `dir` is the spec directory (paths are relative to it),
/// `inputs` where sync sources may resolve ([`super::input_roots`]).
pub fn parse(
    file: Arc<SourceFile>,
    dir: &Path,
    inputs: &AllowedRoots,
) -> Result<ContainerFile, SpecError> {
    let root = load_yaml(&file, TopLevel::Sequence)?;
    let Node::Sequence(items) = &root else {
        return Err(node_loc(&file, &root).error(
            "container.yaml must be a list of steps",
            Some(format!("for example:\n{EXAMPLE}")),
        ));
    };
    if items.is_empty() {
        return Err(SpecError::File {
            path: file.path.display().to_string(),
            message: "container.yaml has no steps".into(),
            help: Some(format!("for example:\n{EXAMPLE}")),
        });
    }
    // Each step as (kind, key position, body).
    let mut steps = Vec::new();
    for item in items.iter() {
        steps.push(step_parts(&file, item)?);
    }
    // Every var of the file, to tell "defined below" from "never defined".
    let mut all_vars = BTreeMap::new();
    for (kind, _, body) in &steps {
        if *kind == "vars" {
            if let Node::Mapping(m) = body {
                for (k, _) in m.iter() {
                    all_vars
                        .entry(k.as_str().to_string())
                        .or_insert_with(|| Loc::of(&file, k.span()));
                }
            }
        }
    }
    let mut t = Templates::new(all_vars);
    let mut out = Vec::new();
    for (kind, at, body) in steps {
        if kind == "vars" {
            out.push(ContainerStep::Vars(vars_step(&file, body, &mut t)?));
            continue;
        }
        let cx = Cx {
            file: &file,
            dir,
            inputs,
            t: &t,
        };
        let step = match kind {
            "package" => ContainerStep::Package(cx.package(at, body)?),
            "sync" => ContainerStep::Sync(cx.sync(at, body)?),
            _ => ContainerStep::Image(cx.image(at, body)?),
        };
        out.push(step);
    }
    Ok(ContainerFile {
        steps: out,
        vars: t.vars().clone(),
    })
}

/// A step's kind, the position of its key, and its body.
fn step_parts<'a>(
    file: &Arc<SourceFile>,
    item: &'a Node,
) -> Result<(&'static str, Loc, &'a Node), SpecError> {
    let Node::Mapping(m) = item else {
        return Err(node_loc(file, item).error(
            format!("a step must be one of vars, package, sync or image with its settings below it, not {}", describe(item)),
            Some(format!("for example:\n{EXAMPLE}")),
        ));
    };
    let mut keys = m.iter();
    let Some((k, body)) = keys.next() else {
        return Err(node_loc(file, item).error(
            "this step is empty",
            Some(format!("for example:\n{EXAMPLE}")),
        ));
    };
    let at = Loc::of(file, k.span());
    let Some(kind) = STEPS.iter().copied().find(|s| *s == k.as_str()) else {
        return Err(at.error(
            format!("unknown step '{}'", short(k.as_str())),
            Some(did_you_mean(k.as_str(), STEPS)),
        ));
    };
    if let Some((k2, _)) = keys.next() {
        // Typically the settings were not indented under the step's key.
        let second = Loc::of(file, k2.span());
        return Err(second.error(
            format!(
                "'{}' is at the same level as '{kind}', so YAML reads it as a second step key",
                short(k2.as_str())
            ),
            Some(format!(
                "a step has one key ({}); its settings are indented below it, deeper than the key:\n  - {kind}:\n      {}: ...",
                STEPS.join(", "),
                short(k2.as_str())
            )),
        ));
    }
    if let Node::Scalar(s) = body {
        if is_null(s) {
            return Err(at.error(
                format!("the {kind} step is empty"),
                Some("its settings go on the lines below it, indented deeper than the key".into()),
            ));
        }
    }
    Ok((kind, at, body))
}

/// A `vars` step: each value is rendered with the vars above it, then defined.
fn vars_step(
    file: &Arc<SourceFile>,
    body: &Node,
    t: &mut Templates,
) -> Result<Vec<Var>, SpecError> {
    let Node::Mapping(m) = body else {
        return Err(node_loc(file, body).error(
            format!(
                "'vars' must be a mapping of NAME: value lines, not {}",
                describe(body)
            ),
            Some(format!("for example:\n{VARS_EXAMPLE}")),
        ));
    };
    let mut vars = Vec::new();
    for (k, v) in m.iter() {
        let name = scalar(file, k);
        let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(name.error(
                format!("'{}' cannot be used as a var name", short(&name)),
                Some("templates name vars with letters, digits and _ (not starting with a digit), e.g. app_version".into()),
            ));
        }
        let Node::Scalar(s) = v else {
            return Err(node_loc(file, v).error(
                format!(
                    "the var '{}' must be a single value, not {}",
                    name.value,
                    describe(v)
                ),
                Some(format!("for example:\n{VARS_EXAMPLE}")),
            ));
        };
        let mut raw = scalar(file, s);
        if is_null(s) {
            // `name:` with nothing after it (or `~`) is the empty string.
            raw.value.clear();
        }
        // Later vars may use earlier ones, in the same step too.
        let value = t.render(&raw)?;
        t.define(&name, value.value.clone());
        vars.push(Var { name, value });
    }
    Ok(vars)
}

/// What every step parser needs.
struct Cx<'a> {
    file: &'a Arc<SourceFile>,
    dir: &'a Path,
    inputs: &'a AllowedRoots,
    t: &'a Templates,
}

impl Cx<'_> {
    fn render(&self, s: &Located<String>) -> Result<Located<String>, SpecError> {
        self.t.render(s)
    }

    fn render_opt(&self, s: Option<Located<String>>) -> Result<Option<Located<String>>, SpecError> {
        s.map(|s| self.render(&s)).transpose()
    }

    fn render_list(&self, v: Vec<Located<String>>) -> Result<Vec<Located<String>>, SpecError> {
        v.iter().map(|s| self.render(s)).collect()
    }

    fn package(&self, at: Loc, body: &Node) -> Result<PackageStep, SpecError> {
        let m = Map::new(
            self.file,
            body,
            "the package step",
            at.clone(),
            PACKAGE_KEYS,
            PACKAGE_EXAMPLE,
        )?;
        let ty = self.render_opt(m.str("type")?)?;
        let path = self.render_opt(m.str("path")?)?;
        let recipe = self.render_opt(m.str("recipe")?)?;
        let kind = match (&ty, &path, &recipe) {
            (Some(t), _, _) if t.as_str() == "embedded" || t.as_str() == "recipe" => t.value.clone(),
            (Some(t), _, _) => {
                return Err(t.error(
                    format!("unknown package type '{}'", short(t)),
                    Some(did_you_mean(t, &["embedded", "recipe"])),
                ))
            }
            (None, Some(_), None) => "embedded".into(),
            (None, None, Some(_)) => "recipe".into(),
            (None, Some(_), Some(r)) => {
                return Err(r.error(
                    "a package step has either `path:` (a package directory) or `recipe:` (a recipe of the repository), not both",
                    Some("to patch or configure a recipe, make a package directory whose pkg.yaml says `base: CATEGORY/NAME-VERSION`".into()),
                ))
            }
            (None, None, None) => return Err(m.missing("path", PACKAGE_EXAMPLE)),
        };
        if kind == "embedded" {
            if let Some(r) = &recipe {
                return Err(r.error(
                    "an embedded package takes its recipe from its pkg.yaml (`base:`), not from `recipe:`",
                    Some("remove `recipe:` here, or `type: embedded` to build the recipe as it is".into()),
                ));
            }
            if m.get("use").is_some() {
                return Err(m.key_loc("use").error(
                    "an embedded package's build options are set in its pkg.yaml (`use:`)",
                    Some("move `use:` into the package directory's pkg.yaml".into()),
                ));
            }
            let Some(path) = path else {
                return Err(m.missing("path", PACKAGE_EXAMPLE));
            };
            if path.trim().is_empty() {
                return Err(path.error(
                    "the package path is empty",
                    Some(format!("for example:\n{PACKAGE_EXAMPLE}")),
                ));
            }
            // Lexically clean (`./pkgs/nginx/` → `pkgs/nginx`): paths end up in messages
            // and in the duplicate check.
            let dir: PathBuf = self.dir.join(path.trim()).components().collect();
            Ok(PackageStep {
                loc: at,
                source: PackageSource::Embedded { path, dir },
            })
        } else {
            if let Some(p) = &path {
                return Err(p.error(
                    "a recipe package step names a recipe (`recipe:`), not a `path:`",
                    Some("for a package directory with a pkg.yaml, use `type: embedded`".into()),
                ));
            }
            let Some(reference) = recipe else {
                return Err(m.missing("recipe", "  - package:\n      recipe: app-misc/hello-2.10"));
            };
            if let Err(msg) = check_recipe_ref(reference.trim()) {
                return Err(reference.error(msg, None));
            }
            let reference = reference.map(|r| r.trim().to_string());
            let use_flags = match m.map(
                "use",
                &["with", "without"],
                "      use:\n        with: [nls]",
            )? {
                Some(u) => {
                    let flags = UseFlags {
                        with: self.render_list(u.str_list("with", "        with: [nls]")?)?,
                        without: self
                            .render_list(u.str_list("without", "        without: [nls]")?)?,
                    };
                    for w in &flags.with {
                        if let Some(o) = flags.without.iter().find(|o| o.value == w.value) {
                            return Err(o.error(
                                format!("option '{}' is both in `with` and in `without`", short(o)),
                                Some(format!("it is also in `with` on line {}: keep it in one of the two lists", w.loc.line)),
                            ));
                        }
                    }
                    flags
                }
                None => UseFlags::default(),
            };
            Ok(PackageStep {
                loc: at,
                source: PackageSource::Recipe {
                    reference,
                    use_flags,
                },
            })
        }
    }

    fn sync(&self, at: Loc, body: &Node) -> Result<SyncStep, SpecError> {
        let m = Map::new(
            self.file,
            body,
            "the sync step",
            at.clone(),
            SYNC_KEYS,
            SYNC_EXAMPLE,
        )?;
        let src = self.render(&m.required_str("src", SYNC_EXAMPLE)?)?;
        let dest = self.render(&m.required_str("dest", SYNC_EXAMPLE)?)?;
        let recursive = m.bool("recursive")?.map(|b| b.value).unwrap_or(false);
        let missing = || {
            src.error(
                format!("the sync source '{}' does not exist", short(&src)),
                Some(format!(
                    "sync sources are paths relative to the spec directory ({})",
                    self.dir.display()
                )),
            )
        };
        // Resolved here, component by component: what is copied is what was checked.
        // Symlinks below a synced directory are copied as symlinks, not followed.
        let path = match self.inputs.resolve(self.dir, Path::new(src.trim())) {
            Ok(p) => p,
            Err(ResolveError::Missing { .. } | ResolveError::NotADirectory { .. }) => {
                return Err(missing())
            }
            Err(e) => return Err(unresolved(&src, "the sync source", &e, self.inputs)),
        };
        let meta = std::fs::metadata(&path).map_err(|_| missing())?;
        if meta.is_dir() && !recursive {
            return Err(src.error(
                format!("the sync source '{}' is a directory", short(&src)),
                Some("add `recursive: true` to copy a directory with everything in it".into()),
            ));
        }
        let d = dest.trim();
        let clean = d.starts_with('/')
            && (d == "/" || !d.ends_with('/'))
            && d.split('/')
                .skip(1)
                .all(|c| d == "/" || (!c.is_empty() && c != "." && c != ".."));
        if !clean {
            return Err(dest.error(
                format!(
                    "the sync destination '{}' must be an absolute path in the image",
                    short(d)
                ),
                Some("e.g. /etc/nginx/nginx.conf (no '.', '..', '//' or trailing '/')".into()),
            ));
        }
        if d == "/" && !meta.is_dir() {
            return Err(dest.error(
                "a file cannot be copied to '/'",
                Some("give the file's full path in the image, e.g. /etc/nginx/nginx.conf".into()),
            ));
        }
        let chmod = match m.str("chmod")? {
            Some(c) => {
                let c = self.render(&c)?;
                let mode = parse_mode(&c).map_err(|help| {
                    c.error(format!("'{}' is not a file mode", short(&c)), Some(help))
                })?;
                Some(c.map(|_| mode))
            }
            None => None,
        };
        let owner = match m.str("owner")? {
            Some(o) => {
                let o = self.render(&o)?;
                let owner = parse_owner(&o).ok_or_else(|| {
                    o.error(
                        format!("'{}' is not an owner", short(&o)),
                        Some("write USER or USER:GROUP, each a name or a number, e.g. \"0:0\", root, www-data:www-data".into()),
                    )
                })?;
                Some(o.map(|_| owner))
            }
            None => None,
        };
        Ok(SyncStep {
            loc: at,
            src: path,
            src_is_dir: meta.is_dir(),
            src_written: src,
            dest: dest.map(|d| d.trim().to_string()),
            recursive,
            chmod,
            owner,
        })
    }

    fn image(&self, at: Loc, body: &Node) -> Result<ImageStep, SpecError> {
        let m = Map::new(
            self.file,
            body,
            "the image step",
            at.clone(),
            IMAGE_KEYS,
            IMAGE_EXAMPLE,
        )?;
        let ty = self.render(&m.required_str("type", "  - image:\n      type: oci")?)?;
        let format = match ty.as_str() {
            "aci" => ImageFormat::Aci,
            "oci" => ImageFormat::Oci,
            other => {
                return Err(ty.error(
                    format!("unknown image type '{}'", short(other)),
                    Some(did_you_mean(other, &["aci", "oci"])),
                ))
            }
        };
        let name = self.render_opt(m.str("name")?)?;
        if let Some(n) = &name {
            if n.trim().is_empty() || n.contains(char::is_whitespace) {
                return Err(n.error(
                    format!("'{}' is not an image name", short(n)),
                    Some("an image name has no spaces, e.g. sysadmin42/nginx-production".into()),
                ));
            }
        }
        let content = self.render_opt(m.str("content")?)?;
        let manifest = match (&content, m.str("content")?) {
            (Some(rendered), Some(raw)) => Some(check_json(&raw, rendered, format)?),
            _ => None,
        };
        let layout = match self.render_opt(m.str("layout")?)? {
            None => Layout::Single,
            Some(l) if format == ImageFormat::Oci => {
                return Err(l.error(
                    "`layout` is for ACI images only",
                    Some("an OCI image is one image whose layers buildit chooses".into()),
                ))
            }
            Some(l) => match l.as_str() {
                "single" => Layout::Single,
                "per-package" => Layout::PerPackage,
                other => {
                    return Err(l.error(
                        format!("unknown layout '{}'", short(other)),
                        Some(did_you_mean(other, &["single", "per-package"])),
                    ))
                }
            },
        };
        let compression = match self.render_opt(m.str("compression")?)? {
            None => Compression::Gzip,
            Some(c) => match c.as_str() {
                "none" => Compression::None,
                "gzip" => Compression::Gzip,
                "xz" => Compression::Xz,
                "zstd" => Compression::Zstd,
                other => {
                    return Err(c.error(
                        format!("unknown compression '{}'", short(other)),
                        Some(did_you_mean(other, &["none", "gzip", "xz", "zstd"])),
                    ))
                }
            },
        };
        if format == ImageFormat::Oci && compression == Compression::Xz {
            let c = self.render_opt(m.str("compression")?)?.expect("written");
            return Err(c.error(
                "OCI layers are not compressed with xz",
                Some("use gzip (the default), zstd or none".into()),
            ));
        }
        let max_layers = match self.render_opt(m.str("max-layers")?)? {
            None => None,
            Some(l) if format == ImageFormat::Aci => {
                return Err(l.error(
                    "`max-layers` is for OCI images only",
                    Some("an ACI is one tar".into()),
                ))
            }
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=125).contains(&n) => Some(n),
                _ => {
                    return Err(l.error(
                        format!("'{}' is not a layer count from 1 to 125", short(&l)),
                        Some(
                            "registries and runtimes refuse images of more than 125 layers".into(),
                        ),
                    ))
                }
            },
        };
        let config =
            match m.map("config", CONFIG_KEYS, CONFIG_EXAMPLE)? {
                None => None,
                Some(_) if format == ImageFormat::Aci => return Err(m.key_loc("config").error(
                    "`config` is for OCI images; an ACI's settings are in its manifest (`content`)",
                    Some(
                        "put exec, user, group and ports in the manifest's \"app\" section".into(),
                    ),
                )),
                Some(_) if content.is_some() => return Err(m.key_loc("config").error(
                    "give either `content` (the whole image config as JSON) or `config`, not both",
                    None,
                )),
                Some(c) => Some(self.oci_config(&c)?),
            };
        if format == ImageFormat::Aci && content.is_none() {
            return Err(m.missing(
                "content",
                "  - image:\n      type: aci\n      content: |\n        {\n          \"acKind\": \"ImageManifest\",\n          \"acVersion\": \"0.8.11\",\n          \"name\": \"{{ name }}\"\n        }",
            ));
        }
        Ok(ImageStep {
            loc: at,
            format,
            name,
            content,
            manifest,
            config,
            layout,
            compression,
            max_layers,
        })
    }

    fn oci_config(&self, c: &Map<'_>) -> Result<OciConfig, SpecError> {
        let list = |key: &str| -> Result<Option<Vec<String>>, SpecError> {
            if c.get(key).is_none() {
                return Ok(None);
            }
            let v = self.render_list(c.str_list(
                key,
                &format!("        {key}: [/usr/sbin/nginx, -g, daemon off;]"),
            )?)?;
            Ok(Some(v.into_iter().map(|s| s.value).collect()))
        };
        let map = |key: &str, check_env: bool| -> Result<BTreeMap<String, String>, SpecError> {
            let mut out = BTreeMap::new();
            for (k, v) in c.str_map(key, &format!("        {key}:\n          NAME: value"))? {
                let k = self.render(&k)?;
                if check_env
                    && !(k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                {
                    return Err(k.error(
                        format!("'{}' is not an environment variable name", short(&k)),
                        Some("use letters, digits and _, not starting with a digit".into()),
                    ));
                }
                out.insert(k.value, self.render(&v)?.value);
            }
            Ok(out)
        };
        let mut exposed_ports = Vec::new();
        for p in
            self.render_list(c.str_list("exposed-ports", "        exposed-ports: [\"443/tcp\"]")?)?
        {
            let (port, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
            let ok =
                port.parse::<u16>().is_ok_and(|n| n > 0) && ["tcp", "udp", "sctp"].contains(&proto);
            if !ok {
                return Err(p.error(
                    format!("'{}' is not a port", short(&p)),
                    Some("write PORT/PROTOCOL, e.g. \"443/tcp\" or \"53/udp\" (1-65535; tcp, udp or sctp)".into()),
                ));
            }
            exposed_ports.push(format!("{port}/{proto}"));
        }
        Ok(OciConfig {
            entrypoint: list("entrypoint")?,
            cmd: list("cmd")?,
            env: map("env", true)?,
            working_dir: self.render_opt(c.str("working-dir")?)?.map(|s| s.value),
            user: self.render_opt(c.str("user")?)?.map(|s| s.value),
            exposed_ports,
            labels: map("labels", false)?,
        })
    }
}

/// `content` must be a JSON object; an ACI manifest must say what it is.
fn check_json(
    raw: &Located<String>,
    rendered: &Located<String>,
    format: ImageFormat,
) -> Result<serde_json::Value, SpecError> {
    let value: serde_json::Value = match serde_json::from_str(&rendered.value) {
        Ok(v) => v,
        Err(e) => {
            let (line, col) = (e.line().saturating_sub(1), e.column().saturating_sub(1));
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            let (offset, len) = locate_rendered(raw, &rendered.value, line, col);
            let rendered_line = rendered.split('\n').nth(line).unwrap_or("");
            let template_line = raw.split('\n').nth(line).unwrap_or("");
            let mut help = "`content` is rendered with the vars, then read as JSON; check the commas, quotes and brackets around here".to_string();
            if rendered_line != template_line {
                help.push_str(&format!("\nthis line renders to: {}", rendered_line.trim()));
            }
            return Err(raw.loc.file.error_span(
                offset,
                len,
                format!("`content` is not valid JSON: {msg}"),
                Some(help),
            ));
        }
    };
    let Some(obj) = value.as_object() else {
        return Err(raw.error("`content` must be a JSON object ({ ... })", None));
    };
    if format == ImageFormat::Aci {
        let field = |k: &str| {
            obj.get(k)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };
        match field("acKind") {
            Some("ImageManifest") => {}
            _ => {
                return Err(raw.error(
                    "an ACI manifest needs \"acKind\": \"ImageManifest\"",
                    Some("see the App Container image manifest schema".into()),
                ))
            }
        }
        for k in ["acVersion", "name"] {
            if field(k).is_none() {
                return Err(raw.error(
                    format!("an ACI manifest needs a \"{k}\" string"),
                    Some("e.g. \"acVersion\": \"0.8.11\", \"name\": \"example.org/nginx\"".into()),
                ));
            }
        }
    }
    Ok(value)
}

/// An octal file mode: `644`, `0644`, `4755`, `0o644` (YAML gives numbers as their
/// text, so `chmod: 0644` and `chmod: "0644"` are the same). The error is a help text.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = if let Some(d) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        d
    } else if t.len() == 5 && t.starts_with('0') {
        &t[1..]
    } else {
        t
    };
    let octal =
        (3..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    if octal {
        if let Ok(m) = u32::from_str_radix(digits, 8) {
            return Ok(m);
        }
    }
    let mut help = "write the mode as 3 or 4 octal digits (0-7), e.g. \"0644\" (rw-r--r--) or \"0755\" (rwxr-xr-x)".to_string();
    if let Some(m) = symbolic_mode(t) {
        help = format!("write it as octal: \"{m:04o}\" is {t}");
    } else if t.bytes().all(|b| b.is_ascii_digit()) && t.bytes().any(|b| b > b'7') {
        help = format!("{t} has digits above 7, so it is not octal; {help}");
    }
    Err(help)
}

/// `rw-r--r--` → 0o644 (to suggest the octal form).
fn symbolic_mode(s: &str) -> Option<u32> {
    let b = s.as_bytes();
    if b.len() != 9 {
        return None;
    }
    let mut mode = 0;
    for (i, c) in b.iter().enumerate() {
        let bit = 1 << (8 - i);
        let want = [b'r', b'w', b'x'][i % 3];
        match *c {
            c if c == want => mode |= bit,
            b'-' => {}
            _ => return None,
        }
    }
    Some(mode)
}

fn parse_owner(s: &str) -> Option<Owner> {
    let part = |p: &str| -> Option<IdOrName> {
        if let Ok(n) = p.parse::<u32>() {
            return Some(IdOrName::Id(n));
        }
        let ok = p.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && p.len() <= 32
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c));
        ok.then(|| IdOrName::Name(p.to_string()))
    };
    let s = s.trim();
    match s.split_once(':') {
        Some((u, g)) => Some(Owner {
            user: part(u)?,
            group: Some(part(g)?),
        }),
        None => Some(Owner {
            user: part(s)?,
            group: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert_eq!(parse_mode("4755"), Ok(0o4755));
        assert_eq!(parse_mode("04755"), Ok(0o4755));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert!(parse_mode("999").unwrap_err().contains("above 7"));
        assert!(parse_mode("rw-r--r--").unwrap_err().contains("\"0644\""));
        assert!(parse_mode("64").is_err());
        assert!(parse_mode("077777").is_err());
        assert!(parse_mode("").is_err());
    }

    #[test]
    fn owners() {
        assert_eq!(
            parse_owner("0:0"),
            Some(Owner {
                user: IdOrName::Id(0),
                group: Some(IdOrName::Id(0))
            })
        );
        assert_eq!(
            parse_owner("root"),
            Some(Owner {
                user: IdOrName::Name("root".into()),
                group: None
            })
        );
        assert_eq!(parse_owner("Root"), None);
        assert_eq!(parse_owner("a:b:c"), None);
        assert_eq!(parse_owner(""), None);
    }
}
