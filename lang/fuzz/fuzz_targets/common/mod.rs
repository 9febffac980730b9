//! What every target of this crate shares: one function per parser of the user's
//! files, each feeding it a text and checking what comes back. None may panic, and
//! every error must render with miette's graphical handler, its span inside the
//! text on character boundaries. For what parses, errors at the positions that
//! later stages point at (`Located::error`) must render too, and use flags are
//! resolved against a real recipe.
//!
//! The parsers that look at the file system (container.yaml's sync sources,
//! pkg.yaml's local patches and package directory, the config's directories) get a
//! fixed scratch spec directory, laid out like `samples/nginx-prod/` once per
//! process and only read afterwards, with symlinks leading out of it (`files/etc`,
//! `files/secret`) so that the containment checks are exercised too.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use buildit_lang::model::build_root::BuildRootDef;
use buildit_lang::inroot::AllowedRoots;
use buildit_lang::lockfile::LockFile;
use buildit_lang::model::config::Config;
use buildit_lang::model::container::{self, ContainerStep, PackageSource};
use buildit_lang::model::package::resolve_options;
use buildit_lang::model::{Located, PkgFile, Recipe, UseFlags};
use buildit_lang::yaml::{SourceFile, SpecError};
use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme};

/// The sample nginx recipe (with options and `requires`), to resolve use flags with.
const NGINX: &str = include_str!("../../../../samples/recipes/www-servers/nginx/nginx-1.22.1.yaml");

pub struct Scratch {
    /// The spec directory (container.yaml, files/, pkgs/nginx/).
    pub spec: PathBuf,
    /// The package directory (pkg.yaml, patches/https-only.patch).
    pub pkg: PathBuf,
    /// Where the spec's inputs may be: the spec directory.
    pub inputs: AllowedRoots,
    pub nginx: Recipe,
}

pub fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| {
        let spec = std::env::temp_dir().join("buildit-fuzz-lang");
        let pkg = spec.join("pkgs/nginx");
        std::fs::create_dir_all(pkg.join("patches")).expect("scratch dir");
        std::fs::create_dir_all(spec.join("files/conf.d")).expect("scratch dir");
        for (path, text) in [
            (spec.join("container.yaml"), "- vars:\n    a: b\n"),
            (spec.join(".buildit-config.yaml"), ""),
            (spec.join("files/nginx.conf"), "events {}\n"),
            (pkg.join("pkg.yaml"), "base: www-servers/nginx-1.22.1\n"),
            (pkg.join("patches/https-only.patch"), "--- a\n+++ b\n"),
        ] {
            if !path.is_file() {
                std::fs::write(&path, text).expect("scratch file");
            }
        }
        for (link, target) in [
            (spec.join("files/etc"), Path::new("/etc")),
            (spec.join("files/secret"), Path::new("../../secret")),
            (spec.join("files/loop"), Path::new("loop")),
        ] {
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(target, &link).expect("scratch link");
            }
        }
        let nginx = Recipe::parse(Arc::new(SourceFile {
            path: "recipes/www-servers/nginx/nginx-1.22.1.yaml".into(),
            text: NGINX.into(),
        }))
        .unwrap_or_else(|e| panic!("the sample nginx recipe does not parse: {e}"));
        let inputs = AllowedRoots::new().with(&spec);
        Scratch {
            spec,
            pkg,
            inputs,
            nginx,
        }
    })
}

/// Render `e` as the CLI does; the span must be a valid slice of the text.
pub fn render(e: &SpecError) {
    if let SpecError::At { src, span, .. } = e {
        let text = src.inner();
        let (start, end) = (span.offset(), span.offset() + span.len());
        assert!(
            end <= text.len() && text.is_char_boundary(start) && text.is_char_boundary(end),
            "span {start}..{end} is not a slice of the {}-byte text: {e:?}",
            text.len()
        );
    }
    let _ = e.to_string();
    let _ = e.help().map(|h| h.to_string());
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(80)
        .render_report(&mut out, e)
        .unwrap_or_else(|_| panic!("miette cannot render {e:?}"));
}

pub fn check<T>(r: Result<T, SpecError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            render(&e);
            None
        }
    }
}

/// What a later stage does with a parsed value: point an error at it.
pub fn at<T>(v: &Located<T>) {
    render(&v.error("fuzz", Some("help".into())));
}

pub fn resolve(flags: &UseFlags) {
    for v in flags.with.iter().chain(&flags.without) {
        at(v);
    }
    let _ = check(resolve_options(&scratch().nginx, flags));
}

/// `name:` or `version:` at the top of the text, so that a recipe can be put at the
/// path it must have (`CATEGORY/NAME/NAME-VERSION.yaml`); the path is not read.
fn top_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().trim_matches(['"', '\'']))
        .filter(|v| !v.is_empty() && v.len() < 100 && !v.contains(['/', '\0']))
}

