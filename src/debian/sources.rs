//! The host's apt sources: which archives (mirror roots) its binary packages come
//! from. A `.deb`'s `Filename:` (e.g. `pool/main/h/hello/hello_2.10-3_amd64.deb`) is
//! relative to the root of the archive that lists it, so fetching a locked package
//! means trying each root of [`archive_roots`] in order and checking the sha256.
//!
//! Read, like apt does: `sources.list` first, then the files of `sources.list.d` in
//! name order — `*.list` in the one-line format, `*.sources` in the deb822 format;
//! any other file there (`*.disabled`, `*.save`, …) is ignored. Only `deb` entries
//! (binary packages) are kept: `deb-src` and disabled entries (`Enabled: no`) are not.
//!
//! Nothing here knows any mirror: every archive comes from the host's files.
//!
//! `.sources` files are read with the one deb822 parser (`super::deb822`).

use std::path::{Path, PathBuf};

use thiserror::Error;

// Where the parser used to be: the fuzz targets name it here.
pub use super::deb822::{parse_deb822, Deb822Error, Paragraph};

/// The host's apt configuration directory.
pub const ETC_APT: &str = "/etc/apt";

/// One binary (`deb`) entry of the apt sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// The archive root, without a trailing slash.
    pub uri: String,
    /// Suites (`bookworm`, `bookworm-updates`) or, for a flat repository, a path
    /// ending in `/`.
    pub suites: Vec<String>,
    /// Components (`main`, `contrib`); empty for a flat repository.
    pub components: Vec<String>,
}

#[derive(Debug, Error)]
pub enum SourcesError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The binary archives of the host's apt sources (`/etc/apt`), in apt's order.
pub fn host_archives() -> Result<Vec<Archive>, SourcesError> {
    host_archives_in(Path::new(ETC_APT))
}

/// The binary archives configured below `etc_apt` (a directory laid out like
/// `/etc/apt`). Missing `sources.list` or `sources.list.d` are not errors.
pub fn host_archives_in(etc_apt: &Path) -> Result<Vec<Archive>, SourcesError> {
    let mut archives = Vec::new();
    let main = etc_apt.join("sources.list");
    if let Some(text) = read_optional(&main)? {
        archives.extend(parse_one_line(&text, &main)?);
    }
    let dir = etc_apt.join("sources.list.d");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(archives),
        Err(source) => return Err(SourcesError::Read { path: dir, source }),
    };
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SourcesError::Read {
            path: dir.clone(),
            source,
        })?;
        // apt skips names with characters outside [A-Za-z0-9_.-].
        let Some(name) = entry.file_name().to_str().map(String::from) else {
            continue;
        };
        let valid = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if valid && (name.ends_with(".list") || name.ends_with(".sources")) {
            files.push((name, entry.path()));
        }
    }
    files.sort();
    for (name, path) in files {
        // A dangling symlink or a file removed meanwhile is skipped, as apt does.
        let Some(text) = read_optional(&path)? else {
            continue;
        };
        if name.ends_with(".list") {
            archives.extend(parse_one_line(&text, &path)?);
        } else {
            archives.extend(parse_deb822_sources(&text, &path)?);
        }
    }
    Ok(archives)
}

/// The distinct archive roots, in the order the archives were configured.
pub fn archive_roots(archives: &[Archive]) -> Vec<String> {
    let mut roots: Vec<String> = Vec::new();
    for a in archives {
        if !roots.contains(&a.uri) {
            roots.push(a.uri.clone());
        }
    }
    roots
}

fn read_optional(path: &Path) -> Result<Option<String>, SourcesError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SourcesError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn normalise_uri(uri: &str) -> String {
    let trimmed = uri.trim_end_matches('/');
    // `file:/` must not become `file:`.
    if trimmed.is_empty() || trimmed.ends_with(':') {
        uri.to_string()
    } else {
        trimmed.to_string()
    }
}

