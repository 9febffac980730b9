//! Resolving Debian package names to an exact closure, with the host's apt.
//!
//! buildit does not reimplement apt's resolver: it asks apt what it would install on
//! an empty system —
//!
//! ```text
//! LC_ALL=C apt-get -s -o Dir::State::status=EMPTY -o Debug::NoLocking=1 \
//!     -o APT::Install-Recommends=false -o APT::Install-Suggests=false install REQUESTS…
//! ```
//!
//! — reads its `Inst NAME (VERSION RELEASE [ARCH])` lines, then asks
//! `apt-cache show NAME=VERSION …` (one call) for each package's `Filename`, `SHA256`,
//! `Size` and `Architecture`. Nothing is installed, no lock is taken, and the host's
//! dpkg status plays no part: the same package lists give the same closure on any
//! host. Candidates follow the host's apt configuration (sources, pinning).
//!
//! **Essential packages.** With an empty status apt does *not* add the `Essential:
//! yes` packages (bash, dash, coreutils, base-files, …) on its own: `hello` resolves
//! to `hello`, `libc6`, `libgcc-s1` and `gcc-12-base` on bookworm, no shell. An
//! essential package is in a closure only when something in it names it in its
//! `Depends`/`Pre-Depends` (e.g. `perl-modules-5.36` pre-depends on `dpkg`, which
//! brings `tar`). The closure is kept exactly as apt gives it; a build root that
//! needs a shell or coreutils must request them.
//!
//! apt is run with `APT::Cmd::Pattern-Only=true`, so a name is only ever a name: apt
//! would otherwise read `hell.` as a regular expression and pick every package that
//! matches.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::str::FromStr;

use buildit_lang::lockfile::DebianPackage;
use thiserror::Error;

use super::deb822::{parse_deb822, Paragraph};

/// One package the user asks for: `[debian:]NAME[:ARCH][=VERSION]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DebRequest {
    pub name: String,
    pub arch: Option<String>,
    pub version: Option<String>,
}

impl DebRequest {
    /// `NAME` or `NAME:ARCH`, as apt names the package.
    pub fn qualified_name(&self) -> String {
        match &self.arch {
            Some(a) => format!("{}:{a}", self.name),
            None => self.name.clone(),
        }
    }
}

/// As apt takes it: `NAME[:ARCH][=VERSION]`.
impl fmt::Display for DebRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.qualified_name())?;
        if let Some(v) = &self.version {
            write!(f, "={v}")?;
        }
        Ok(())
    }
}

impl FromStr for DebRequest {
    type Err = ResolveError;

    fn from_str(input: &str) -> Result<Self, ResolveError> {
        let bad = |reason: &str| ResolveError::BadRequest {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let s = input.strip_prefix("debian:").unwrap_or(input);
        let (qualified, version) = match s.split_once('=') {
            Some((q, v)) => (q, Some(v)),
            None => (s, None),
        };
        let (name, arch) = match qualified.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (qualified, None),
        };
        if !is_package_name(name) {
            return Err(bad(
                "a package name is two or more of a-z 0-9 + - . and starts with a letter or digit",
            ));
        }
        if let Some(a) = arch {
            if a.is_empty()
                || !a
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(bad(
                    "an architecture is one or more of a-z 0-9 -, e.g. amd64",
                ));
            }
        }
        if let Some(v) = version {
            if !is_version(v) {
                return Err(bad(
                    "a version is made of A-Z a-z 0-9 . + ~ - : and starts with a digit, e.g. 2.10-3",
                ));
            }
        }
        Ok(DebRequest {
            name: name.to_string(),
            arch: arch.map(String::from),
            version: version.map(String::from),
        })
    }
}

/// Debian policy 5.6.1.
fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
}

/// Debian policy 5.6.12 (loosely: the characters, and a leading digit).
fn is_version(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-' | ':'))
}

#[derive(Debug, Error)]
pub enum ResolveError {
    #[error("'{input}' is not a Debian package request: {reason}")]
    BadRequest { input: String, reason: String },

