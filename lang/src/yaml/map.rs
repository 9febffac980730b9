//! A typed reader over YAML mappings: allowed keys checked, values read as strings,
//! lists or nested mappings, each with where it was written, and "must be X, not Y"
//! errors pointing at the offending node.

use std::sync::Arc;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::Node;

use super::{did_you_mean, short, Loc, Located, Pairs, SourceFile, SpecError};

/// How a node is described in "must be X, not Y" messages.
pub(crate) fn describe(node: &Node) -> String {
    match node {
        Node::Scalar(s) if is_null(s) => "empty".into(),
        Node::Scalar(s) => format!("the value '{}'", short(s.as_str())),
        Node::Sequence(_) => "a list".into(),
        Node::Mapping(_) => "a mapping (key: value lines)".into(),
    }
}

/// `key:` with nothing after it, or `~` / `null`.
pub(crate) fn is_null(s: &MarkedScalarNode) -> bool {
    s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

/// Where a node starts. A block mapping's own marker is not where its text starts
/// (the loader puts it after the parent's colon), so a mapping is located at its
/// first key.
pub(crate) fn node_loc(file: &Arc<SourceFile>, node: &Node) -> Loc {
    match node {
        Node::Mapping(m) => match m.iter().next() {
            Some((k, _)) => Loc::of(file, k.span()),
            None => Loc::of(file, node.span()),
        },
        _ => Loc::of(file, node.span()),
    }
}

pub(crate) fn scalar(file: &Arc<SourceFile>, s: &MarkedScalarNode) -> Located<String> {
    Located::new(s.as_str().to_string(), Loc::of(file, s.span()))
}

/// A mapping whose keys were checked against the allowed ones.
pub(crate) struct Map<'a> {
    pub file: &'a Arc<SourceFile>,
    pub node: &'a MarkedMappingNode,
    /// "pkg.yaml", "the `sync` step", ... for messages.
    pub what: String,
    /// Where "missing key" errors point: the mapping's own key, or its first key.
    pub at: Loc,
}

