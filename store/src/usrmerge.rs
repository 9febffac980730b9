//! The merged-usr layout: which top-level directories are links into `/usr`.
//!
//! It lives here, the crate every other one depends on, because the Debian
//! unpacker and build roots (buildit), the image lowering (buildit_lang) and the
//! store's own builders all have to agree on it: a path folded by one and not
//! linked by another is a file that disappears.

/// Top-level directories that merged-usr systems alias into `/usr`: a package's
/// `lib/x` is unpacked at `usr/lib/x`, and a build root links `/lib` to `usr/lib`
/// when `usr/lib` exists.
pub const MERGED_USR_DIRS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// The merged-usr links that every skeleton root (sandbox root, image base) has,
/// whatever it holds: [`MERGED_USR_DIRS`] less the multilib directories, which
/// exist only where their libraries do (a dangling `/libx32` would change every
/// image and every derivation that lists it).
pub const MERGED_USR_LINKS: [(&str, &str); 4] = [
    ("bin", "usr/bin"),
    ("sbin", "usr/sbin"),
    ("lib", "usr/lib"),
    ("lib64", "usr/lib64"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_folded_dirs() {
        for (link, target) in MERGED_USR_LINKS {
            assert!(MERGED_USR_DIRS.contains(&link));
            assert_eq!(target, format!("usr/{link}"));
        }
    }
}