    #[error(
        "cannot run {program}: {source}; buildit resolves Debian packages with the host's apt"
    )]
    AptMissing {
        program: String,
        source: std::io::Error,
    },

    #[error(
        "apt has no package lists, so it knows no packages; run apt-get update (as root) first"
    )]
    NoPackageLists,

    #[error("{}", unknown_packages(.names))]
    UnknownPackage { names: Vec<String> },

    #[error("package '{name}' has no version '{version}'; apt knows {}", list_or_none(.known))]
    UnknownVersion {
        name: String,
        version: String,
        known: Vec<String>,
    },

    #[error("package '{name}' is virtual: request one of the packages that provide it ({})", list_or_none(.providers))]
    Virtual {
        name: String,
        providers: Vec<String>,
    },

    #[error("apt cannot resolve {requests}:\n{explanation}")]
    Unsatisfiable {
        requests: String,
        explanation: String,
    },

    #[error("{program} failed ({status}):\n{output}")]
    AptFailed {
        program: String,
        status: String,
        output: String,
    },

    #[error("cannot read what {program} printed: {message}")]
    AptOutput { program: String, message: String },

    #[error("apt-cache show has no usable entry for {package} {version} [{arch}]: {problem}")]
    BadStanza {
        package: String,
        version: String,
        arch: String,
        problem: String,
    },

    #[error("apt knows different files for {package} {version} [{arch}]: {}; remove one of their archives from the apt sources", files.iter().map(|(f, h)| format!("{f} (sha256 {h})")).collect::<Vec<_>>().join(" and "))]
    Ambiguous {
        package: String,
        version: String,
        arch: String,
        /// `(Filename, SHA256)` of each.
        files: Vec<(String, String)>,
    },

    #[error("cannot create an empty dpkg status file in {}: {source}", dir.display())]
    TempFile {
        dir: PathBuf,
        source: std::io::Error,
    },
}

fn unknown_packages(names: &[String]) -> String {
    match names {
        [one] => {
            format!("package '{one}' is not known to apt; run apt-get update, or check the name")
        }
        _ => format!(
            "packages {} are not known to apt; run apt-get update, or check the names",
            names
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// One `Inst` line of `apt-get -s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inst {
    /// As apt prints it: `NAME`, or `NAME:ARCH` for a foreign architecture.
    pub name: String,
    pub version: String,
    /// From the trailing `[ARCH]` (e.g. `amd64`, `all`), when apt printed one.
    pub arch: Option<String>,
}

/// Read the `Inst NAME [OLDVERSION] (VERSION RELEASE… [ARCH]) […]` lines of
/// `apt-get -s` output; everything else is ignored.
pub fn parse_inst_lines(stdout: &str) -> Result<Vec<Inst>, String> {
    let mut out = Vec::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("Inst ") else {
            continue;
        };
        let bad = || format!("unexpected line '{line}'");
        let (name, rest) = rest.split_once(' ').ok_or_else(bad)?;
        let open = rest.find('(').ok_or_else(bad)?;
        let inner = &rest[open + 1..];
        let close = inner.find(')').ok_or_else(bad)?;
        let inner = &inner[..close];
        let mut words = inner.split_whitespace();
        let version = words.next().ok_or_else(bad)?;
        let arch = words
            .last()
            .and_then(|w| w.strip_prefix('[')?.strip_suffix(']'))
            .filter(|a| !a.is_empty())
            .map(String::from);
        out.push(Inst {
            name: name.to_string(),
            version: version.to_string(),
            arch,
        });
    }
    Ok(out)
}

/// One version of a package as `apt-cache show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageStanza {
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// Every field, in apt's order.
    pub paragraph: Paragraph,
}

