//! The head of a `.deb` (`debian-binary` and the control member) and the control
//! files in it: the control stanza, md5sums and conffiles.

use std::io::Read;

use super::ar::ArReader;
use super::stream::MemberStream;
use super::usrmerge::{fold, normalise};
use super::{DebControl, DebError, DebMeta};
use crate::debian::deb822::{self, Dialect};

/// The control files are read into memory; real ones are at most a few MB
/// (md5sums of large packages), so anything bigger is a hostile package.
const CONTROL_FILE_LIMIT: u64 = 64 << 20;
const DEBIAN_BINARY_LIMIT: u64 = 64;

const MAINTAINER_SCRIPTS: [&str; 5] = ["preinst", "postinst", "prerm", "postrm", "config"];

pub(super) fn control_field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// dpkg names the database files of a `Multi-Arch: same` package `pkg:arch` so that
/// several architectures can be installed side by side; others are just `pkg`.
pub(super) fn dpkg_info_name(
    fields: &[(String, String)],
    package: &str,
    architecture: &str,
) -> String {
    match control_field(fields, "Multi-Arch") {
        Some(ma) if ma.trim() == "same" => format!("{package}:{architecture}"),
        _ => package.to_string(),
    }
}

/// `debian-binary` then the control member: what every reader needs.
pub(super) fn read_head(ar: &mut ArReader) -> Result<DebControl, DebError> {
    let deb = ar.deb.clone();
    match ar.next_member()? {
        None => {
            return Err(DebError::MissingMember {
                deb,
                member: "debian-binary",
            })
        }
        Some(m) if m == "debian-binary" => {}
        Some(m) => {
            return Err(DebError::UnexpectedMember {
                deb,
                member: m,
                reason: "a .deb starts with debian-binary",
            })
        }
    }
    if ar.remaining > DEBIAN_BINARY_LIMIT {
        return Err(DebError::BadFormatVersion {
            deb,
            found: format!("<{} bytes>", ar.remaining),
        });
    }
    let mut version = Vec::new();
    let read = ar.member_data().read_to_end(&mut version);
    read.map_err(|e| ar.read_error(e, "debian-binary"))?;
    ar.finish_member();
    if version != b"2.0\n" {
        return Err(DebError::BadFormatVersion {
            deb,
            found: String::from_utf8_lossy(&version).into_owned(),
        });
    }
    loop {
        match ar.next_member()? {
            None => {
                return Err(DebError::MissingMember {
                    deb,
                    member: "control.tar",
                })
            }
            Some(m) if m.starts_with('_') => ar.skip_member()?,
            Some(m) if m.starts_with("control.tar") => return read_control_member(ar, &m),
            Some(m) if m.starts_with("data.tar") => {
                return Err(DebError::UnexpectedMember {
                    deb,
                    member: m,
                    reason: "the data member comes before the control member",
                })
            }
            Some(m) => {
                return Err(DebError::UnexpectedMember {
                    deb,
                    member: m,
                    reason: "expected control.tar after debian-binary",
                })
            }
        }
    }
}

fn read_control_member(ar: &mut ArReader, member: &str) -> Result<DebControl, DebError> {
    let deb = ar.deb.clone();
    let mut control = None;
    let mut md5sums = None;
    let mut conffiles = None;
    let mut scripts = Vec::new();
    let mut stream = MemberStream::open(ar, member, "control.tar")?;
    {
        let mut archive = tar::Archive::new(&mut stream.reader);
        let entries = archive
            .entries()
            .map_err(|e| stream.ctx.stream_error(e, None))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| stream.ctx.stream_error(e, None))?;
            let raw = entry.path_bytes().into_owned();
            // The control member's paths are never written anywhere, so an odd one is
            // simply not one of the names looked for.
            let Ok(Some(name)) = normalise(&raw) else {
                continue;
            };
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let slot = match name.as_str() {
                "control" => &mut control,
                "md5sums" => &mut md5sums,
                "conffiles" => &mut conffiles,
                s if MAINTAINER_SCRIPTS.contains(&s) => {
                    scripts.push(name);
                    continue;
                }
                _ => continue,
            };
            let mut text = Vec::new();
            (&mut entry)
                .take(CONTROL_FILE_LIMIT + 1)
                .read_to_end(&mut text)
                .map_err(|e| stream.ctx.stream_error(e, Some(&name)))?;
            if text.len() as u64 > CONTROL_FILE_LIMIT {
                return Err(DebError::BadControl {
                    deb,
                    reason: format!("{name} is larger than {CONTROL_FILE_LIMIT} bytes"),
                });
            }
            let text = String::from_utf8(text).map_err(|_| DebError::BadControl {
                deb: deb.clone(),
                reason: format!("{name} is not UTF-8"),
            })?;
            *slot = Some(text);
        }
    }
    stream.finish()?;
    drop(stream);
    ar.check_consumed(member)?;
    ar.finish_member();

    let bad = |reason: String| DebError::BadControl {
        deb: deb.clone(),
        reason,
    };
    let control_text =
        control.ok_or_else(|| bad("the control member has no control file".into()))?;
    let fields = parse_control(&control_text).map_err(bad)?;
    let required = |name: &str| {
        control_field(&fields, name)
            .map(str::to_string)
            .ok_or_else(|| bad(format!("control file has no {name} field")))
    };
    let package = required("Package")?;
    let version = required("Version")?;
    let architecture = required("Architecture")?;
    // The package and architecture name files in the tree; refuse anything that
    // could be read as a path.
    let valid_package = package.len() < 256
        && package.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && package
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if !valid_package {
        return Err(bad(format!("invalid package name {package:?}")));
    }
    let valid_arch = !architecture.is_empty()
        && architecture.len() < 64
        && architecture
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_arch {
        return Err(bad(format!("invalid architecture {architecture:?}")));
    }
    if version.is_empty() || version.contains(char::is_whitespace) {
        return Err(bad(format!("invalid version {version:?}")));
    }
    let md5sums = match md5sums {
        Some(text) => parse_md5sums(&text).map_err(bad)?,
        None => Vec::new(),
    };
    let (conffiles, conffiles_lines) = match conffiles {
        Some(text) => {
            let (c, l) = parse_conffiles(&text).map_err(bad)?;
            (c, Some(l))
        }
        None => (Vec::new(), None),
    };
    scripts.sort_unstable();
    scripts.dedup();
    Ok(DebControl {
        meta: DebMeta {
            control: fields,
            package,
            version,
            architecture,
            conffiles,
            md5sums,
            scripts,
        },
        control_text,
        conffiles_lines,
    })
}