impl<'a> Map<'a> {
    /// `node` as a mapping with only `allowed` keys. `at` is where the mapping was
    /// named (its key); `example` shows a correct value in the "wrong type" help.
    pub fn new(
        file: &'a Arc<SourceFile>,
        node: &'a Node,
        what: impl Into<String>,
        at: Loc,
        allowed: &[&str],
        example: &str,
    ) -> Result<Map<'a>, SpecError> {
        let what = what.into();
        let Node::Mapping(m) = node else {
            return Err(node_loc(file, node).error(
                format!(
                    "{what} must be a mapping of key: value lines, not {}",
                    describe(node)
                ),
                Some(format!("for example:\n{example}")),
            ));
        };
        for (k, _) in m.iter() {
            if !allowed.contains(&k.as_str()) {
                return Err(Loc::of(file, k.span()).error(
                    format!("unknown key '{}' in {what}", short(k.as_str())),
                    Some(did_you_mean(k.as_str(), allowed)),
                ));
            }
        }
        Ok(Map {
            file,
            node: m,
            what,
            at,
        })
    }

    /// The value of `key`, `None` when absent or empty (`key:`, `~`).
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        match self.node.get_node(key) {
            Some(Node::Scalar(s)) if is_null(s) => None,
            other => other,
        }
    }

    pub fn key_loc(&self, key: &str) -> Loc {
        self.node
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(k, _)| Loc::of(self.file, k.span()))
            .unwrap_or_else(|| self.at.clone())
    }

    fn type_error(&self, key: &str, node: &Node, want: &str, example: &str) -> SpecError {
        node_loc(self.file, node).error(
            format!(
                "'{key}' in {} must be {want}, not {}",
                self.what,
                describe(node)
            ),
            Some(format!("for example:\n{example}")),
        )
    }

    /// A string value. (Every scalar is a string to the loader: `1` and `true` too.)
    pub fn str(&self, key: &str) -> Result<Option<Located<String>>, SpecError> {
        match self.node.get_node(key) {
            None => Ok(None),
            Some(Node::Scalar(s)) if is_null(s) => Ok(None),
            Some(Node::Scalar(s)) => Ok(Some(scalar(self.file, s))),
            Some(other) => {
                Err(self.type_error(key, other, "a single value", &format!("{key}: some text")))
            }
        }
    }

    pub fn required_str(&self, key: &str, example: &str) -> Result<Located<String>, SpecError> {
        match self.str(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(s) => Err(s.error(
                format!("'{key}' must not be empty"),
                Some(format!("for example:\n{example}")),
            )),
            None => Err(self.missing(key, example)),
        }
    }

    pub fn missing(&self, key: &str, example: &str) -> SpecError {
        let at = match self.node.get_node(key) {
            Some(n) => node_loc(self.file, n),
            None => self.at.clone(),
        };
        at.error(
            format!("{} needs '{key}:'", self.what),
            Some(format!("for example:\n{example}")),
        )
    }

    /// `true`/`false` (also `True`, `FALSE`, ...). `yes`/`no` are refused: YAML 1.1
    /// and 1.2 read them differently.
    pub fn bool(&self, key: &str) -> Result<Option<Located<bool>>, SpecError> {
        let Some(s) = self.str(key)? else {
            return Ok(None);
        };
        let v = match s.as_str() {
            "true" | "True" | "TRUE" => true,
            "false" | "False" | "FALSE" => false,
            other => {
                return Err(s.error(
                    format!("'{key}' must be true or false, not '{}'", short(other)),
                    None,
                ))
            }
        };
        Ok(Some(s.map(|_| v)))
    }

    /// A list of strings; absent or empty → empty.
    pub fn str_list(&self, key: &str, example: &str) -> Result<Vec<Located<String>>, SpecError> {
        let Some(node) = self.get(key) else {
            return Ok(Vec::new());
        };
        let Node::Sequence(seq) = node else {
            return Err(self.type_error(key, node, "a list", example));
        };
        seq.iter()
            .map(|item| match item {
                Node::Scalar(s) if !is_null(s) => Ok(scalar(self.file, s)),
                other => Err(node_loc(self.file, other).error(
                    format!(
                        "each entry of '{key}' in {} must be a single value, not {}",
                        self.what,
                        describe(other)
                    ),
                    Some(format!("for example:\n{example}")),
                )),
            })
            .collect()
    }

    /// A free-form mapping's entries, in file order; absent → empty.
    pub fn entries(
        &self,
        key: &str,
        example: &str,
    ) -> Result<Vec<(Located<String>, &'a Node)>, SpecError> {
        let Some(node) = self.get(key) else {
            return Ok(Vec::new());
        };
        let Node::Mapping(m) = node else {
            return Err(self.type_error(key, node, "a mapping (key: value lines)", example));
        };
        Ok(m.iter().map(|(k, v)| (scalar(self.file, k), v)).collect())
    }

    /// A mapping of strings to strings, in file order.
    pub fn str_map(&self, key: &str, example: &str) -> Result<Pairs, SpecError> {
        self.entries(key, example)?
            .into_iter()
            .map(|(k, v)| match v {
                Node::Scalar(s) => Ok((k, scalar(self.file, s))),
                other => Err(node_loc(self.file, other).error(
                    format!(
                        "the value of '{}' in '{key}' must be a single value, not {}",
                        short(&k.value),
                        describe(other)
                    ),
                    Some(format!("for example:\n{example}")),
                )),
            })
            .collect()
    }

    /// A nested mapping with its own allowed keys.
    pub fn map(
        &self,
        key: &str,
        allowed: &[&str],
        example: &str,
    ) -> Result<Option<Map<'a>>, SpecError> {
        let Some(node) = self.get(key) else {
            return Ok(None);
        };
        let what = format!("'{key}'");
        Map::new(self.file, node, what, self.key_loc(key), allowed, example).map(Some)
    }
}

/// A file's top-level mapping, keys checked. An empty file is an empty mapping.
pub(crate) fn top_map<'a>(
    file: &'a Arc<SourceFile>,
    node: &'a Node,
    what: &str,
    allowed: &[&str],
    example: &str,
) -> Result<Map<'a>, SpecError> {
    let at = match node {
        Node::Mapping(m) => m
            .iter()
            .next()
            .map(|(k, _)| Loc::of(file, k.span()))
            .unwrap_or_else(|| Loc::of(file, node.span())),
        _ => Loc::of(file, node.span()),
    };
    Map::new(file, node, what, at, allowed, example)
}

/// Lowercase hex sha256, pointing at the value otherwise.
pub(crate) fn check_sha256(s: &Located<String>) -> Result<String, SpecError> {
    let v = s.trim();
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(v.to_ascii_lowercase())
    } else {
        let what = if v.bytes().all(|b| b.is_ascii_hexdigit()) {
            format!("{} hex digits", v.len())
        } else {
            "not hex".into()
        };
        Err(s.error(
            format!("'{}' is not a sha256 ({what})", short(v)),
            Some("a sha256 is 64 hex digits, as printed by `sha256sum FILE`".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> SourceFile {
        SourceFile {
            path: "t.yaml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn sha256_check() {
        let f = Arc::new(file("x"));
        let loc = Loc {
            file: f,
            line: 1,
            column: 1,
        };
        let ok = Located::new("AB".repeat(32), loc.clone());
        assert_eq!(check_sha256(&ok).unwrap(), "ab".repeat(32));
        assert!(check_sha256(&Located::new("abc".into(), loc.clone())).is_err());
        assert!(check_sha256(&Located::new("g".repeat(64), loc)).is_err());
    }
}