impl PackageStanza {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.paragraph.get(name)
    }

    /// The description's first line (`Description` or a translated `Description-xx`).
    pub fn summary(&self) -> Option<&str> {
        self.paragraph
            .fields
            .iter()
            .find(|(k, _)| {
                k.eq_ignore_ascii_case("Description")
                    || (k.len() > 12
                        && k.get(..12)
                            .is_some_and(|p| p.eq_ignore_ascii_case("Description-"))
                        && !k.eq_ignore_ascii_case("Description-md5"))
            })
            .and_then(|(_, v)| v.lines().next())
    }

    pub fn size(&self) -> Option<u64> {
        self.field("Size")?.parse().ok()
    }

    /// This version as a lock entry; fails when a field is missing or malformed.
    pub fn to_locked(&self) -> Result<DebianPackage, ResolveError> {
        let problem = |p: String| ResolveError::BadStanza {
            package: self.package.clone(),
            version: self.version.clone(),
            arch: self.architecture.clone(),
            problem: p,
        };
        let sha256 = self
            .field("SHA256")
            .ok_or_else(|| problem("no SHA256 field".into()))?;
        if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(problem(format!("SHA256 '{sha256}' is not 64 hex digits")));
        }
        let size_text = self
            .field("Size")
            .ok_or_else(|| problem("no Size field".into()))?;
        let size = size_text
            .parse::<u64>()
            .map_err(|_| problem(format!("Size '{size_text}' is not a number")))?;
        let filename = self
            .field("Filename")
            .ok_or_else(|| problem("no Filename field".into()))?;
        // Fetch joins it to an archive root: it must stay below it.
        if filename.is_empty()
            || filename.starts_with('/')
            || filename.contains(char::is_whitespace)
            || filename
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(problem(format!(
                "Filename '{filename}' is not a relative path inside the archive"
            )));
        }
        Ok(DebianPackage {
            version: self.version.clone(),
            architecture: self.architecture.clone(),
            sha256: sha256.to_ascii_lowercase(),
            size,
            filename: filename.to_string(),
        })
    }
}

/// Parse `apt-cache show` output. Paragraphs without Package, Version and
/// Architecture are not package stanzas and are an error.
pub fn parse_stanzas(text: &str) -> Result<Vec<PackageStanza>, String> {
    let paragraphs = parse_deb822(text).map_err(|e| e.to_string())?;
    paragraphs
        .into_iter()
        .map(|p| {
            let get = |f: &str| {
                p.get(f)
                    .map(String::from)
                    .ok_or_else(|| format!("line {}: the entry has no {f} field", p.line))
            };
            Ok(PackageStanza {
                package: get("Package")?,
                version: get("Version")?,
                architecture: get("Architecture")?,
                paragraph: p,
            })
        })
        .collect()
}

/// Resolve requests to the exact closure apt would install on an empty system,
/// sorted by name. Each name is as apt prints it (`NAME`, or `NAME:ARCH` for a
/// foreign architecture).
pub fn resolve(requests: &[DebRequest]) -> Result<Vec<(String, DebianPackage)>, ResolveError> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let apt = Apt::new()?;
    let mut args: Vec<String> = [
        "-s",
        "-o",
        "APT::Install-Recommends=false",
        "-o",
        "APT::Install-Suggests=false",
        "install",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(requests.iter().map(|r| r.to_string()));
    let out = apt.run("apt-get", &args)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(apt.explain_failure(requests, &stdout, &stderr, &out));
    }
    let insts = parse_inst_lines(&stdout).map_err(|message| ResolveError::AptOutput {
        program: "apt-get".into(),
        message,
    })?;
    if insts.is_empty() {
        return Err(ResolveError::AptOutput {
            program: "apt-get".into(),
            message: format!("it would install nothing:\n{}", stdout.trim_end()),
        });
    }

    let show_args: Vec<String> = std::iter::once("show".to_string())
        .chain(insts.iter().map(|i| format!("{}={}", i.name, i.version)))
        .collect();
    let out = apt.run("apt-cache", &show_args)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let stanzas = parse_stanzas(&text).map_err(|message| ResolveError::AptOutput {
        program: "apt-cache".into(),
        message,
    })?;

    let mut closure: BTreeMap<String, DebianPackage> = BTreeMap::new();
    for inst in &insts {
        let bare = inst.name.split(':').next().unwrap_or(&inst.name);
        let pkg = pick_stanza(bare, inst, &stanzas)?;
        closure.insert(inst.name.clone(), pkg);
    }
    Ok(closure.into_iter().collect())
}

