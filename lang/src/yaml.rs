//! YAML files read with positions, so that every mistake is reported with its file,
//! line and column (rendered by miette at the edge).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};
use serde::de::DeserializeOwned;
use thiserror::Error;

/// A file the user wrote, kept whole so diagnostics can show it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    pub fn read(path: &Path) -> Result<SourceFile, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(SourceFile {
            path: path.to_path_buf(),
            text,
        })
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
        SpecError::At {
            message: message.into(),
            location: format!("{}:{line}:{column}", self.path.display()),
            src: self.named(),
            span: (off, len.min(self.text.len().saturating_sub(off))).into(),
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
        SpecError::At {
            message: message.into(),
            location: format!("{}:{line}:{column}", self.path.display()),
            src: self.named(),
            span: (offset, len).into(),
            help,
        }
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
