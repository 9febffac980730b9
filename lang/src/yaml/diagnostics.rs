//! Loading a file into YAML nodes, with syntax errors explained from what the lines
//! around them look like (indentation, tabs, a second document).

use marked_yaml::{LoaderOptions, Node};

use super::{short, SourceFile, SpecError, DEPTH_HELP};

/// What the top level of a file must be.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopLevel {
    Mapping,
    Sequence,
}

/// Parse a file into nodes. Duplicate keys are errors (YAML would silently keep the
/// last one); an indentation slip gets a hint that names the lines involved.
pub(crate) fn load_yaml(file: &SourceFile, top: TopLevel) -> Result<Node, SpecError> {
    file.check_bounds()?;
    if let Some(line) = second_document(&file.text) {
        return Err(file.error_at(
            line,
            1,
            "a second YAML document starts here",
            Some(
                "a spec file holds one document: remove this '---' line or the part after it"
                    .into(),
            ),
        ));
    }
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let options = match top {
        TopLevel::Mapping => options.toplevel_mapping(),
        TopLevel::Sequence => options.toplevel_sequence(),
    };
    marked_yaml::parse_yaml_with_options(0, &file.text, options).map_err(|e| match &e {
        marked_yaml::LoadError::ScanError(m, scan) => scan_error(file, m, &scan.to_string()),
        _ => file.load_error(e),
    })
}

/// A YAML syntax error, explained from what the lines around it look like.
fn scan_error(file: &SourceFile, m: &marked_yaml::Marker, info: &str) -> SpecError {
    // The scanner's text ends in "at byte N line L column C"; the diagnostic shows
    // the position itself.
    let info = info.split(" at byte ").next().unwrap_or(info);
    if info.contains("tab") {
        if let Some(e) = tab_error(file) {
            return e;
        }
    }
    if let Some(e) = indentation_error(file, m.line()) {
        return e;
    }
    let help = if info.contains("recursion limit") {
        // The scanner's own bound on flow nesting ([[[…).
        DEPTH_HELP
    } else if info.contains("quoted scalar") {
        "a quoted value needs its closing quote (\" or ')"
    } else if info.contains("flow sequence") || info.contains("flow mapping") {
        "a list written [a, b] or a mapping written {a: b} needs its closing ] or }, and commas between the items"
    } else {
        "check the indentation: a value that continues on the next line must be indented under its key, and a new key must line up with its siblings"
    };
    file.error_at(
        m.line(),
        m.column(),
        format!("this is not valid YAML: {info}"),
        Some(help.into()),
    )
}

/// The first line indented with a tab.
fn tab_error(file: &SourceFile) -> Option<SpecError> {
    let (i, l) = file.text.lines().enumerate().find(|(_, l)| {
        let lead = &l[..l.len() - l.trim_start().len()];
        lead.contains('\t')
    })?;
    let col = l.find('\t').map_or(1, |c| c + 1);
    Some(file.error_at(
        i + 1,
        col,
        "this is not valid YAML: a tab indents this line",
        Some("YAML is indented with spaces only".into()),
    ))
}

/// Indentation of a line in spaces.
fn indent_of(l: &str) -> usize {
    l.len() - l.trim_start_matches(' ').len()
}

/// The key of a `key: value` or `key:` line (after an optional `- `), and whether a
/// value follows on the same line.
fn key_of(l: &str) -> Option<(&str, bool)> {
    let body = l.trim().trim_start_matches("- ");
    if body.starts_with(['"', '\'', '#']) {
        return None;
    }
    if let Some(k) = body.strip_suffix(':') {
        return Some((k, false));
    }
    let i = body.find(": ")?;
    let value = body[i + 2..].trim();
    Some((&body[..i], !value.is_empty() && !value.starts_with('#')))
}

/// The keys that enclose line `from` (0-based): walking up, each line less indented
/// than the last one found; (column, key) pairs, innermost first.
fn enclosing_keys<'a>(lines: &[&'a str], from: usize) -> Vec<(usize, &'a str)> {
    let mut out = Vec::new();
    let mut limit = usize::MAX;
    for l in lines[..=from].iter().rev() {
        if l.trim().is_empty() || l.trim().starts_with('#') {
            continue;
        }
        let ind = indent_of(l);
        if ind < limit {
            if let Some((k, _)) = key_of(l) {
                let dash = l.trim().len() - l.trim().trim_start_matches("- ").len();
                out.push((ind + dash + 1, k));
            }
            limit = ind;
        }
        if ind == 0 {
            break;
        }
    }
    out
}

