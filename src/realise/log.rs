//! Build logs: one file per derivation under the store's log dir, laid out like
//! Nix's (`var/log/drvs/ab/cdef…-name.drv`), so `buildit log DRV` finds the last
//! build's output. A log is replaced, never appended to, by the next build.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use buildit_store::{LocalStore, StorePath};

/// Where the log of the last build of `drv` lives.
pub fn log_path(store: &LocalStore, drv: &StorePath) -> PathBuf {
    let base = drv.base_name();
    let (head, tail) = base.split_at(2);
    store.log_dir().join("drvs").join(head).join(tail)
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> io::Result<Vec<String>> {
    let mut lines = VecDeque::with_capacity(n + 1);
    for line in BufReader::new(File::open(path)?).split(b'\n') {
        lines.push_back(String::from_utf8_lossy(&line?).into_owned());
        if lines.len() > n {
            lines.pop_front();
        }
    }
    Ok(lines.into())
}

/// Copies a build's output from `pipe` to its log file line by line, handing each
/// line to `on_line` and recording when output was last seen (for
/// `--max-silent-time`). Runs until every writer has closed the pipe.
pub struct LogPump {
    /// Milliseconds since `start` at the last output.
    pub last_output_ms: Arc<AtomicU64>,
    pub start: Instant,
}

impl LogPump {
    pub fn new() -> LogPump {
        LogPump {
            last_output_ms: Arc::new(AtomicU64::new(0)),
            start: Instant::now(),
        }
    }

    pub fn run(&self, pipe: File, mut log: File, on_line: &dyn Fn(&str)) -> io::Result<()> {
        let mut reader = BufReader::with_capacity(64 * 1024, pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            // A line without newline at EOF still counts; a very long line is cut
            // into pieces so that one runaway write cannot exhaust memory.
            let n = (&mut reader).take(64 * 1024).read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            self.last_output_ms
                .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
            log.write_all(&line)?;
            let text = String::from_utf8_lossy(&line);
            on_line(text.trim_end_matches(['\n', '\r']));
        }
        log.flush()
    }
}

impl Default for LogPump {
    fn default() -> Self {
        Self::new()
    }
}

/// Create (replacing) the log file of `drv`.
pub fn create_log(store: &LocalStore, drv: &StorePath) -> io::Result<(File, PathBuf)> {
    let path = log_path(store, drv);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let f = File::create(&tmp)?;
    // The new log replaces the old one at once, so readers never see a mix.
    fs::rename(&tmp, &path)?;
    Ok((f, path))
}
