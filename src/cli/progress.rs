//! Rendering the realiser's events on stderr: a live indicatif view on a
//! terminal, one line per finished step on a pipe (logs, CI), so that what a
//! pipe receives stays greppable and free of cursor movement.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use buildit_store::StorePath;
use indicatif::{
    HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike,
};

use crate::realise::events::{Event, Progress, StepKind};

/// Column (1-based) the closing `]` of a step's status lands on, as in the
/// design card: an 80-column terminal still has room for it without wrapping.
const STATUS_END: usize = 79;

/// Environment variable that overrides the terminal detection: `plain` or `tty`.
pub const MODE_ENV: &str = "BUILDIT_PROGRESS";

#[derive(Debug, Clone, Copy, Default)]
pub struct ReporterOptions {
    /// Stream every build log line, prefixed `name> ` (`-L`).
    pub print_logs: bool,
    /// Only failures (and logs, when asked for): no live view, no summary.
    pub quiet: bool,
}

/// Renders [`Event`]s on stderr; shared by every worker thread.
pub struct Reporter {
    opts: ReporterOptions,
    state: Mutex<State>,
}

struct State {
    view: View,
    /// Running steps in start order, so the header lists them stably.
    running: Vec<(StorePath, Step)>,
    total: usize,
    done: usize,
}

enum View {
    Plain(Box<dyn Write + Send>),
    Tty {
        multi: MultiProgress,
        /// Created on first use so nothing is drawn for a no-op realisation.
        header: Option<ProgressBar>,
    },
}

struct Step {
    name: String,
    bar: Option<ProgressBar>,
}

impl Reporter {
    /// Chooses the live view when stderr is a terminal (or `BUILDIT_PROGRESS=tty`),
    /// plain lines otherwise (or `BUILDIT_PROGRESS=plain`, or `quiet`).
    pub fn new(opts: ReporterOptions) -> Reporter {
        let forced = std::env::var(MODE_ENV).ok();
        let view = match forced.as_deref() {
            _ if opts.quiet => View::plain_stderr(),
            Some("plain") => View::plain_stderr(),
            // Forced onto something that may not be a terminal (tests, `script`):
            // indicatif's own stderr target would hide itself there.
            Some("tty") => View::tty(ProgressDrawTarget::term_like_with_hz(
                Box::new(AnsiTerm::new(io::stderr(), env_columns())),
                20,
            )),
            _ if io::stderr().is_terminal() => {
                let target = ProgressDrawTarget::stderr();
                // A dumb terminal hides the target, and println on a hidden
                // target drops the line: finished steps would vanish.
                if target.is_hidden() {
                    View::plain_stderr()
                } else {
                    View::tty(target)
                }
            }
            _ => View::plain_stderr(),
        };
        Reporter::with_view(opts, view)
    }

    fn with_view(opts: ReporterOptions, view: View) -> Reporter {
        Reporter {
            opts,
            state: Mutex::new(State {
                view,
                running: Vec::new(),
                total: 0,
                done: 0,
            }),
        }
    }