/// The lock entry for one `Inst`, from the `apt-cache show` stanzas: several stanzas
/// may describe it (the same version in several archives); they must agree on the
/// file's hash, and the smallest `Filename` is taken so that the choice does not
/// depend on the order of the sources.
fn pick_stanza(
    bare: &str,
    inst: &Inst,
    stanzas: &[PackageStanza],
) -> Result<DebianPackage, ResolveError> {
    let arch_label = inst.arch.clone().unwrap_or_else(|| "?".into());
    let mut found: Vec<DebianPackage> = Vec::new();
    for s in stanzas {
        let arch_ok = inst.arch.as_deref().is_none_or(|a| a == s.architecture);
        if s.package == bare && s.version == inst.version && arch_ok {
            found.push(s.to_locked()?);
        }
    }
    found.sort_by(|a, b| a.filename.cmp(&b.filename));
    let Some(first) = found.first() else {
        return Err(ResolveError::BadStanza {
            package: bare.to_string(),
            version: inst.version.clone(),
            arch: arch_label,
            problem: "apt-get would install it, but apt-cache show printed no entry for it".into(),
        });
    };
    if let Some(other) = found.iter().find(|p| {
        p.sha256 != first.sha256 || p.size != first.size || p.architecture != first.architecture
    }) {
        return Err(ResolveError::Ambiguous {
            package: bare.to_string(),
            version: inst.version.clone(),
            arch: arch_label,
            files: vec![
                (first.filename.clone(), first.sha256.clone()),
                (other.filename.clone(), other.sha256.clone()),
            ],
        });
    }
    Ok(first.clone())
}

/// Every version apt knows of a package (`NAME` or `NAME:ARCH`), in apt's order
/// (newest first), with all their fields.
pub fn show(name: &str) -> Result<Vec<PackageStanza>, ResolveError> {
    let req: DebRequest = name.parse()?;
    if req.version.is_some() {
        return Err(ResolveError::BadRequest {
            input: name.to_string(),
            reason: "show takes NAME or NAME:ARCH, without a version (it lists every version)"
                .into(),
        });
    }
    let apt = Apt::new()?;
    apt.show(&req)
}

/// The host's apt, run against an empty dpkg status.
struct Apt {
    status: EmptyStatus,
}

