//! deb822, the stanza format of a package's control file, of `Packages` and
//! `apt-cache show` output, and of apt's `.sources` files: paragraphs separated by
//! blank lines, each a list of `Field: value` lines, a line starting with a blank
//! continuing the field before it.
//!
//! One parser reads them all. dpkg and apt read the format differently in a few
//! places, and each reader must keep its program's reading, so those are a
//! [`Dialect`].

use thiserror::Error;

/// Where dpkg's reading of a control file and apt's reading of its own files
/// differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// apt: `#` lines are comments, several paragraphs, a continuation line loses
    /// its indentation and ` .` stands for an empty line.
    Apt,
    /// A binary package's control file as dpkg reads it: one paragraph, no
    /// comments, a field name starts with neither `#` nor `-` and appears once.
    /// Continuation lines are kept as shipped, indentation and ` .` included, so
    /// that the stanza can be written back into the dpkg status file unchanged.
    Control,
}

/// One deb822 paragraph: its fields in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Paragraph {
    /// 1-based line of the paragraph's first field.
    pub line: usize,
    pub fields: Vec<(String, String)>,
}

impl Paragraph {
    /// A field's value; field names are case-insensitive.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct Deb822Error {
    pub line: usize,
    pub message: String,
}

/// Parse deb822 text as apt does (apt sources, `Packages`, `apt-cache show`).
pub fn parse_deb822(text: &str) -> Result<Vec<Paragraph>, Deb822Error> {
    parse(text, Dialect::Apt)
}

/// Parse deb822 text in the given dialect. Paragraphs without fields (runs of
/// blank lines) are not returned.
pub fn parse(text: &str, dialect: Dialect) -> Result<Vec<Paragraph>, Deb822Error> {
    let control = dialect == Dialect::Control;
    let mut out = Vec::new();
    let mut current = Paragraph::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| Deb822Error { line, message };
        if !control && raw.starts_with('#') {
            continue;
        }
        if raw.trim().is_empty() {
            if !current.fields.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if control && !out.is_empty() {
            return Err(err("a second stanza (a binary package has one)".into()));
        }
        if raw.starts_with([' ', '\t']) {
            let Some((_, value)) = current.fields.last_mut() else {
                return Err(err("a continuation line with no field before it".into()));
            };
            value.push('\n');
            if control {
                value.push_str(raw.trim_end());
            } else {
                let cont = raw.trim();
                if cont != "." {
                    value.push_str(cont);
                }
            }
            continue;
        }
        let Some((name, value)) = raw.split_once(':') else {
            return Err(err(format!(
                "'{}' is not a 'Field: value' line",
                raw.trim()
            )));
        };
        let valid_name = if control {
            !name.is_empty()
                && !name.starts_with(['#', '-'])
                && name.bytes().all(|b| b.is_ascii_graphic())
        } else {
            let name = name.trim();
            !name.is_empty() && !name.contains(char::is_whitespace)
        };
        let name = if control { name } else { name.trim() };
        if !valid_name {
            return Err(err(format!("'{name}' is not a field name")));
        }
        if control
            && current
                .fields
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            return Err(err(format!("field {name} appears twice")));
        }
        if current.fields.is_empty() {
            current.line = line;
        }
        current
            .fields
            .push((name.to_string(), value.trim().to_string()));
    }
    if !current.fields.is_empty() {
        out.push(current);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs() {
        let text = "Package: a\nDescription: short\n more\n .\n end\n\n\n\nPackage: b\n";
        let ps = parse_deb822(text).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("description"), Some("short\nmore\n\nend"));
        assert_eq!(ps[1].get("Package"), Some("b"));
        assert_eq!(ps[1].line, 9);
        assert_eq!(ps[1].get("Version"), None);
    }

    #[test]
    fn dialects_differ_where_dpkg_and_apt_do() {
        let text = "A: 1\nB: x\n .\n  y\n";
        let apt = &parse(text, Dialect::Apt).unwrap()[0];
        let dpkg = &parse(text, Dialect::Control).unwrap()[0];
        assert_eq!(apt.get("B"), Some("x\n\ny"));
        assert_eq!(dpkg.get("B"), Some("x\n .\n  y"));

        assert_eq!(parse("# c\nA: 1\n", Dialect::Apt).unwrap()[0].line, 2);
        assert!(parse("# c\nA: 1\n", Dialect::Control).is_err());
        assert_eq!(
            parse("A: 1\nA: 2\n", Dialect::Apt).unwrap()[0].fields.len(),
            2
        );
        let e = parse("A: 1\nA: 2\n", Dialect::Control).unwrap_err();
        assert_eq!(e.to_string(), "line 2: field A appears twice");
        assert_eq!(parse("A: 1\n\nB: 2\n", Dialect::Apt).unwrap().len(), 2);
        let e = parse("A: 1\n\nB: 2\n", Dialect::Control).unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(
            parse(" A : 1\n", Dialect::Apt).map(|_| ()),
            Err(Deb822Error {
                line: 1,
                message: "a continuation line with no field before it".into()
            })
        );
        assert!(parse("A : 1\n", Dialect::Apt).is_ok());
        assert!(parse("A : 1\n", Dialect::Control).is_err());
        assert!(parse("-A: 1\n", Dialect::Control).is_err());
    }
}
