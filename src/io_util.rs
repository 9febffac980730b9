//! Small reading helpers shared by the modules that stream files.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Read};
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