/// The one-line format: `deb [ OPTIONS ] URI SUITE [COMPONENT…]`; `#` starts a
/// comment anywhere on a line.
pub fn parse_one_line(text: &str, path: &Path) -> Result<Vec<Archive>, SourcesError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let syntax = |message: &str| SourcesError::Syntax {
            path: path.to_path_buf(),
            line: line_no,
            message: message.to_string(),
        };
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (kind, rest) = match line.split_once(char::is_whitespace) {
            Some((k, r)) => (k, r.trim_start()),
            None => (line, ""),
        };
        if kind != "deb" {
            continue;
        }
        let rest = if let Some(after) = rest.strip_prefix('[') {
            match after.split_once(']') {
                Some((_options, r)) => r,
                None => return Err(syntax("'[' of the options is never closed by ']'")),
            }
        } else {
            rest
        };
        let mut words = rest.split_whitespace();
        let uri = words
            .next()
            .ok_or_else(|| syntax("a deb line needs a URI and a suite"))?;
        let suite = words
            .next()
            .ok_or_else(|| syntax("a deb line needs a suite after the URI"))?;
        let components: Vec<String> = words.map(String::from).collect();
        check_flat(suite, &components).map_err(|m| syntax(&m))?;
        out.push(Archive {
            uri: normalise_uri(uri),
            suites: vec![suite.to_string()],
            components,
        });
    }
    Ok(out)
}

fn check_flat(suite: &str, components: &[String]) -> Result<(), String> {
    if suite.ends_with('/') {
        if !components.is_empty() {
            return Err(format!(
                "suite '{suite}' is an exact path (it ends in '/'), so it takes no components"
            ));
        }
    } else if components.is_empty() {
        return Err(format!("suite '{suite}' needs at least one component"));
    }
    Ok(())
}

/// The deb822 format (`*.sources`): paragraphs with `Types`, `URIs`, `Suites`,
/// `Components` and optionally `Enabled`; every combination of URI and suite is an
/// archive.
pub fn parse_deb822_sources(text: &str, path: &Path) -> Result<Vec<Archive>, SourcesError> {
    let paragraphs = parse_deb822(text).map_err(|e| SourcesError::Syntax {
        path: path.to_path_buf(),
        line: e.line,
        message: e.message,
    })?;
    let mut out = Vec::new();
    for p in paragraphs {
        let syntax = |message: String| SourcesError::Syntax {
            path: path.to_path_buf(),
            line: p.line,
            message,
        };
        let types = p
            .get("Types")
            .ok_or_else(|| syntax("the entry has no Types field".into()))?;
        if !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        if let Some(enabled) = p.get("Enabled") {
            match parse_bool(enabled) {
                Some(true) => {}
                Some(false) => continue,
                None => {
                    return Err(syntax(format!(
                        "Enabled: '{enabled}' is neither yes nor no"
                    )))
                }
            }
        }
        let list = |field: &str| -> Vec<String> {
            p.get(field)
                .map(|v| v.split_whitespace().map(String::from).collect())
                .unwrap_or_default()
        };
        let uris = list("URIs");
        let suites = list("Suites");
        let components = list("Components");
        if uris.is_empty() {
            return Err(syntax("the entry has no URIs".into()));
        }
        if suites.is_empty() {
            return Err(syntax("the entry has no Suites".into()));
        }
        for s in &suites {
            check_flat(s, &components).map_err(syntax)?;
        }
        for uri in uris {
            out.push(Archive {
                uri: normalise_uri(&uri),
                suites: suites.clone(),
                components: components.clone(),
            });
        }
    }
    Ok(out)
}

