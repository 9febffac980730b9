//! `file:///dir`: a cache in a local directory (or a mounted share).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::{Backend, CacheError};

pub struct FileBackend {
    url: String,
    root: PathBuf,
}

impl FileBackend {
    pub fn open(url: &str) -> Result<FileBackend, CacheError> {
        let path = url
            .strip_prefix("file://")
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| CacheError::UnsupportedUrl(url.to_string()))?;
        Ok(FileBackend {
            url: url.to_string(),
            root: PathBuf::from(path),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> CacheError {
        CacheError::Transport {
            url: self.url.clone(),
            message: e.to_string(),
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf, CacheError> {
        if key.is_empty()
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(CacheError::Invalid(format!("bad cache key '{key}'")));
        }
        Ok(self.root.join(key))
    }
}

impl Backend for FileBackend {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>, CacheError> {
        match fs::File::open(self.path(key)?) {
            Ok(f) => Ok(Some(Box::new(io::BufReader::new(f)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(format!("{key}: {e}"))),
        }
    }

    fn exists(&self, key: &str) -> Result<bool, CacheError> {
        Ok(self.path(key)?.is_file())
    }

    fn put(&self, key: &str, from: &Path) -> Result<(), CacheError> {
        let dest = self.path(key)?;
        let dir = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| self.err(format!("{}: {e}", dir.display())))?;
        // Copy beside the final name, flush, then rename: a reader sees the whole
        // object or none of it, even if we are killed half-way.
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("obj"),
            std::process::id()
        ));
        let result = (|| -> io::Result<()> {
            let mut src = fs::File::open(from)?;
            let mut out = fs::File::create(&tmp)?;
            io::copy(&mut src, &mut out)?;
            out.sync_all()?;
            fs::rename(&tmp, &dest)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(self.err(format!("{key}: {e}")));
        }
        Ok(())
    }
}
