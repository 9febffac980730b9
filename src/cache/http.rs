//! `http(s)://…`: read a cache served over HTTP (any static file server).

use std::io::Read;
use std::path::Path;

use super::{Backend, CacheError};

pub struct HttpBackend {
    url: String,
}

impl HttpBackend {
    pub fn open(url: &str) -> Result<HttpBackend, CacheError> {
        Ok(HttpBackend {
            url: url.trim_end_matches('/').to_string(),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> CacheError {
        CacheError::Transport {
            url: self.url.clone(),
            message: e.to_string(),
        }
    }
}

impl Backend for HttpBackend {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>, CacheError> {
        match crate::fetch::http_get_optional(&format!("{}/{key}", self.url)) {
            Ok(Some(body)) => Ok(Some(body)),
            Ok(None) => Ok(None),
            Err(e) => Err(self.err(format!("{key}: {e}"))),
        }
    }

    fn exists(&self, key: &str) -> Result<bool, CacheError> {
        Ok(self.get(key)?.is_some())
    }

    fn put(&self, _key: &str, _from: &Path) -> Result<(), CacheError> {
        Err(CacheError::ReadOnly {
            url: self.url.clone(),
        })
    }
}