impl Apt {
    fn new() -> Result<Apt, ResolveError> {
        Ok(Apt {
            status: EmptyStatus::create()?,
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("LC_ALL", "C")
            .env_remove("LANGUAGE")
            .arg("-o")
            .arg(format!("Dir::State::status={}", self.status.path.display()))
            .args([
                "-o",
                "Debug::NoLocking=1",
                "-o",
                "APT::Cmd::Pattern-Only=true",
                // Do not replace the host's binary cache with one built from the
                // empty status.
                "-o",
                "Dir::Cache::pkgcache=",
            ]);
        c
    }

    fn run(&self, program: &str, args: &[String]) -> Result<Output, ResolveError> {
        self.command(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| ResolveError::AptMissing {
                program: program.to_string(),
                source,
            })
    }

    /// Whether apt has any `Packages` index to read.
    fn has_package_lists(&self) -> Result<bool, ResolveError> {
        let out = self.run(
            "apt-get",
            &[
                "indextargets".into(),
                "--format".into(),
                "$(FILENAME)".into(),
                "Identifier: Packages".into(),
            ],
        )?;
        // If apt cannot even say, assume lists exist and let the first error stand.
        Ok(!out.status.success() || !String::from_utf8_lossy(&out.stdout).trim().is_empty())
    }

    fn show(&self, req: &DebRequest) -> Result<Vec<PackageStanza>, ResolveError> {
        let out = self.run("apt-cache", &["show".into(), req.qualified_name()])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let stanzas: Vec<PackageStanza> = parse_stanzas(&text)
            .map_err(|message| ResolveError::AptOutput {
                program: "apt-cache".into(),
                message,
            })?
            .into_iter()
            .filter(|s| {
                s.package == req.name
                    && req
                        .arch
                        .as_deref()
                        .is_none_or(|a| a == s.architecture || s.architecture == "all")
            })
            .collect();
        if !stanzas.is_empty() {
            return Ok(stanzas);
        }
        let providers = self.providers(&req.qualified_name())?;
        if !providers.is_empty() {
            return Err(ResolveError::Virtual {
                name: req.qualified_name(),
                providers,
            });
        }
        if !self.has_package_lists()? {
            return Err(ResolveError::NoPackageLists);
        }
        Err(ResolveError::UnknownPackage {
            names: vec![req.qualified_name()],
        })
    }

    /// The packages that provide a (virtual) name: `NAME VERSION` each.
    fn providers(&self, name: &str) -> Result<Vec<String>, ResolveError> {
        let out = self.run("apt-cache", &["showpkg".into(), name.to_string()])?;
        Ok(parse_reverse_provides(&String::from_utf8_lossy(
            &out.stdout,
        )))
    }

    fn explain_failure(
        &self,
        requests: &[DebRequest],
        stdout: &str,
        stderr: &str,
        out: &Output,
    ) -> ResolveError {
        match classify_failure(stdout, stderr) {
            Failure::Unknown(names) => match self.has_package_lists() {
                Ok(false) => ResolveError::NoPackageLists,
                Err(e) => e,
                Ok(true) => ResolveError::UnknownPackage { names },
            },
            Failure::Version { name, version } => {
                // `name` is as the user gave it to apt (maybe `NAME:ARCH`).
                let known = name
                    .parse::<DebRequest>()
                    .ok()
                    .and_then(|r| self.show(&r).ok())
                    .map(|stanzas| {
                        let mut v: Vec<String> = Vec::new();
                        for s in stanzas {
                            if !v.contains(&s.version) {
                                v.push(s.version);
                            }
                        }
                        v
                    })
                    .unwrap_or_default();
                ResolveError::UnknownVersion {
                    name,
                    version,
                    known,
                }
            }
            Failure::Unsatisfiable(explanation) => ResolveError::Unsatisfiable {
                requests: requests
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                explanation,
            },
            Failure::Other(output) => ResolveError::AptFailed {
                program: "apt-get".into(),
                status: out.status.to_string(),
                output,
            },
        }
    }
}

/// What a failed `apt-get -s install` says, read from its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `E: Unable to locate package NAME` (every such name).
    Unknown(Vec<String>),
    /// `E: Version 'V' for 'NAME' was not found` (the first).
    Version { name: String, version: String },
    /// Unmet dependencies, conflicts, virtual packages without a candidate: apt's
    /// explanation.
    Unsatisfiable(String),
    /// Anything else: the error lines.
    Other(String),
}

pub fn classify_failure(stdout: &str, stderr: &str) -> Failure {
    let errors: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("E: "))
        .map(str::trim)
        .collect();
    let unknown: Vec<String> = errors
        .iter()
        .filter_map(|e| e.strip_prefix("Unable to locate package "))
        .map(|n| n.trim().to_string())
        .collect();
    if !unknown.is_empty() {
        return Failure::Unknown(unknown);
    }
    for e in &errors {
        // Version 'V' for 'NAME' was not found
        if let Some(rest) = e.strip_prefix("Version '") {
            if let Some((version, rest)) = rest.split_once("' for '") {
                if let Some(name) = rest.strip_suffix("' was not found") {
                    return Failure::Version {
                        name: name.to_string(),
                        version: version.to_string(),
                    };
                }
            }
        }
    }
    let mut lines: Vec<String> = explanation_lines(stdout);
    let unsatisfiable = errors.iter().any(|e| {
        e.starts_with("Unable to correct problems")
            || e.contains("has no installation candidate")
            || e.starts_with("Unmet dependencies")
    });
    lines.extend(errors.iter().map(|e| format!("E: {e}")));
    if lines.is_empty() {
        // Nothing recognisable: show all of it.
        lines = stderr
            .lines()
            .chain(stdout.lines())
            .map(|l| l.trim_end().to_string())
            .filter(|l| !l.is_empty())
            .collect();
    }
    let text = lines.join("\n");
    if unsatisfiable {
        Failure::Unsatisfiable(text)
    } else {
        Failure::Other(text)
    }
}

/// apt's explanation blocks on stdout: unmet dependencies and virtual packages.
fn explanation_lines(stdout: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in stdout.lines() {
        let trimmed = line.trim_end();
        let header = trimmed == "The following packages have unmet dependencies:"
            || (trimmed.starts_with("Package ")
                && (trimmed.ends_with("is a virtual package provided by:")
                    || trimmed.contains("is not available, but is referred to")));
        if header {
            in_block = true;
            out.push(trimmed.to_string());
        } else if trimmed.is_empty() {
            in_block = false;
        } else if in_block && line.starts_with([' ', '\t']) {
            out.push(trimmed.to_string());
        } else if in_block && !line.starts_with("Inst ") && !line.starts_with("Conf ") {
            // e.g. "However the following packages replace it:"
            out.push(trimmed.to_string());
        }
    }
    out
}

