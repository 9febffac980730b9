//! YAML files read with positions, so that every mistake is reported with its file,
//! line and column (rendered by miette at the edge).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};
use serde::de::DeserializeOwned;
use thiserror::Error;

mod diagnostics;
mod loc;
mod map;

pub(crate) use diagnostics::{load_yaml, TopLevel};
pub use loc::{Loc, Located, Pairs};
pub(crate) use map::{check_sha256, describe, is_null, node_loc, scalar, top_map, Map};

/// The most a YAML file of the user's may nest (lists and mappings inside each
/// other). The YAML loader, the deserializer and dropping the tree all recurse once
/// per level, so without a bound 30,000 nested `- ` overflow the stack; no spec,
/// recipe, build root or configuration needs more than ten levels.
pub const MAX_YAML_DEPTH: usize = 64;

/// The help of an error about nesting too deep.
pub const DEPTH_HELP: &str =
    "lists and mappings inside each other are limited; a spec needs only a few levels";

/// The largest file read as a spec, recipe, build root, configuration or lock file:
/// far above any real one, small enough that reading and scanning it is quick.
pub const MAX_FILE_BYTES: u64 = 8 << 20;

/// A file the user wrote, kept whole so diagnostics can show it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// The text of `path`, refused when larger than [`MAX_FILE_BYTES`] (without reading
/// more than that). Errors are the reason, for the caller to wrap.
pub fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("it is larger than {} MiB", MAX_FILE_BYTES >> 20),
        ));
    }
    Ok(text)
}

impl SourceFile {
    pub fn read(path: &Path) -> Result<SourceFile, SpecError> {
        SourceFile::read_as(path, path.to_path_buf())
    }