/// Parse a binary package's control file: one deb822 stanza as dpkg reads it.
pub fn parse_control(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut paragraphs = deb822::parse(text, Dialect::Control).map_err(|e| e.to_string())?;
    // The control dialect stops at a second paragraph, so there is at most one.
    match paragraphs.pop() {
        Some(p) => Ok(p.fields),
        None => Err("the control file is empty".into()),
    }
}

/// `md5  path` lines → `(/folded/path, md5)`.
fn parse_md5sums(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || format!("md5sums line {}: expected `MD5  PATH`", n + 1);
        let (md5, path) = line.split_once([' ', '\t']).ok_or_else(bad)?;
        let path = path.trim_start_matches([' ', '\t']);
        if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let rel = match normalise(path.as_bytes()) {
            Ok(Some(rel)) => rel,
            _ => return Err(format!("md5sums line {}: bad path {path:?}", n + 1)),
        };
        out.push((format!("/{}", fold(&rel)), md5.to_ascii_lowercase()));
    }
    Ok(out)
}

/// Returns the plain conffiles (folded) and every line with its path folded.
fn parse_conffiles(text: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let mut files = Vec::new();
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        // dpkg ≥ 1.20 allows flags before the path (`remove-on-upgrade /etc/x`).
        let (flags, path) = match line.find('/') {
            Some(0) => ("", line),
            Some(i) => (line[..i].trim_end(), &line[i..]),
            None => return Err(format!("conffiles line {}: no absolute path", n + 1)),
        };
        let rel = match normalise(path.trim_start_matches('/').as_bytes()) {
            Ok(Some(rel)) => rel,
            _ => return Err(format!("conffiles line {}: bad path {path:?}", n + 1)),
        };
        let folded = format!("/{}", fold(&rel));
        if flags.is_empty() {
            lines.push(folded.clone());
            files.push(folded);
        } else {
            lines.push(format!("{flags} {folded}"));
        }
    }
    Ok((files, lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_parser() {
        let f = parse_control("A: 1\nB:  two words \n  cont\n\tcont2\nC:\n").unwrap();
        assert_eq!(
            f,
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "two words\n  cont\n\tcont2".to_string()),
                ("C".to_string(), String::new()),
            ]
        );
        assert!(parse_control(" x\n").is_err());
        assert!(parse_control("A: 1\n\nB: 2\n").is_err());
        assert!(parse_control("A: 1\nA: 2\n").is_err());
        assert!(parse_control("no colon\n").is_err());
        assert!(parse_control("").is_err());
        assert!(parse_md5sums("xyz  usr/bin/x\n").is_err());
        assert!(parse_md5sums("d41d8cd98f00b204e9800998ecf8427e  ../x\n").is_err());
        assert_eq!(
            parse_md5sums("D41D8CD98F00B204E9800998ECF8427E  ./lib/a b\n").unwrap(),
            vec![(
                "/usr/lib/a b".to_string(),
                "d41d8cd98f00b204e9800998ecf8427e".to_string()
            )]
        );
    }

    #[test]
    fn multi_arch_same_info_name() {
        let fields =
            parse_control("Package: libc6\nArchitecture: amd64\nMulti-Arch: same\n").unwrap();
        assert_eq!(dpkg_info_name(&fields, "libc6", "amd64"), "libc6:amd64");
    }
}