/// The `Reverse Provides:` section of `apt-cache showpkg`: `NAME VERSION` each.
pub fn parse_reverse_provides(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_section = false;
    for line in text.lines() {
        if line.starts_with("Reverse Provides:") {
            in_section = true;
            continue;
        }
        if !in_section || line.trim().is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        if let (Some(n), Some(v)) = (words.next(), words.next()) {
            let entry = format!("{n} {v}");
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
    }
    out
}

/// An empty file for `Dir::State::status`, removed when dropped.
struct EmptyStatus {
    path: PathBuf,
}

impl EmptyStatus {
    fn create() -> Result<EmptyStatus, ResolveError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut last_error = None;
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(
                "buildit-dpkg-status-{}-{n}-{nanos}",
                std::process::id()
            ));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Ok(EmptyStatus { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
                Err(source) => return Err(ResolveError::TempFile { dir, source }),
            }
        }
        Err(ResolveError::TempFile {
            dir,
            source: last_error
                .unwrap_or_else(|| std::io::Error::other("no free temporary file name")),
        })
    }
}

impl Drop for EmptyStatus {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let r = |s: &str| s.parse::<DebRequest>();
        assert_eq!(
            r("hello").unwrap(),
            DebRequest {
                name: "hello".into(),
                arch: None,
                version: None
            }
        );
        assert_eq!(r("debian:hello").unwrap(), r("hello").unwrap());
        let full = r("debian:libc6:amd64=2.36-9+deb12u10").unwrap();
        assert_eq!(full.name, "libc6");
        assert_eq!(full.arch.as_deref(), Some("amd64"));
        assert_eq!(full.version.as_deref(), Some("2.36-9+deb12u10"));
        assert_eq!(full.to_string(), "libc6:amd64=2.36-9+deb12u10");
        assert_eq!(full.qualified_name(), "libc6:amd64");
        assert_eq!(
            r("zlib1g=1:1.2.13.dfsg-1").unwrap().version.as_deref(),
            Some("1:1.2.13.dfsg-1")
        );
        assert_eq!(r("libstdc++6").unwrap().name, "libstdc++6");
        for bad in [
            "",
            "h",
            "Hello",
            "-o",
            "hello=",
            "hello=x1",
            "hel lo",
            "hello:",
            "hello:AMD64",
            "hello=1 2",
            "hell*",
            "debian:",
            "hello=1;rm",
            "../x",
        ] {
            let e = r(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
    }

    const APT_GET_SAMPLE: &str = "\
NOTE: This is only a simulation!
      apt-get needs root privileges for real execution.
Reading package lists...
Building dependency tree...
Reading state information...
The following additional packages will be installed:
  gcc-12-base libc6 libgcc-s1
The following NEW packages will be installed:
  gcc-12-base hello libc6 libgcc-s1
0 upgraded, 4 newly installed, 0 to remove and 0 not upgraded.
Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
Inst libgcc-s1 (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64]) []
Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])
Inst perl-modules-5.36 (5.36.0-7+deb12u4 Debian-Security:12/oldstable-security [all])
Inst libc6:i386 [2.36-9] (2.36-9+deb12u14 Debian:12.15/oldstable, Debian:12/stable [i386])
Inst hello (2.10-3 Debian:12.15/oldstable [amd64])
Inst odd (1.0 local)
Conf gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
Conf hello (2.10-3 Debian:12.15/oldstable [amd64])
";

    #[test]
    fn inst_lines() {
        let got = parse_inst_lines(APT_GET_SAMPLE).unwrap();
        let brief: Vec<(String, String, Option<String>)> = got
            .into_iter()
            .map(|i| (i.name, i.version, i.arch))
            .collect();
        let s = |x: &str| x.to_string();
        assert_eq!(
            brief,
            vec![
                (s("gcc-12-base"), s("12.2.0-14+deb12u1"), Some(s("amd64"))),
                (s("libgcc-s1"), s("12.2.0-14+deb12u1"), Some(s("amd64"))),
                (s("libc6"), s("2.36-9+deb12u14"), Some(s("amd64"))),
                (
                    s("perl-modules-5.36"),
                    s("5.36.0-7+deb12u4"),
                    Some(s("all"))
                ),
                (s("libc6:i386"), s("2.36-9+deb12u14"), Some(s("i386"))),
                (s("hello"), s("2.10-3"), Some(s("amd64"))),
                (s("odd"), s("1.0"), None),
            ]
        );
        assert!(parse_inst_lines("Inst broken-line\n").is_err());
        assert!(parse_inst_lines("Inst x (\n").is_err());
    }

    const APT_CACHE_SAMPLE: &str = "\
Package: hello
Version: 2.10-3
Installed-Size: 277
Architecture: amd64
Depends: libc6 (>= 2.34)
Description: example package based on GNU hello
Description-md5: c4a4aec43084cfb4a44c959b27e3a6d6
Tag: devel::debian, devel::examples,
 suite::gnu