    /// Read `real` (a path already resolved and checked), shown in messages as
    /// `shown` (the path as the user named it).
    pub fn read_as(real: &Path, shown: PathBuf) -> Result<SourceFile, SpecError> {
        let text = read_bounded(real).map_err(|e| SpecError::Read {
            path: shown.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(SourceFile { path: shown, text })
    }

    /// Refuse a text too large or nested too deeply to load (see [`MAX_YAML_DEPTH`]),
    /// pointing at where the limit is passed. Every YAML parse of the user's files
    /// runs this first.
    pub fn check_bounds(&self) -> Result<(), SpecError> {
        use yaml_rust2::parser::{Event, Parser};
        if self.text.len() as u64 > MAX_FILE_BYTES {
            return Err(SpecError::File {
                path: self.path.display().to_string(),
                message: format!("the file is larger than {} MiB", MAX_FILE_BYTES >> 20),
                help: None,
            });
        }
        // The event parser is a state machine with its stack on the heap; only the
        // loader built on it recurses. A syntax error ends the scan: the loader
        // stops at the same event, no deeper than what was seen here.
        let mut parser = Parser::new_from_str(&self.text);
        let mut depth = 0usize;
        while let Ok((event, mark)) = parser.next_token() {
            match event {
                Event::SequenceStart(..) | Event::MappingStart(..) => {
                    depth += 1;
                    if depth > MAX_YAML_DEPTH {
                        return Err(self.error_at(
                            mark.line(),
                            mark.col() + 1,
                            format!("this is nested more than {MAX_YAML_DEPTH} levels deep"),
                            Some(DEPTH_HELP.into()),
                        ));
                    }
                }
                Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
                Event::StreamEnd => break,
                _ => {}
            }
        }
        Ok(())
    }

    /// Byte offset of a 1-based line and column (marked-yaml counts columns from 1).
    pub fn offset(&self, line: usize, column: usize) -> usize {
        let mut off = 0;
        for (i, l) in self.text.split_inclusive('\n').enumerate() {
            if i + 1 == line {
                let col = column.saturating_sub(1);
                return off + l.char_indices().nth(col).map(|(b, _)| b).unwrap_or(l.len());
            }
            off += l.len();
        }
        self.text.len()
    }

    pub fn named(&self) -> Arc<NamedSource<String>> {
        Arc::new(NamedSource::new(
            self.path.display().to_string(),
            self.text.clone(),
        ))
    }

    /// An error pointing at `line`:`column` of this file.
    pub fn error_at(
        &self,
        line: usize,
        column: usize,
        message: impl Into<String>,
        help: Option<String>,
    ) -> SpecError {
        let off = self.offset(line, column);
        let len = self.text[off..]
            .find(['\n', ':', ','])
            .unwrap_or(self.text.len() - off)
            .max(1);
        let len = len.min(self.text.len().saturating_sub(off));
        self.positioned(message.into(), line, column, off, len, help)
    }

    /// An error at `offset`..`offset + len` (on character boundaries), which is
    /// `line`:`column`. The excerpt shown is the file up to a little past the
    /// span: a line of megabytes (30,000 nested `- `) is cut after the span, and
    /// when the span itself starts too far into its line, the error is given by
    /// position only.
    fn positioned(
        &self,
        message: String,
        line: usize,
        column: usize,
        offset: usize,
        len: usize,
        help: Option<String>,
    ) -> SpecError {
        const LONG_LINE: usize = 1024;
        let location = format!("{}:{line}:{column}", self.path.display());
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        if line_end - line_start <= LONG_LINE {
            return SpecError::At {
                message,
                location,
                src: self.named(),
                span: (offset, len).into(),
                help,
            };
        }
        if offset - line_start > LONG_LINE {
            return SpecError::File {
                path: location,
                message,
                help,
            };
        }
        let len = len.min(80);
        let mut cut = (offset + len + 40).min(line_end);
        while !self.text.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut excerpt = self.text[..cut].to_string();
        excerpt.push_str(" …");
        SpecError::At {
            message,
            location,
            src: Arc::new(NamedSource::new(self.path.display().to_string(), excerpt)),
            span: (offset, len.min(cut - offset).max(1)).into(),
            help,
        }
    }

    pub fn error_at_marker(
        &self,
        marker: Option<&marked_yaml::Marker>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> SpecError {
        match marker {
            Some(m) => self.error_at(m.line(), m.column(), message, help),
            None => SpecError::File {
                path: self.path.display().to_string(),
                message: message.into(),
                help,
            },
        }
    }

    /// Deserialize the whole file, mapping YAML and shape errors to positions.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, SpecError> {
        self.check_bounds()?;
        marked_yaml::from_yaml(0, &self.text).map_err(|e| self.yaml_error(e))
    }

    /// An error covering `len` bytes from byte `offset` of this file (for mistakes
    /// inside a value, e.g. an undefined name in a template string).
    pub fn error_span(
        &self,
        offset: usize,
        len: usize,
        message: impl Into<String>,
        help: Option<String>,
    ) -> SpecError {
        // Spans must start and end on characters, or rendering would slice a
        // character in two.
        let floor = |i: usize| {
            let mut i = i.min(self.text.len());
            while !self.text.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        let offset = floor(offset);
        let mut end = floor(offset + len.max(1));
        if end == offset && offset < self.text.len() {
            // One whole character.
            end = self.text[offset..]
                .chars()
                .next()
                .map_or(offset, |c| offset + c.len_utf8());
        }
        let len = end - offset;
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        self.positioned(message.into(), line, column, offset, len, help)
    }

    fn yaml_error(&self, e: marked_yaml::FromYamlError) -> SpecError {
        use marked_yaml::FromYamlError;
        match e {
            FromYamlError::ParseYaml(load) => self.load_error(load),
            FromYamlError::FromNode(node_err) => {
                let marker = node_err.start_mark();
                let (message, help) = match &*node_err {
                    marked_yaml::Error::UnknownFieldError(field, expected, _) => (
                        format!("unknown key '{field}'"),
                        Some(did_you_mean(field, expected)),
                    ),
                    other => (other.to_string(), None),
                };
                self.error_at_marker(marker.as_ref(), message, help)
            }
        }
    }

    /// A YAML syntax error (from `marked_yaml::parse_yaml*`) as a positioned error.
    pub fn load_error(&self, load: marked_yaml::LoadError) -> SpecError {
        use marked_yaml::LoadError;
        let (marker, message, help) = match &load {
            LoadError::ScanError(m, scan) => (
                Some(*m),
                format!("this is not valid YAML: {}", scan_message(scan)),
                Some("check the indentation: a value that continues on the next line must be indented under its key, and a new key must line up with its siblings".to_string()),
            ),
            LoadError::TopLevelMustBeMapping(m) => (
                Some(*m),
                "the top level must be a mapping (key: value lines)".into(),
                None,
            ),
            LoadError::TopLevelMustBeSequence(m) => (
                Some(*m),
                "the top level must be a list (lines starting with '- ')".into(),
                None,
            ),
            LoadError::UnexpectedAnchor(m) => {
                (Some(*m), "YAML anchors are not supported here".into(), None)
            }
            LoadError::MappingKeyMustBeScalar(m) => {
                (Some(*m), "a key must be a plain string".into(), None)
            }
            LoadError::UnexpectedTag(m) => {
                (Some(*m), "YAML tags (!tag) are not supported here".into(), None)
            }
            LoadError::DuplicateKey(inner) => (
                inner.key.span().start().copied(),
                format!("the key '{}' appears twice", inner.key.as_str()),
                inner
                    .prev_key
                    .span()
                    .start()
                    .map(|p| format!("it was first given on line {}", p.line())),
            ),
        };
        self.error_at_marker(marker.as_ref(), message, help)
    }
}

fn scan_message(scan: &impl std::fmt::Display) -> String {
    // The scanner's own text ends in "at byte N line L column C"; the location is
    // shown by the diagnostic itself.
    let s = scan.to_string();
    match s.find(" at byte ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A value quoted in a message, cut if long.
pub(crate) fn short(s: &str) -> String {
    const MAX: usize = 48;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let cut: String = s.chars().take(MAX - 1).collect();
        format!("{cut}…")
    }
}

/// "did you mean `x`?" for the closest of `expected`, else the list of them.
pub fn did_you_mean(word: &str, expected: &[&str]) -> String {
    match closest(word, expected) {
        Some(e) => format!("did you mean '{e}'?"),
        None => format!("expected one of: {}", expected.join(", ")),
    }
}

/// The closest of `expected` to `word`, if it is close enough to be a typo.
pub fn closest<'a>(word: &str, expected: &[&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|e| (edit_distance(word, e), *e))
        .min()
        .filter(|(d, e)| *d <= (e.len().max(word.len()) / 3).max(2))
        .map(|(_, e)| e)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A mistake in a spec, build-root definition or recipe.
#[derive(Debug, Error, Diagnostic)]
pub enum SpecError {
    #[error("{message}")]
    #[diagnostic(code(buildit::spec))]
    At {
        message: String,
        /// `file:line:column`, for plain-text consumers.
        location: String,
        #[source_code]
        src: Arc<NamedSource<String>>,
        #[label("here")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },
    #[error("{path}: {message}")]
    #[diagnostic(code(buildit::spec))]
    File {
        path: String,
        message: String,
        #[help]
        help: Option<String>,
    },
    #[error("cannot read {path}: {reason}")]
    #[diagnostic(code(buildit::spec::read))]
    Read { path: String, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("pakages", &["packages", "name"]),
            "did you mean 'packages'?"
        );
        assert_eq!(
            did_you_mean("zzz", &["packages", "name"]),
            "expected one of: packages, name"
        );
    }

    fn bounds(text: String) -> Result<(), SpecError> {
        SourceFile {
            path: "x.yaml".into(),
            text,
        }
        .check_bounds()
    }

    fn location(e: SpecError) -> String {
        match e {
            SpecError::At { location, .. } => location,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deep_nesting_is_refused_where_it_passes_the_limit() {
        // Block sequences on one line: the 65th `- ` is at column 129.
        for levels in [65, 30_000, 1_000_000] {
            let e = bounds(format!("{}x\n", "- ".repeat(levels))).unwrap_err();
            assert_eq!(location(e), "x.yaml:1:129", "{levels}");
        }
        // Flow style (deeper than 255 is the scanner's own error, for the loader to
        // report), and mappings one line each.
        let e = bounds(format!("{}{}", "[".repeat(200), "]".repeat(200)));
        assert_eq!(location(e.unwrap_err()), "x.yaml:1:65");
        let mut text = String::new();
        for i in 0..1_000 {
            text.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        // (A block mapping starts, for the parser, at its first key's colon.)
        assert_eq!(location(bounds(text).unwrap_err()), "x.yaml:65:68");
        // The limit itself is fine.
        bounds(format!("{}x\n", "- ".repeat(MAX_YAML_DEPTH))).unwrap();
        bounds("a: [b, {c: [d]}]\n".into()).unwrap();
    }

    #[test]
    fn syntax_errors_are_left_to_the_loader() {
        bounds("a: [b\n".into()).unwrap();
        bounds("a: \"b\n".into()).unwrap();
    }

    #[test]
    fn the_serde_path_is_bounded_too() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Anything {
            a: Vec<serde_json::Value>,
        }
        let f = SourceFile {
            path: "x.yaml".into(),
            text: format!("a:\n{}x\n", "- ".repeat(30_000)),
        };
        assert_eq!(location(f.parse::<Anything>().unwrap_err()), "x.yaml:2:127");
    }

    #[test]
    fn long_lines_are_cut_in_the_excerpt() {
        let f = SourceFile {
            path: "x.yaml".into(),
            text: format!("a: 1\n{}x\n", "- ".repeat(100_000)),
        };
        let SpecError::At { src, span, .. } = f.error_at(2, 129, "deep", None) else {
            panic!()
        };
        assert!(src.inner().len() < 2_000, "{}", src.inner().len());
        assert!(span.offset() + span.len() <= src.inner().len());
        // Too far into its line to show: the position alone.
        let e = f.error_at(2, 100_001, "far", None);
        assert!(matches!(&e, SpecError::File { path, .. } if path == "x.yaml:2:100001"));
        assert_eq!(e.to_string(), "x.yaml:2:100001: far");
    }

    #[test]
    fn oversized_files_are_refused() {
        let e = bounds("#".repeat(MAX_FILE_BYTES as usize + 1)).unwrap_err();
        assert!(e.to_string().contains("larger than 8 MiB"), "{e}");
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("big.yaml");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(MAX_FILE_BYTES + 1).unwrap();
        let e = SourceFile::read(&p).unwrap_err();
        assert!(e.to_string().contains("larger than 8 MiB"), "{e}");
    }

    #[test]
    fn offsets() {
        let f = SourceFile {
            path: "x.yaml".into(),
            text: "a: 1\nbé: 2\n".into(),
        };
        assert_eq!(f.offset(1, 1), 0);
        assert_eq!(f.offset(2, 1), 5);
        assert_eq!(f.offset(2, 3), 8);
    }
}