fn file(path: PathBuf, text: &str) -> Arc<SourceFile> {
    Arc::new(SourceFile {
        path,
        text: text.to_string(),
    })
}

/// container.yaml (`container::parse`).
pub fn container_yaml(text: &str) {
    let s = scratch();
    let Some(c) = check(container::parse(
        file(s.spec.join("container.yaml"), text),
        &s.spec,
        &s.inputs,
    )) else {
        return;
    };
    let _ = format!("{:?}", c.steps);
    for step in &c.steps {
        match step {
            ContainerStep::Vars(vars) => {
                for v in vars {
                    at(&v.name);
                    at(&v.value);
                }
            }
            ContainerStep::Package(p) => {
                render(&p.loc.error("fuzz", None));
                match &p.source {
                    PackageSource::Embedded { path, .. } => at(path),
                    PackageSource::Recipe {
                        reference,
                        use_flags,
                    } => {
                        at(reference);
                        resolve(use_flags);
                    }
                }
            }
            ContainerStep::Sync(sync) => {
                // Whatever was written, what is copied is inside the spec.
                assert!(
                    s.inputs.contains(&sync.src),
                    "sync source {} is outside the spec",
                    sync.src.display()
                );
                at(&sync.src_written);
                at(&sync.dest);
                if let Some(c) = &sync.chmod {
                    at(c);
                }
                if let Some(o) = &sync.owner {
                    at(o);
                }
            }
            ContainerStep::Image(image) => {
                render(&image.loc.error("fuzz", None));
                for v in image.name.iter().chain(&image.content) {
                    at(v);
                }
            }
        }
    }
}

/// pkg.yaml (`PkgFile::parse`).
pub fn pkg_yaml(text: &str) {
    let s = scratch();
    let Some(p) = check(PkgFile::parse(
        file(s.pkg.join("pkg.yaml"), text),
        &s.pkg,
        &s.inputs,
    )) else {
        return;
    };
    at(&p.base);
    for patch in &p.patches {
        if let buildit_lang::model::PatchSource::Local(path) = &patch.source {
            assert!(
                s.inputs.contains(path),
                "patch {} is outside the spec",
                path.display()
            );
        }
        at(&patch.written);
    }
    for d in p.build_depends.iter().chain(&p.runtime_depends) {
        at(d);
    }
    if let Some(src) = &p.source {
        at(&src.url);
        at(&src.sha256);
    }
    resolve(&p.use_flags);
}

/// A recipe (`Recipe::parse`), put at the path its `name:` and `version:` ask for.
pub fn recipe(text: &str) {
    let name = top_value(text, "name").unwrap_or("hello");
    let version = top_value(text, "version").unwrap_or("2.10");
    let recipe_path = Path::new("recipes/app-misc")
        .join(name)
        .join(format!("{name}-{version}.yaml"));
    let Some(r) = check(Recipe::parse(file(recipe_path, text))) else {
        return;
    };
    at(&r.name);
    at(&r.build_root);
    for src in &r.sources {
        at(&src.url);
        at(&src.sha256);
    }
    for o in &r.options {
        at(&o.name);
        for d in o.build_depends.iter().chain(&o.runtime_depends) {
            at(d);
        }
    }
    // Every option on, then every option off: `requires` must be checked either way.
    let all: Vec<Located<String>> = r.options.iter().map(|o| o.name.clone()).collect();
    let on = UseFlags {
        with: all.clone(),
        without: Vec::new(),
    };
    let off = UseFlags {
        with: Vec::new(),
        without: all,
    };
    let _ = check(resolve_options(&r, &UseFlags::default()));
    let _ = check(resolve_options(&r, &on));
    let _ = check(resolve_options(&r, &off));
}

/// `.buildit-config.yaml` (`Config::parse`).
pub fn config(text: &str) {
    let s = scratch();
    if let Some(c) = check(Config::parse(file(
        s.spec.join(".buildit-config.yaml"),
        text,
    ))) {
        let _ = format!("{c:?}");
    }
}

/// A build-root definition (`BuildRootDef::parse`).
pub fn build_root(text: &str) {
    let _ = check(BuildRootDef::parse(SourceFile {
        path: "recipes/build-roots/fuzz.yaml".into(),
        text: text.to_string(),
    }));
}

/// `buildit.lock` (`LockFile::parse`): what parses prints and parses back equal.
pub fn lock_file(text: &str) {
    let path = Path::new("buildit.lock");
    match LockFile::parse(text, path) {
        Ok(lock) => {
            let again = LockFile::parse(&lock.to_text(), path)
                .unwrap_or_else(|e| panic!("a printed lock does not parse: {e}"));
            assert_eq!(again, lock, "the lock changed through print and parse");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
