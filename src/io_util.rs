//! Small reading helpers shared by the modules that stream files.

#![forbid(unsafe_code)]

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Fill `buf` from `r` unless it ends first; the count read (short only at the end).
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether two files hold the same bytes: both streamed in lock-step through the
/// caller's buffers, stopping at the first difference, so equal files are read
/// once. The error names the file that could not be read.
pub fn same_contents(
    a: &Path,
    b: &Path,
    (ba, bb): (&mut [u8], &mut [u8]),
) -> Result<bool, (PathBuf, io::Error)> {
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |e| (p, e)
    };
    let mut fa = File::open(a).map_err(at(a))?;
    let mut fb = File::open(b).map_err(at(b))?;
    loop {
        let na = read_full(&mut fa, ba).map_err(at(a))?;
        let nb = read_full(&mut fb, bb).map_err(at(b))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

/// Whether two files hold the same bytes: the same inode, else equal lengths and
/// equal 64 KiB blocks, read side by side (files are never held whole). An error
/// names the file it came from.
pub fn same_file_contents(a: &Path, b: &Path) -> Result<bool, (PathBuf, io::Error)> {
    fn at(p: &Path) -> impl FnOnce(io::Error) -> (PathBuf, io::Error) + '_ {
        move |e| (p.to_path_buf(), e)
    }
    let (ma, mb) = (
        fs::metadata(a).map_err(at(a))?,
        fs::metadata(b).map_err(at(b))?,
    );
    if ma.dev() == mb.dev() && ma.ino() == mb.ino() {
        return Ok(true);
    }
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    same_contents(a, b, (&mut ba, &mut bb))
}

#[cfg(test)]
mod same_file_tests {
    use super::same_file_contents;
    use std::fs;

    #[test]
    fn contents_are_compared_block_by_block() {
        let t = tempfile::tempdir().unwrap();
        let p = |n: &str| t.path().join(n);
        let big = vec![7u8; 200 * 1024];
        let mut other = big.clone();
        *other.last_mut().unwrap() = 8;
        fs::write(p("a"), &big).unwrap();
        fs::write(p("b"), &big).unwrap();
        fs::write(p("c"), &other).unwrap();
        fs::write(p("d"), &big[1..]).unwrap();
        fs::hard_link(p("a"), p("e")).unwrap();
        assert!(same_file_contents(&p("a"), &p("b")).unwrap());
        assert!(
            !same_file_contents(&p("a"), &p("c")).unwrap(),
            "last byte differs"
        );
        assert!(
            !same_file_contents(&p("a"), &p("d")).unwrap(),
            "lengths differ"
        );
        assert!(same_file_contents(&p("a"), &p("e")).unwrap(), "same inode");
        let (path, _) = same_file_contents(&p("a"), &p("missing")).unwrap_err();
        assert_eq!(path, p("missing"), "the error names the file");
    }
}