    /// Removes the live bars, leaving only the permanent lines. Idempotent; also
    /// run on drop, so an early return with an error does not leave spinners.
    pub fn finish(&self) {
        let mut st = self.lock();
        let running = std::mem::take(&mut st.running);
        if let View::Tty { multi, header } = &mut st.view {
            for (_, step) in running {
                if let Some(bar) = step.bar {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
            }
            if let Some(h) = header.take() {
                h.finish_and_clear();
                multi.remove(&h);
            }
            let _ = multi.clear();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked mid-event leaves at worst a stale bar; the
        // other workers' reports matter more than that.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Progress for Reporter {
    fn event(&self, event: Event<'_>) {
        let opts = self.opts;
        let mut st = self.lock();
        match event {
            Event::Planned {
                to_do,
                already_valid,
            } => {
                st.total = to_do;
                if st.view.is_live() {
                    st.update_header();
                } else if to_do > 0 && !opts.quiet {
                    st.view
                        .line(&format!("{to_do} to build, {already_valid} already valid"));
                }
            }
            Event::Started { drv, name, kind } => {
                let bar = match &st.view {
                    View::Tty { multi, .. } => {
                        let bar = multi.add(
                            ProgressBar::new_spinner()
                                .with_style(step_style())
                                .with_prefix(format!("{} {name}", kind.verb())),
                        );
                        // Keeps the spinner and elapsed time moving through
                        // long silent stretches (configure, linking).
                        bar.enable_steady_tick(Duration::from_millis(100));
                        Some(bar)
                    }
                    View::Plain(_) => {
                        if opts.print_logs && matches!(kind, StepKind::Build | StepKind::Check) {
                            st.view.line(&format!("{} {name}...", kind.verb()));
                        }
                        None
                    }
                };
                st.running.push((
                    drv.clone(),
                    Step {
                        name: name.to_string(),
                        bar,
                    },
                ));
                st.update_header();
            }
            Event::Log { drv, line } => {
                let step = st.step(drv);
                if let Some(bar) = step.and_then(|s| s.bar.as_ref()) {
                    bar.set_message(status_text(line));
                }
                if opts.print_logs {
                    let name = step.map_or_else(
                        || drv.name().trim_end_matches(".drv").to_string(),
                        |s| s.name.clone(),
                    );
                    st.view.line(&format!("{name}> {line}"));
                }
            }
            Event::Download { drv, done, total } => {
                if let Some(bar) = st.step(drv).and_then(|s| s.bar.as_ref()) {
                    bar.set_message(match total {
                        Some(t) => format!("{} / {}", HumanBytes(done), HumanBytes(t)),
                        None => HumanBytes(done).to_string(),
                    });
                }
            }
            Event::Finished {
                drv,
                name,
                kind,
                elapsed,
                result,
            } => {
                if let Some(i) = st.running.iter().position(|(p, _)| p == drv) {
                    let (_, step) = st.running.remove(i);
                    if let (Some(bar), View::Tty { multi, .. }) = (step.bar, &st.view) {
                        bar.finish_and_clear();
                        multi.remove(&bar);
                    }
                }
                st.done += 1;
                st.update_header();
                let ok = result.is_ok();
                if ok && opts.quiet {
                    return;
                }
                // Fetches and preparations are quick and bounded by the
                // network or disk; a build's duration is what people compare,
                // and any failure's tells a timeout from an immediate error.
                let shown =
                    matches!(kind, StepKind::Build | StepKind::Check | StepKind::Image) || !ok;
                let elapsed = shown.then_some(elapsed);
                let status = match result {
                    Ok(()) => "[OK]",
                    Err(crate::realise::events::CHECK_DIFFERS) => "[DIFFERS]",
                    Err(_) => "[FAILED]",
                };
                st.view
                    .line(&step_line_with(kind.verb(), name, status, elapsed));
            }
        }
    }
}

impl State {
    fn step(&self, drv: &StorePath) -> Option<&Step> {
        self.running.iter().find(|(p, _)| p == drv).map(|(_, s)| s)
    }

    fn update_header(&mut self) {
        let View::Tty { multi, header } = &mut self.view else {
            return;
        };
        let bar = header.get_or_insert_with(|| {
            // Index 0: the header stays above the step spinners whatever
            // order they were added in.
            multi.insert(0, ProgressBar::new_spinner().with_style(header_style()))
        });
        // Steps the plan did not count (a Started without a Planned) still
        // show as work, never as more done than total.
        let total = self.total.max(self.done + self.running.len());
        bar.set_prefix(format!("[{}/{total}]", self.done));
        let names: Vec<&str> = self.running.iter().map(|(_, s)| s.name.as_str()).collect();
        bar.set_message(if names.is_empty() {
            String::new()
        } else {
            format!("building: {}", names.join(", "))
        });
    }
}

impl View {
    fn plain_stderr() -> View {
        View::Plain(Box::new(io::stderr()))
    }

    fn tty(target: ProgressDrawTarget) -> View {
        View::Tty {
            multi: MultiProgress::with_draw_target(target),
            header: None,
        }
    }

    fn is_live(&self) -> bool {
        matches!(self, View::Tty { .. })
    }

    /// A permanent line. Write errors (a closed pipe) are ignored: progress is
    /// not worth failing, or panicking like `eprintln!`, a build over.
    fn line(&mut self, text: &str) {
        match self {
            View::Plain(out) => {
                let _ = writeln!(out, "{text}");
            }
            View::Tty { multi, .. } => {
                let _ = multi.println(text);
            }
        }
    }
}

fn step_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix} ({elapsed}) {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn header_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// One finished step, its status right-aligned so `]` is in column
/// [`STATUS_END`]; a head too long for that gets a single space instead.
pub(crate) fn step_line(verb: &str, name: &str, ok: bool, elapsed: Option<Duration>) -> String {
    step_line_with(verb, name, if ok { "[OK]" } else { "[FAILED]" }, elapsed)
}

/// [`step_line`] with any status (`[DIFFERS]` for a check that found a difference).
pub(crate) fn step_line_with(
    verb: &str,
    name: &str,
    status: &str,
    elapsed: Option<Duration>,
) -> String {
    let head = format!("{verb} {name}...");
    let used = head.chars().count() + status.len();
    let pad = STATUS_END.saturating_sub(used).max(1);
    let mut line = format!("{head}{:pad$}{status}", "");
    if let Some(e) = elapsed {
        line.push(' ');
        line.push_str(&Elapsed(e).to_string());
    }
    line
}

/// `0.3s`, `41.2s`, `3m07s`, `1h05m`: tenths only while they still mean something.
struct Elapsed(Duration);

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenths = (self.0.as_secs_f64() * 10.0).round() as u64;
        if tenths < 600 {
            return write!(f, "{}.{}s", tenths / 10, tenths % 10);
        }
        let secs = (tenths + 5) / 10;
        if secs < 3600 {
            write!(f, "{}m{:02}s", secs / 60, secs % 60)
        } else {
            write!(f, "{}h{:02}m", secs / 3600, secs % 3600 / 60)
        }
    }
}

/// What a log line would leave visible on a terminal, made safe to draw inside
/// a bar: tools redraw with `\r`, colour with escapes, and indent with tabs,
/// any of which would break indicatif's cursor arithmetic.
fn status_text(line: &str) -> String {
    let shown = line
        .rsplit('\r')
        .find(|s| !s.trim().is_empty())
        .unwrap_or("");
    let mut out = String::with_capacity(shown.len());
    let mut chars = shown.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI sequences end at a byte in '@'..='~'; others are one char.
                if chars.clone().next() == Some('[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.trim_end().to_string()
}

fn env_columns() -> u16 {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c| c > 0)
        .unwrap_or(80)
}

/// A terminal that is only assumed: plain ANSI sequences written to any
/// stream, for `BUILDIT_PROGRESS=tty` where stderr may be a pipe or a file.
/// Like a real one it relies on autowrap (indicatif pads every line to the
/// width instead of ending it), so a transcript is one long line to anything
/// but a terminal emulator; lines are still found as substrings.
struct AnsiTerm<W> {
    out: Mutex<W>,
    width: u16,
}

impl<W: Write> AnsiTerm<W> {
    fn new(out: W, width: u16) -> Self {
        AnsiTerm {
            out: Mutex::new(out),
            width,
        }
    }

