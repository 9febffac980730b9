//! Templates in container.yaml: every string is a minijinja template rendered with the
//! vars defined above it. Undefined names are errors (strict undefined), reported at
//! the line and column of the YAML file where the name is written.

use std::collections::BTreeMap;
use std::ops::Range;

use minijinja::{Environment, ErrorKind, UndefinedBehavior};

use crate::yaml::{did_you_mean, Loc, Located, SpecError};

/// Loops in templates are allowed, but bounded: a spec must not hang its reader.
const FUEL: u64 = 200_000;

/// Renders strings with the vars defined so far.
pub struct Templates {
    env: Environment<'static>,
    vars: BTreeMap<String, String>,
    /// Every var of the file and where it is defined, to explain "defined later".
    all: BTreeMap<String, Loc>,
}

impl Templates {
    /// `all_vars`: every var name in the file with its position (defined or not yet).
    pub fn new(all_vars: BTreeMap<String, Loc>) -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        // A block scalar (`content: |`) ends with a newline that is part of the value.
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        Templates {
            env,
            vars: BTreeMap::new(),
            all: all_vars,
        }
    }

    pub fn define(&mut self, name: &str, value: String) {
        self.vars.insert(name.to_string(), value);
    }

    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    /// Render `s`; the result keeps `s`'s position.
    pub fn render(&self, s: &Located<String>) -> Result<Located<String>, SpecError> {
        // Plain text renders to itself; skip the engine.
        if !s.contains("{{") && !s.contains("{%") && !s.contains("{#") {
            return Ok(s.clone());
        }
        match self.env.render_str(&s.value, &self.vars) {
            Ok(out) => Ok(Located::new(out, s.loc.clone())),
            Err(e) => Err(self.error(s, &e)),
        }
    }

    fn error(&self, s: &Located<String>, e: &minijinja::Error) -> SpecError {
        let detail = e.detail().unwrap_or("").to_string();
        let mut range = e.range().filter(|r| r.end <= s.len() && r.start <= r.end);
        let (message, help) = match e.kind() {
            ErrorKind::UndefinedError => {
                // detail: "`nme` is undefined" / "`name.x` is undefined"
                let expr = detail.split('`').nth(1).unwrap_or("").to_string();
                let root: String = expr
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !root.is_empty() && !self.vars.contains_key(&root) {
                    // Narrow the span to the name itself.
                    if let Some(r) = &range {
                        if let Some(i) = find_word(&s[r.clone()], &root) {
                            range = Some(r.start + i..r.start + i + root.len());
                        }
                    }
                    (
                        format!("undefined variable '{root}'"),
                        Some(self.var_help(&root)),
                    )
                } else {
                    (
                        format!(
                            "{} is undefined",
                            if expr.is_empty() { "a value" } else { &expr }
                        ),
                        Some("vars are plain strings: they have no attributes or items".into()),
                    )
                }
            }
            ErrorKind::SyntaxError => (
                format!("template syntax error: {detail}"),
                Some("values are written {{ name }}; a literal '{{' is written {{ '{{' }}".into()),
            ),
            ErrorKind::OutOfFuel => (
                "this template takes too much work to render".into(),
                Some(format!(
                    "templates may run at most {FUEL} steps; simplify the loops"
                )),
            ),
            ErrorKind::UnknownFilter
            | ErrorKind::UnknownFunction
            | ErrorKind::UnknownTest
            | ErrorKind::UnknownMethod => (
                format!("template error: {detail}"),
                Some(
                    "see the minijinja documentation for the filters and functions there are"
                        .into(),
                ),
            ),
            kind => (
                if detail.is_empty() {
                    format!("template error: {kind}")
                } else {
                    format!("template error: {detail}")
                },
                None,
            ),
        };
        let (offset, len) = match range {
            Some(r) => locate(s, r),
            None => (s.loc.offset(), 1),
        };
        s.loc.file.error_span(offset, len, message, help)
    }

    fn var_help(&self, name: &str) -> String {
        if let Some(at) = self.all.get(name) {
            return format!(
                "'{name}' is only defined later, on line {}: a template sees the vars defined above it",
                at.line
            );
        }
        let known: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        if known.is_empty() {
            return "no vars are defined above this step: add a `- vars:` step before it".into();
        }
        let hint = did_you_mean(name, &known);
        if hint.starts_with("did you mean") {
            format!("{hint} The vars defined here are: {}", known.join(", "))
        } else {
            format!("the vars defined here are: {}", known.join(", "))
        }
    }
}