/// The commonest YAML mistakes: a key on a line indented deeper than a line whose
/// value is complete (`key: value`), or a key right after a value that stands on its
/// own line. The scanner then reports "did not find expected key" somewhere on the
/// line; point at the line and say which columns the key could line up with.
fn indentation_error(file: &SourceFile, line: usize) -> Option<SpecError> {
    let lines: Vec<&str> = file.text.lines().collect();
    let this = *lines.get(line.checked_sub(1)?)?;
    let indent = indent_of(this);
    let content = this.trim();
    let (this_key, _) = key_of(this)?;
    let (prev_no, prev) = lines[..line - 1]
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| !l.trim().is_empty() && !l.trim().starts_with('#'))?;
    let prev_indent = indent_of(prev);
    let message = match key_of(prev) {
        Some((_, true)) if indent > prev_indent => format!(
            "this is not valid YAML: line {line} is indented deeper than line {}, whose value is already complete",
            prev_no + 1
        ),
        None if !prev.trim().starts_with("- ") && indent >= prev_indent => format!(
            "this is not valid YAML: the key on line {line} follows the value on line {} at the same indentation",
            prev_no + 1
        ),
        _ => return None,
    };
    let columns: Vec<String> = enclosing_keys(&lines, prev_no)
        .iter()
        .filter(|(col, _)| *col <= indent)
        .map(|(col, k)| format!("column {col} (beside '{}')", short(k)))
        .collect();
    let help = if columns.is_empty() {
        "the keys of one mapping start in the same column".to_string()
    } else {
        format!(
            "the keys of one mapping start in the same column: move '{}' left to {}",
            short(this_key),
            columns.join(" or ")
        )
    };
    let offset = file.offset(line, indent + 1);
    Some(file.error_span(offset, content.len(), message, Some(help)))
}

/// The line of a `---` that follows content (the loader would ignore what follows).
fn second_document(text: &str) -> Option<usize> {
    let mut content = false;
    for (i, l) in text.lines().enumerate() {
        let is_marker = l == "---" || l.starts_with("--- ");
        if is_marker && content {
            return Some(i + 1);
        }
        let t = l.trim();
        if !is_marker && !t.is_empty() && !t.starts_with('#') {
            content = true;
        }
    }
    None
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
    fn second_documents_are_refused() {
        assert_eq!(second_document("---\na: 1\n"), None);
        assert_eq!(second_document("a: 1\n---\nb: 2\n"), Some(2));
        let e = load_yaml(&file("a: 1\n---\nb: 2\n"), TopLevel::Mapping).unwrap_err();
        assert!(e.to_string().contains("second YAML document"), "{e}");
    }

    /// 30,000 and 1,000,000 levels, block and flow: located errors, no stack
    /// overflow (this runs on a test thread's small stack).
    #[test]
    fn deep_nesting_is_a_located_error() {
        let cases = [
            (
                format!("{}x\n", "- ".repeat(30_000)),
                "t.yaml:1:129",
                "nested more than 64",
            ),
            (
                format!("{}x\n", "- ".repeat(1_000_000)),
                "t.yaml:1:129",
                "nested more than 64",
            ),
            (
                format!("{}x\n", "[".repeat(30_000)),
                "t.yaml:1:256",
                "recursion limit",
            ),
            (
                format!("{}x\n", "[".repeat(1_000_000)),
                "t.yaml:1:256",
                "recursion limit",
            ),
            (
                format!("- {}x\n", "{a: ".repeat(100)),
                "t.yaml:1:",
                "nested more than 64",
            ),
        ];
        for (text, at, says) in cases {
            let e = load_yaml(&file(&text), TopLevel::Sequence).unwrap_err();
            let SpecError::At {
                message, location, ..
            } = &e
            else {
                panic!("{e:?}")
            };
            assert!(location.starts_with(at), "{location} for {}", &text[..10]);
            assert!(message.contains(says), "{message}");
        }
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let e = load_yaml(&file("a: 1\na: 2\n"), TopLevel::Mapping).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
    }

    #[test]
    fn over_indented_line_is_explained() {
        let e = load_yaml(
            &file("top:\n    a: \"x\"\n        b: y\n"),
            TopLevel::Mapping,
        )
        .unwrap_err();
        match e {
            SpecError::At {
                message,
                location,
                help,
                ..
            } => {
                assert!(
                    message.contains("line 3 is indented deeper than line 2"),
                    "{message}"
                );
                assert_eq!(location, "t.yaml:3:9");
                assert!(help
                    .unwrap()
                    .contains("column 5 (beside 'a') or column 1 (beside 'top')"));
            }
            other => panic!("{other:?}"),
        }
    }
}
