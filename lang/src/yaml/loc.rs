//! Positions: where each value of the user's files was written, carried with the
//! value so that a later stage can still point at it.

use std::fmt;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use marked_yaml::Span;

use super::{SourceFile, SpecError};

/// Where a value was written: file, 1-based line and column. Cheap to clone (the file
/// is shared), so it can travel with every value a later stage may report on.
#[derive(Clone)]
pub struct Loc {
    pub file: Arc<SourceFile>,
    pub line: usize,
    pub column: usize,
}

impl Loc {
    /// An error pointing here, underlining the value written here.
    pub fn error(&self, message: impl Into<String>, help: Option<String>) -> SpecError {
        let offset = self.offset();
        let len = token_len(&self.file.text, offset);
        self.file.error_span(offset, len, message, help)
    }

    /// Byte offset in the file.
    pub fn offset(&self) -> usize {
        self.file.offset(self.line, self.column)
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }

    pub(crate) fn of(file: &Arc<SourceFile>, span: &Span) -> Loc {
        // The loader gives every node a start marker; (1, 1) only guards against a
        // node built by hand.
        let (line, column) = span
            .start()
            .map(|m| (m.line(), m.column()))
            .unwrap_or((1, 1));
        Loc {
            file: file.clone(),
            line,
            column,
        }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.file.path.display(),
            self.line,
            self.column
        )
    }
}

// The file's whole text is not worth printing in every debug dump.
impl fmt::Debug for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl PartialEq for Loc {
    fn eq(&self, other: &Self) -> bool {
        self.line == other.line && self.column == other.column && self.file.path == other.file.path
    }
}
impl Eq for Loc {}

/// How long the YAML scalar starting at `offset` is, for underlining: a quoted
/// string to its closing quote, a key to its colon, a flow-list item to its `,` or
/// `]`, anything else to the end of the line (before a comment).
fn token_len(text: &str, offset: usize) -> usize {
    let Some(rest) = text.get(offset..) else {
        return 1;
    };
    let line = rest.split('\n').next().unwrap_or("");
    if let Some(q) = line.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let mut escaped = false;
        for (i, c) in line.char_indices().skip(1) {
            if c == q && !escaped {
                return i + 1;
            }
            escaped = q == '"' && c == '\\' && !escaped;
        }
        return line.len().max(1);
    }
    let mut end = line.len();
    let before = text[..offset].trim_end_matches(' ');
    if before.ends_with(['[', ',', '{']) {
        if let Some(i) = line.find([',', ']', '}']) {
            end = end.min(i);
        }
    }
    if let Some(i) = line.find(": ") {
        end = end.min(i);
    }
    if let Some(i) = line.find(" #") {
        end = end.min(i);
    }
    let token = line[..end].trim_end();
    let token = token.strip_suffix(':').unwrap_or(token);
    token.len().max(1)
}

/// `KEY: value` entries of a mapping, in file order.
pub type Pairs = Vec<(Located<String>, Located<String>)>;

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub loc: Loc,
}

impl<T> Located<T> {
    pub fn new(value: T, loc: Loc) -> Self {
        Located { value, loc }
    }

    /// An error pointing at this value.
    pub fn error(&self, message: impl Into<String>, help: Option<String>) -> SpecError {
        self.loc.error(message, help)
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Located<U> {
        Located {
            value: f(self.value),
            loc: self.loc,
        }
    }
}

impl<T> Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Display> fmt::Display for Located<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}