Section: devel
Filename: pool/main/h/hello/hello_2.10-3_amd64.deb
Size: 53080
MD5sum: d04c2e9639dee67aa836d8232b1ca658
SHA256: 2e6e2f1a0007dc43bc91c273fd36e91e40a4f1c2765a03eca68b70a42103878a

Package: libc6
Source: glibc
Version: 2.36-9+deb12u14
Architecture: amd64
Description-en: GNU C Library: Shared libraries
 Contains the standard libraries.
Filename: pool/main/g/glibc/libc6_2.36-9+deb12u14_amd64.deb
Size: 2759320
SHA256: ba4f88f73dbc3ae9055f3c20f4523bfdbaf1ad13ff95e258924f77d20b4fbedf

Package: libc6
Version: 2.36-9+deb12u14
Architecture: i386
Filename: pool/main/g/glibc/libc6_2.36-9+deb12u14_i386.deb
Size: 2600000
SHA256: 1111111111111111111111111111111111111111111111111111111111111111

Package: libc6
Version: 2.36-9+deb12u14
Architecture: amd64
Filename: pool/updates/main/g/glibc/libc6_2.36-9+deb12u14_amd64.deb
Size: 2759320
SHA256: BA4F88F73DBC3AE9055F3C20F4523BFDBAF1AD13FF95E258924F77D20B4FBEDF
";

    fn inst(name: &str, version: &str, arch: Option<&str>) -> Inst {
        Inst {
            name: name.into(),
            version: version.into(),
            arch: arch.map(String::from),
        }
    }

    #[test]
    fn stanzas() {
        let st = parse_stanzas(APT_CACHE_SAMPLE).unwrap();
        assert_eq!(st.len(), 4);
        assert_eq!(st[0].summary(), Some("example package based on GNU hello"));
        assert_eq!(st[1].summary(), Some("GNU C Library: Shared libraries"));
        assert_eq!(st[0].field("depends"), Some("libc6 (>= 2.34)"));
        assert_eq!(st[0].size(), Some(53080));
        // Field names are not trusted to be ASCII.
        let odd = parse_stanzas("Package: x\nVersion: 1\nArchitecture: all\nDescriptioné-x: y\n")
            .unwrap();
        assert_eq!(odd[0].summary(), None);
        let hello = st[0].to_locked().unwrap();
        assert_eq!(hello.filename, "pool/main/h/hello/hello_2.10-3_amd64.deb");
        assert_eq!(hello.size, 53080);
        assert_eq!(hello.architecture, "amd64");

        // Matched by package, version and architecture; two archives with the same
        // file agree, and the choice does not depend on their order.
        let amd64 = pick_stanza(
            "libc6",
            &inst("libc6", "2.36-9+deb12u14", Some("amd64")),
            &st,
        )
        .unwrap();
        assert_eq!(
            amd64.filename,
            "pool/main/g/glibc/libc6_2.36-9+deb12u14_amd64.deb"
        );
        assert_eq!(
            amd64.sha256,
            "ba4f88f73dbc3ae9055f3c20f4523bfdbaf1ad13ff95e258924f77d20b4fbedf"
        );
        let mut reversed = st.clone();
        reversed.reverse();
        assert_eq!(
            pick_stanza(
                "libc6",
                &inst("libc6", "2.36-9+deb12u14", Some("amd64")),
                &reversed
            )
            .unwrap(),
            amd64
        );
        let i386 = pick_stanza(
            "libc6",
            &inst("libc6:i386", "2.36-9+deb12u14", Some("i386")),
            &st,
        )
        .unwrap();
        assert_eq!(i386.architecture, "i386");

        // Without an architecture, two different files are ambiguous.
        let e = pick_stanza("libc6", &inst("libc6", "2.36-9+deb12u14", None), &st).unwrap_err();
        assert!(e.to_string().contains("different files for libc6"), "{e}");
        let e = pick_stanza("hello", &inst("hello", "9", Some("amd64")), &st).unwrap_err();
        assert!(e.to_string().contains("hello 9"), "{e}");
    }

    #[test]
    fn bad_stanzas() {
        assert!(parse_stanzas("Package: x\nVersion: 1\n")
            .unwrap_err()
            .contains("Architecture"));
        let base = "Package: x\nVersion: 1\nArchitecture: all\n";
        for (extra, needle) in [
            ("Size: 1\nFilename: pool/x.deb\n", "no SHA256"),
            ("SHA256: abc\nSize: 1\nFilename: pool/x.deb\n", "64 hex"),
            (
                &format!(
                    "SHA256: {}\nSize: big\nFilename: pool/x.deb\n",
                    "a".repeat(64)
                ),
                "not a number",
            ),
            (
                &format!("SHA256: {}\nSize: 1\nFilename: ../x.deb\n", "a".repeat(64)),
                "relative path",
            ),
            (
                &format!(
                    "SHA256: {}\nSize: 1\nFilename: /etc/x.deb\n",
                    "a".repeat(64)
                ),
                "relative path",
            ),
            (
                &format!("SHA256: {}\nSize: 1\n", "a".repeat(64)),
                "no Filename",
            ),
        ] {
            let st = parse_stanzas(&format!("{base}{extra}")).unwrap();
            let e = st[0].to_locked().unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("x 1 [all]"), "{e}");
        }
    }

    #[test]
    fn failures() {
        assert_eq!(
            classify_failure(
                "Reading package lists...\n",
                "E: Unable to locate package nosuch\nE: Unable to locate package other\n"
            ),
            Failure::Unknown(vec!["nosuch".into(), "other".into()])
        );
        assert_eq!(
            classify_failure(
                "Package hello is a virtual package provided by:\n  hello-traditional 2.10-6\n\n",
                "E: Version '9.9' for 'hello' was not found\n"
            ),
            Failure::Version {
                name: "hello".into(),
                version: "9.9".into()
            }
        );
        let conflict_out = "\
Reading package lists...
Building dependency tree...
Reading state information...
Some packages could not be installed. This may mean that you have
requested an impossible situation or if you are using the unstable
distribution that some required packages have not yet been created
or been moved out of Incoming.
The following information may help to resolve the situation:

The following packages have unmet dependencies:
 hello : Conflicts: hello-traditional but 2.10-6 is to be installed
 hello-traditional : Conflicts: hello
";
        let Failure::Unsatisfiable(text) = classify_failure(
            conflict_out,
            "E: Unable to correct problems, you have held broken packages.\n",
        ) else {
            panic!("not unsatisfiable")
        };
        assert_eq!(
            text,
            "The following packages have unmet dependencies:\n hello : Conflicts: hello-traditional but 2.10-6 is to be installed\n hello-traditional : Conflicts: hello\nE: Unable to correct problems, you have held broken packages."
        );
        let virtual_out = "\
Package mailx is a virtual package provided by:
  mailutils 1:3.15-4
  bsd-mailx 8.1.2-0.20220412cvs-1

";
        let Failure::Unsatisfiable(text) = classify_failure(
            virtual_out,
            "E: Package 'mailx' has no installation candidate\n",
        ) else {
            panic!("not unsatisfiable")
        };
        assert!(
            text.contains("bsd-mailx") && text.contains("'mailx' has no installation candidate")
        );
        assert_eq!(
            classify_failure("", "W: something\nE: Something else broke\n"),
            Failure::Other("E: Something else broke".into())
        );
        assert_eq!(
            classify_failure("odd\n", "weird\n"),
            Failure::Other("weird\nodd".into())
        );
    }

    #[test]
    fn reverse_provides() {
        let text = "\
Package: awk
Versions: \n\nReverse Depends: \n  base-files,awk
Dependencies: 
Provides: 
Reverse Provides: 
original-awk 2022-09-12-1 (= )
mawk 1.3.4.20200120-3.1 (= )
gawk 1:5.2.1-2 (= )
";
        assert_eq!(
            parse_reverse_provides(text),
            vec![
                "original-awk 2022-09-12-1",
                "mawk 1.3.4.20200120-3.1",
                "gawk 1:5.2.1-2"
            ]
        );
        assert!(parse_reverse_provides("Package: x\nReverse Provides: \n").is_empty());
    }

    #[test]
    fn empty_status_is_removed() {
        let s = EmptyStatus::create().unwrap();
        let p = s.path.clone();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        drop(s);
        assert!(!p.exists());
    }
}
