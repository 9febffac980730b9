//! Archive paths: normalised (no `./`, `.` or `..`), then folded for merged-usr
//! (`lib/x` is written at `usr/lib/x`), link targets included.

/// Top-level directories that merged-usr systems alias into `/usr`.
pub use buildit_store::usrmerge::MERGED_USR_DIRS;

/// An archive path without `./`, empty and `.` components; `None` for the root.
/// Errors are reasons the path is unsafe.
pub(super) fn normalise(raw: &[u8]) -> Result<Option<String>, String> {
    if raw.contains(&0) {
        return Err("the path contains a NUL byte".into());
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute path".into());
    }
    let s = std::str::from_utf8(raw).map_err(|_| "the path is not UTF-8".to_string())?;
    let mut out = String::with_capacity(s.len());
    for comp in s.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err("the path contains `..`".into()),
            c => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(c);
            }
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

pub(super) fn is_folded_top(first: &str) -> bool {
    MERGED_USR_DIRS.contains(&first)
}

/// `lib/x` → `usr/lib/x`; everything else unchanged. `rel` is normalised.
pub fn fold(rel: &str) -> String {
    let first = rel.split('/').next().unwrap_or(rel);
    if is_folded_top(first) {
        format!("usr/{rel}")
    } else {
        rel.to_string()
    }
}

/// Lexically resolve `target` relative to the directory `dir` (components), the way
/// the kernel would if no component were a symlink; `..` stops at the root.
fn resolve_lexically<'a>(dir: &[&'a str], target: &'a str) -> Vec<&'a str> {
    let mut out: Vec<&str> = dir.to_vec();
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// The symlink target to write for a link the package has at `rel` (unfolded),
/// which is written at `fold(rel)`.
///
/// Absolute targets into a folded directory are folded. A relative target is kept
/// as written whenever it still names the same (folded) file from the link's new
/// place, which is always the case in practice: Debian policy makes links that cross
/// top-level directories absolute. Otherwise, rather than leaving a dangling link,
/// the target is recomputed from the link's original place and made relative again.
pub fn fold_link_target(rel: &str, target: &str) -> String {
    if let Some(abs) = target.strip_prefix('/') {
        let abs = abs.trim_start_matches('/');
        let first = abs.split('/').next().unwrap_or(abs);
        return if is_folded_top(first) {
            format!("/usr/{abs}")
        } else {
            target.to_string()
        };
    }
    let folded = fold(rel);
    let old_dir: Vec<&str> = parent_components(rel);
    let new_dir: Vec<&str> = parent_components(&folded);
    let meant = fold(&resolve_lexically(&old_dir, target).join("/"));
    let meant: Vec<&str> = meant.split('/').filter(|c| !c.is_empty()).collect();
    if resolve_lexically(&new_dir, target) == meant {
        return target.to_string();
    }
    let common = new_dir
        .iter()
        .zip(&meant)
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<&str> = vec![".."; new_dir.len() - common];
    parts.extend(&meant[common..]);
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

fn parent_components(rel: &str) -> Vec<&str> {
    let mut comps: Vec<&str> = rel.split('/').collect();
    comps.pop();
    comps
}

// ---------------------------------------------------------------------------
// ar

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links_that_move_are_rewritten() {
        assert_eq!(fold_link_target("sbin/x", "../usr/sbin/y"), "y");
        assert_eq!(fold_link_target("usr/bin/z", "../../bin/bash"), "bash");
        assert_eq!(fold_link_target("sbin/x", "../etc/x"), "../../etc/x");
        assert_eq!(fold_link_target("lib/a/b.wants/c", "../c"), "../c");
        assert_eq!(
            fold_link_target("usr/share/l/LC_TIME/x", "../LC_MESSAGES/x"),
            "../LC_MESSAGES/x"
        );
        assert_eq!(fold_link_target("usr/lib/x", "/lib64/y"), "/usr/lib64/y");
        assert_eq!(fold_link_target("usr/lib/x", "/libexec/y"), "/libexec/y");
        assert_eq!(fold_link_target("usr/lib/x", "/usr/lib/y"), "/usr/lib/y");
        assert_eq!(fold_link_target("bin/x", "."), ".");
        assert_eq!(fold_link_target("etc/x", "../bin"), "../usr/bin");
    }
}