    fn write(&self, s: &str) -> io::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(s.as_bytes())
    }
}

impl<W> fmt::Debug for AnsiTerm<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnsiTerm")
            .field("width", &self.width)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Send> TermLike for AnsiTerm<W> {
    fn width(&self) -> u16 {
        self.width
    }

    // Zero-count moves must write nothing: `ESC[0A` moves one line on most
    // terminals.
    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.write(&format!("\x1b[{n}A"))
    }

    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.write(&format!("\x1b[{n}B"))
    }

    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.write(&format!("\x1b[{n}C"))
    }

    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.write(&format!("\x1b[{n}D"))
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        self.write(&format!("{s}\n"))
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        self.write(s)
    }

    fn clear_line(&self) -> io::Result<()> {
        self.write("\r\x1b[2K")
    }

    fn flush(&self) -> io::Result<()> {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

#[cfg(test)]
#[allow(clippy::print_stderr)]
mod tests {
    use std::sync::Arc;

    use super::*;

    // The design card's sample output, verbatim.
    const CARD: [&str; 3] = [
        "Fetching hello-2.10.tar.gz...                                              [OK]",
        "Building hello-2.10...                                                     [OK] 41.2s",
        "Building broken-1.0...                                                 [FAILED] 0.3s",
    ];

    fn secs(s: f64) -> Option<Duration> {
        Some(Duration::from_secs_f64(s))
    }

    #[test]
    fn step_line_matches_the_design_card() {
        assert_eq!(
            step_line("Fetching", "hello-2.10.tar.gz", true, None),
            CARD[0]
        );
        assert_eq!(
            step_line("Building", "hello-2.10", true, secs(41.2)),
            CARD[1]
        );
        assert_eq!(
            step_line("Building", "broken-1.0", false, secs(0.3)),
            CARD[2]
        );
    }

    #[test]
    fn status_closes_in_the_same_column_ok_or_failed() {
        for (ok, elapsed) in [
            (true, None),
            (false, None),
            (true, secs(1.0)),
            (false, secs(1.0)),
        ] {
            let line = step_line("Building", "x", ok, elapsed);
            assert_eq!(line.find(']'), Some(STATUS_END - 1), "{line:?}");
        }
    }

    #[test]
    fn long_names_get_one_space_and_no_truncation() {
        let name = "n".repeat(100);
        let line = step_line("Building", &name, false, secs(2.0));
        assert_eq!(line, format!("Building {name}... [FAILED] 2.0s"));
        let line = step_line("Fetching", &name, true, None);
        assert_eq!(line, format!("Fetching {name}... [OK]"));
    }

    #[test]
    fn exactly_full_head_keeps_one_space() {
        // Longest head that still fits: `]` on the last column with one space.
        let fits = "n".repeat(STATUS_END - "Building ... [OK]".len());
        let line = step_line("Building", &fits, true, None);
        assert_eq!(line.len(), STATUS_END);
        assert!(line.ends_with("... [OK]"), "{line:?}");
        // One more character pushes the status out rather than touching it.
        let over = format!("{fits}n");
        let line = step_line("Building", &over, true, None);
        assert_eq!(line.len(), STATUS_END + 1);
        assert!(line.ends_with("... [OK]"), "{line:?}");
    }

    #[test]
    fn elapsed_formats() {
        let f = |s: f64| Elapsed(Duration::from_secs_f64(s)).to_string();
        assert_eq!(f(0.0), "0.0s");
        assert_eq!(f(0.26), "0.3s");
        assert_eq!(f(41.2), "41.2s");
        assert_eq!(f(59.94), "59.9s");
        // Would round to "60.0s"; switch units instead.
        assert_eq!(f(59.96), "1m00s");
        assert_eq!(f(187.0), "3m07s");
        assert_eq!(f(3599.4), "59m59s");
        assert_eq!(f(3599.6), "1h00m");
        assert_eq!(f(3900.0), "1h05m");
    }

    #[test]
    fn status_text_keeps_what_a_terminal_would_show() {
        assert_eq!(status_text("plain"), "plain");
        assert_eq!(status_text("a\tb"), "a b");
        assert_eq!(status_text("\x1b[1;32mgreen\x1b[0m done"), "green done");
        assert_eq!(status_text(" 10%\r 50%\r100%"), "100%");
        assert_eq!(status_text("crlf line\r"), "crlf line");
        assert_eq!(status_text("bell\x07"), "bell");
    }

    /// A cloneable sink, to read back what a reporter wrote.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn path(name: &str) -> StorePath {
        format!("{}-{name}", "0".repeat(32)).parse().unwrap()
    }

    fn run_steps(r: &Reporter) {
        let (fetch, build, broken) = (path("src.drv"), path("hello.drv"), path("broken.drv"));
        r.event(Event::Planned {
            to_do: 3,
            already_valid: 12,
        });
        r.event(Event::Started {
            drv: &fetch,
            name: "hello-2.10.tar.gz",
            kind: StepKind::Fetch,
        });
        r.event(Event::Download {
            drv: &fetch,
            done: 512,
            total: Some(2048),
        });
        r.event(Event::Finished {
            drv: &fetch,
            name: "hello-2.10.tar.gz",
            kind: StepKind::Fetch,
            elapsed: Duration::from_millis(700),
            result: Ok(()),
        });
        for (drv, name) in [(&build, "hello-2.10"), (&broken, "broken-1.0")] {
            r.event(Event::Started {
                drv,
                name,
                kind: StepKind::Build,
            });
        }
        r.event(Event::Log {
            drv: &build,
            line: "checking for gcc... gcc",
        });
        r.event(Event::Log {
            drv: &broken,
            line: "error: no",
        });
        r.event(Event::Finished {
            drv: &broken,
            name: "broken-1.0",
            kind: StepKind::Build,
            elapsed: Duration::from_millis(300),
            result: Err("builder failed with exit code 1"),
        });
        r.event(Event::Finished {
            drv: &build,
            name: "hello-2.10",
            kind: StepKind::Build,
            elapsed: Duration::from_millis(41_200),
            result: Ok(()),
        });
    }

    fn plain(opts: ReporterOptions) -> (Reporter, Buf) {
        let buf = Buf::default();
        let r = Reporter::with_view(opts, View::Plain(Box::new(buf.clone())));
        (r, buf)
    }

    #[test]
    fn plain_prints_plan_and_one_line_per_step() {
        let (r, buf) = plain(ReporterOptions::default());
        run_steps(&r);
        let expected = [
            "3 to build, 12 already valid",
            CARD[0],
            "Building broken-1.0...                                                 [FAILED] 0.3s",
            CARD[1],
        ];
        assert_eq!(buf.text(), expected.join("\n") + "\n");
    }

    #[test]
    fn plain_with_logs_adds_headers_and_prefixed_lines() {
        let (r, buf) = plain(ReporterOptions {
            print_logs: true,
            quiet: false,
        });
        run_steps(&r);
        let text = buf.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..6],
            [
                "3 to build, 12 already valid",
                CARD[0],
                "Building hello-2.10...",
                "Building broken-1.0...",
                "hello-2.10> checking for gcc... gcc",
                "broken-1.0> error: no",
            ]
        );
        // Fetches get no header: they have no log to introduce.
        assert!(!text.contains("Fetching hello-2.10.tar.gz...\n"));
    }

    #[test]
    fn quiet_prints_only_failures() {
        let (r, buf) = plain(ReporterOptions {
            print_logs: false,
            quiet: true,
        });
        run_steps(&r);
        assert_eq!(buf.text(), CARD[2].to_string() + "\n");
    }

    #[test]
    fn nothing_to_do_prints_nothing() {
        let (r, buf) = plain(ReporterOptions::default());
        r.event(Event::Planned {
            to_do: 0,
            already_valid: 7,
        });
        assert_eq!(buf.text(), "");
    }

    #[test]
    fn live_view_prints_finished_lines_and_cleans_up() {
        let buf = Buf::default();
        // No rate limit, so every draw reaches the buffer deterministically.
        let target = ProgressDrawTarget::term_like(Box::new(AnsiTerm::new(buf.clone(), 200)));
        let r = Reporter::with_view(ReporterOptions::default(), View::tty(target));
        assert!(r.lock().view.is_live());
        run_steps(&r);
        let mid = buf.text();
        for line in [CARD[0], CARD[1], CARD[2]] {
            assert!(mid.contains(line), "{line:?} missing from {mid:?}");
        }
        assert!(mid.contains("[0/3]"), "{mid:?}");
        assert!(mid.contains("building: hello-2.10, broken-1.0"), "{mid:?}");
        assert!(mid.contains("Building hello-2.10 ("), "{mid:?}");
        assert!(mid.contains("checking for gcc... gcc"), "{mid:?}");
        assert!(mid.contains("512 B / 2.00 KiB"), "{mid:?}");
        assert!(mid.contains("[3/3]"), "{mid:?}");
        // The plan summary is the header's job on a terminal.
        assert!(!mid.contains("already valid"), "{mid:?}");
        r.finish();
        r.finish();
        drop(r);
        eprintln!("{:?}", buf.text());
        // Whatever was drawn last was cleared, not left behind as a final frame.
        let end = buf.text();
        let last = end.rsplit(CARD[1]).next().unwrap_or("");
        assert!(
            last.ends_with("\x1b[2K") || !last.contains("[3/3]"),
            "{last:?}"
        );
    }

    #[test]
    fn a_poisoned_lock_does_not_stop_reporting() {
        let (r, buf) = plain(ReporterOptions::default());
        let r = Arc::new(r);
        let r2 = Arc::clone(&r);
        let _ = std::thread::spawn(move || {
            let _guard = r2.state.lock().unwrap();
            panic!("worker died holding the lock");
        })
        .join();
        assert!(r.state.is_poisoned());
        r.event(Event::Planned {
            to_do: 1,
            already_valid: 0,
        });
        assert_eq!(buf.text(), "1 to build, 0 already valid\n");
    }

    #[test]
    fn reporter_is_shareable_across_workers() {
        fn assert_sync<T: Sync + Send>() {}
        assert_sync::<Reporter>();
    }
}
