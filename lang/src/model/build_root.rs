//! Build-root definitions (`build-roots/NAME.yaml` in a recipe repository): the Debian
//! packages that form `/` for a build, and the fix-ups that maintainer scripts would
//! have made (alternatives, passwd/group, merged-usr symlinks).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use marked_yaml::Spanned;
use serde::Deserialize;

use crate::yaml::{SourceFile, SpecError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawBuildRoot {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    packages: Vec<Spanned<String>>,
    #[serde(default)]
    alternatives: HashMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    files: HashMap<Spanned<String>, String>,
    #[serde(default)]
    directories: Vec<Spanned<String>>,
    #[serde(default = "yes")]
    merged_usr: bool,
}

fn yes() -> bool {
    true
}

/// A checked build-root definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRootDef {
    pub name: String,
    pub description: Option<String>,
    /// Debian package names, in the order their trees are merged.
    pub packages: Vec<String>,
    pub fixups: Fixups,
    pub source: SourceFile,
    /// Where each package name was written, for diagnostics (line, column).
    pub package_positions: Vec<(usize, usize)>,
}

impl PartialEq for SourceFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.text == other.text
    }
}
impl Eq for SourceFile {}

/// The fix-ups are part of the derivation contract: the build-root builder reads
/// them back from the derivation.
pub use buildit_store::builtins::Fixups;

fn check_abs(src: &SourceFile, s: &Spanned<String>, what: &str) -> Result<String, SpecError> {
    let ok = s.starts_with('/')
        && !s.ends_with('/')
        && s[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(s.to_string())
    } else {
        Err(src.error_at_marker(
            s.span().start(),
            format!(
                "{what} '{}' must be an absolute path without '.', '..' or '//'",
                s.as_str()
            ),
            None,
        ))
    }
}

impl BuildRootDef {
    pub fn load(path: &Path) -> Result<BuildRootDef, SpecError> {
        Self::parse(SourceFile::read(path)?)
    }

    pub fn parse(source: SourceFile) -> Result<BuildRootDef, SpecError> {
        let raw: RawBuildRoot = source.parse()?;
        if buildit_store::store_path::validate_name(&raw.name).is_err() {
            return Err(source.error_at_marker(
                raw.name.span().start(),
                format!(
                    "build-root name '{}' may only use letters, digits and + - . _ ? =",
                    raw.name.as_str()
                ),
                None,
            ));
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut packages = Vec::new();
        let mut package_positions = Vec::new();
        for p in &raw.packages {
            let name = p.strip_prefix("debian:").unwrap_or(p);
            let pos = p
                .span()
                .start()
                .map(|m| (m.line(), m.column()))
                .unwrap_or((0, 0));
            if let Some(first) = seen.insert(name.to_string(), pos.0) {
                return Err(source.error_at_marker(
                    p.span().start(),
                    format!("package '{name}' is listed twice"),
                    Some(format!("it was first listed on line {first}")),
                ));
            }
            if name.is_empty() || name.contains(char::is_whitespace) || name.contains('=') {
                return Err(source.error_at_marker(
                    p.span().start(),
                    format!("'{}' is not a Debian package name", p.as_str()),
                    Some("versions are pinned in buildit.lock, not here".into()),
                ));
            }
            packages.push(name.to_string());
            package_positions.push(pos);
        }
        if packages.is_empty() {
            return Err(SpecError::File {
                path: source.path.display().to_string(),
                message: "a build root needs at least one package".into(),
                help: None,
            });
        }
        let mut fixups = Fixups {
            merged_usr: raw.merged_usr,
            ..Default::default()
        };
        for (link, target) in &raw.alternatives {
            let link = check_abs(&source, link, "alternative")?;
            if target.is_empty() {
                return Err(source.error_at_marker(target.span().start(), "empty target", None));
            }
            fixups.alternatives.insert(link, target.to_string());
        }
        for (path, contents) in &raw.files {
            fixups
                .files
                .insert(check_abs(&source, path, "file")?, contents.clone());
        }
        for d in &raw.directories {
            fixups.directories.push(check_abs(&source, d, "directory")?);
        }
        fixups.directories.sort();
        fixups.directories.dedup();
        Ok(BuildRootDef {
            name: raw.name.to_string(),
            description: raw.description,
            packages,
            fixups,
            source,
            package_positions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BuildRootDef, SpecError> {
        BuildRootDef::parse(SourceFile {
            path: "br.yaml".into(),
            text: text.into(),
        })
    }

    #[test]
    fn good() {
        let d = parse(
            "name: c\npackages: [bash, debian:gcc]\nalternatives:\n  /usr/bin/cc: gcc\nfiles:\n  /etc/shells: \"/bin/sh\\n\"\ndirectories: [/tmp]\n",
        )
        .unwrap();
        assert_eq!(d.packages, vec!["bash", "gcc"]);
        assert_eq!(d.fixups.alternatives["/usr/bin/cc"], "gcc");
        assert!(d.fixups.merged_usr);
    }

    #[test]
    fn errors_point_at_the_mistake() {
        let e = parse("name: c\npakages: [bash]\n").unwrap_err();
        match e {
            SpecError::At {
                message,
                location,
                help,
                ..
            } => {
                assert_eq!(message, "unknown key 'pakages'");
                assert_eq!(location, "br.yaml:2:1");
                assert_eq!(help.as_deref(), Some("did you mean 'packages'?"));
            }
            other => panic!("{other:?}"),
        }
        let e = parse("name: c\npackages: [bash, bash]\n").unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
        let e = parse("name: c\npackages: [bash]\nalternatives:\n  usr/bin/cc: gcc\n").unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        let e = parse("name: c\npackages: [bash=5.2]\n").unwrap_err();
        assert!(e.to_string().contains("not a Debian package name"), "{e}");
        let e = parse("name: \"c\"\n    packages: [bash]\n").unwrap_err();
        match e {
            SpecError::At {
                message, location, ..
            } => {
                assert!(message.contains("not valid YAML"), "{message}");
                assert_eq!(location, "br.yaml:2:13");
            }
            other => panic!("{other:?}"),
        }
    }
}