/// apt's boolean words.
fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "with" | "enable" | "1" => Some(true),
        "no" | "false" | "off" | "without" | "disable" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(uri: &str, suites: &[&str], components: &[&str]) -> Archive {
        Archive {
            uri: uri.into(),
            suites: suites.iter().map(|s| s.to_string()).collect(),
            components: components.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn one_line_format() {
        let text = "\
# a comment
deb http://mirror.invalid/debian/ stable main contrib # trailing comment
deb-src http://mirror.invalid/debian stable main
#deb http://disabled.invalid/debian stable main

deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://other.invalid/apt  nodistro main
deb [ arch=amd64 ] http://third.invalid/repo ./
deb http://mirror.invalid/debian stable-updates main
";
        let got = parse_one_line(text, Path::new("sources.list")).unwrap();
        assert_eq!(
            got,
            vec![
                archive(
                    "http://mirror.invalid/debian",
                    &["stable"],
                    &["main", "contrib"]
                ),
                archive("https://other.invalid/apt", &["nodistro"], &["main"]),
                archive("http://third.invalid/repo", &["./"], &[]),
                archive(
                    "http://mirror.invalid/debian",
                    &["stable-updates"],
                    &["main"]
                ),
            ]
        );
        assert_eq!(
            archive_roots(&got),
            vec![
                "http://mirror.invalid/debian",
                "https://other.invalid/apt",
                "http://third.invalid/repo"
            ]
        );
    }

    #[test]
    fn one_line_errors_name_the_line() {
        for (text, needle) in [
            ("deb http://mirror.invalid/debian\n", "needs a suite"),
            (
                "\ndeb [arch=amd64 http://mirror.invalid/debian stable main\n",
                "never closed",
            ),
            ("deb http://mirror.invalid/debian stable\n", "component"),
            ("deb http://mirror.invalid/debian ./ main\n", "exact path"),
        ] {
            let e = parse_one_line(text, Path::new("x.list")).unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("x.list:"), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        }
        let e = parse_one_line("\n\ndeb x\n", Path::new("x.list")).unwrap_err();
        assert!(e.to_string().starts_with("x.list:3:"), "{e}");
    }

    #[test]
    fn deb822_format() {
        let text = "\
# leading comment
Types: deb deb-src
# a comment inside the paragraph
URIs: http://mirror.invalid/debian/ http://backup.invalid/debian
Suites: stable stable-updates
Components: main contrib
Signed-By: /usr/share/keyrings/x.gpg

Types: deb-src
URIs: http://src-only.invalid/debian
Suites: stable
Components: main

Types: deb
URIs: http://disabled.invalid/debian
Suites: stable
Components: main
Enabled: no

types: deb
uris: http://security.invalid/debian-security
suites: stable-security
components: main
enabled: yes
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBF...
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb
URIs: http://flat.invalid/repo
Suites: ./
";
        let got = parse_deb822_sources(text, Path::new("d.sources")).unwrap();
        let s = &["stable", "stable-updates"];
        let c = &["main", "contrib"];
        assert_eq!(
            got,
            vec![
                archive("http://mirror.invalid/debian", s, c),
                archive("http://backup.invalid/debian", s, c),
                archive(
                    "http://security.invalid/debian-security",
                    &["stable-security"],
                    &["main"]
                ),
                archive("http://flat.invalid/repo", &["./"], &[]),
            ]
        );
    }

    #[test]
    fn deb822_errors() {
        for (text, needle) in [
            ("URIs: http://mirror.invalid/debian\nSuites: stable\n", "no Types"),
            ("Types: deb\nSuites: stable\nComponents: main\n", "no URIs"),
            ("Types: deb\nURIs: http://mirror.invalid/d\nComponents: main\n", "no Suites"),
            (
                "Types: deb\nURIs: http://m.invalid/d\nSuites: s\nComponents: main\nEnabled: maybe\n",
                "maybe",
            ),
            ("Types: deb\nnot a field\n", "not a 'Field: value'"),
            (" continuation\n", "continuation"),
        ] {
            let e = parse_deb822_sources(text, Path::new("d.sources")).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
            assert!(e.to_string().starts_with("d.sources:"), "{e}");
        }
    }

    #[test]
    fn reads_a_directory_like_etc_apt() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path();
        std::fs::write(
            etc.join("sources.list"),
            "deb http://one.invalid/debian stable main\n",
        )
        .unwrap();
        std::fs::create_dir(etc.join("sources.list.d")).unwrap();
        std::fs::write(
            etc.join("sources.list.d/b.sources"),
            "Types: deb\nURIs: http://three.invalid/debian\nSuites: stable\nComponents: main\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("sources.list.d/a.list"),
            "deb http://two.invalid/debian stable main\ndeb http://one.invalid/debian/ extra main\n",
        )
        .unwrap();
        // Ignored like apt ignores them: other extensions and odd names.
        std::fs::write(
            etc.join("sources.list.d/c.list.disabled"),
            "deb http://ignored.invalid/debian stable main\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("sources.list.d/d e.list"),
            "deb http://ignored.invalid/debian stable main\n",
        )
        .unwrap();
        let got = host_archives_in(etc).unwrap();
        assert_eq!(
            archive_roots(&got),
            vec![
                "http://one.invalid/debian",
                "http://two.invalid/debian",
                "http://three.invalid/debian"
            ]
        );
        assert_eq!(got.len(), 4);

        // Nothing configured is no error; a bad file names itself.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(host_archives_in(empty.path()).unwrap(), vec![]);
        std::fs::write(etc.join("sources.list.d/z.sources"), "Types: deb\n").unwrap();
        let e = host_archives_in(etc).unwrap_err().to_string();
        assert!(e.contains("z.sources:1:"), "{e}");
    }
}