/// `word` as a whole identifier in `text`.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(i) = text[from..].find(word) {
        let at = from + i;
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if !before.is_some_and(ident) && !after.is_some_and(ident) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// Where byte range `r` of the template `s` is in its YAML file: (offset, length).
///
/// The loader hands over a scalar's value, not how it was written (quoted, block,
/// folded). Find the template's lines one after the other in the file text from the
/// scalar's start: exact for single-line and block scalars; for a folded or escaped
/// one, fall back to the text around the error, then to the scalar's start.
pub(crate) fn locate(s: &Located<String>, r: Range<usize>) -> (usize, usize) {
    // Byte positions from minijinja or serde_json, made safe to slice with.
    let floor = |i: usize| {
        let mut i = i.min(s.len());
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let r = floor(r.start)..floor(r.end.max(r.start));
    let text = &s.loc.file.text;
    let start = s.loc.offset().min(text.len());
    let len = (r.end - r.start).max(1);
    let line_start = s[..r.start].rfind('\n').map_or(0, |i| i + 1);
    let line_no = s[..r.start].matches('\n').count();
    let mut cursor = start;
    let mut found = None;
    for (i, line) in s.split('\n').enumerate().take(line_no + 1) {
        if line.is_empty() {
            continue;
        }
        match text[cursor..].find(line) {
            Some(at) => {
                if i == line_no {
                    found = Some(cursor + at + (r.start - line_start));
                } else {
                    cursor += at + line.len();
                }
            }
            None => break,
        }
    }
    if let Some(off) = found {
        return (off, len);
    }
    // The error's text up to the end of its tag, e.g. "nme }}".
    let tail = &s[r.start..];
    let tail = tail.split('\n').next().unwrap_or(tail);
    let tail = match tail.find("}}").or_else(|| tail.find("%}")) {
        Some(i) => &tail[..i + 2],
        None => tail,
    };
    if !tail.is_empty() {
        if let Some(at) = text[start..].find(tail) {
            return (start + at, len);
        }
    }
    (start, 1)
}

/// Where line `line` (0-based), column `col` (0-based, bytes) of the rendered text of
/// `s` probably is in the file: the same line of the template, found as in [`locate`];
/// the column is kept only if that line has no template in it.
pub(crate) fn locate_rendered(
    s: &Located<String>,
    rendered: &str,
    line: usize,
    col: usize,
) -> (usize, usize) {
    let template_line = s.split('\n').nth(line);
    let rendered_line = rendered.split('\n').nth(line);
    let line_start: usize = s.split('\n').take(line).map(|l| l.len() + 1).sum();
    match template_line {
        Some(t) if line_start <= s.len() => {
            let col = if Some(t) == rendered_line && col <= t.len() {
                col
            } else {
                0
            };
            let (off, _) = locate(s, line_start + col..line_start + col);
            (off, 1)
        }
        _ => (s.loc.offset(), 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::SourceFile;
    use std::sync::Arc;

    fn at(text: &str, value: &str, line: usize, column: usize) -> Located<String> {
        let file = Arc::new(SourceFile {
            path: "c.yaml".into(),
            text: text.into(),
        });
        Located::new(value.into(), Loc { file, line, column })
    }

    fn location(e: &SpecError) -> String {
        match e {
            SpecError::At { location, .. } => location.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn renders_and_points_inside_strings() {
        let mut t = Templates::new(BTreeMap::new());
        t.define("name", "nginx".into());
        let s = at("- vars:\n    x: \"a-{{ name }}\"\n", "a-{{ name }}", 2, 8);
        assert_eq!(t.render(&s).unwrap().value, "a-nginx");

        let s = at("- vars:\n    x: \"a-{{ nme }}\"\n", "a-{{ nme }}", 2, 8);
        let e = t.render(&s).unwrap_err();
        assert_eq!(location(&e), "c.yaml:2:14");
        assert!(e.to_string().contains("undefined variable 'nme'"));

        let text = "  content: |\n    {\n      \"n\": \"{{ name }}\",\n      \"v\": \"{{ version }}\"\n    }\n";
        let value = "{\n  \"n\": \"{{ name }}\",\n  \"v\": \"{{ version }}\"\n}\n";
        let e = t.render(&at(text, value, 2, 5)).unwrap_err();
        assert_eq!(location(&e), "c.yaml:4:16");
    }

    #[test]
    fn later_vars_are_explained() {
        let file = Arc::new(SourceFile {
            path: "c.yaml".into(),
            text: "x".into(),
        });
        let mut all = BTreeMap::new();
        all.insert(
            "late".to_string(),
            Loc {
                file,
                line: 9,
                column: 5,
            },
        );
        let t = Templates::new(all);
        let e = t
            .render(&at("a: \"{{ late }}\"\n", "{{ late }}", 1, 4))
            .unwrap_err();
        match e {
            SpecError::At { help, .. } => assert!(help.unwrap().contains("line 9")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn loops_are_bounded() {
        let t = Templates::new(BTreeMap::new());
        let s = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let e = t.render(&at(s, s, 1, 1)).unwrap_err();
        assert!(e.to_string().contains("too much work"), "{e}");
    }

    /// minijinja bounds its parser (150 levels) and its calls (500); deeper input is
    /// an error, not a stack overflow, even on a test thread's small stack.
    #[test]
    fn deep_templates_are_errors() {
        let t = Templates::new(BTreeMap::new());
        for s in [
            format!("{{{{ {}1{} }}}}", "(".repeat(100_000), ")".repeat(100_000)),
            format!("{{{{ {}1{} }}}}", "[".repeat(100_000), "]".repeat(100_000)),
            "{% if x %}".repeat(100_000),
            "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}".to_string(),
        ] {
            // Positioned: with an excerpt, or (deep into a long line) without.
            match t.render(&at(&s, &s, 1, 1)).unwrap_err() {
                SpecError::At { location: p, .. } | SpecError::File { path: p, .. } => {
                    assert!(p.starts_with("c.yaml:1:"), "{p}")
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
