//! Ctrl-C and SIGTERM. The signals are blocked in every thread from the start
//! (threads inherit the mask) and taken by one thread with `sigwait`, which
//! needs no signal handler: when a realisation runs (the token is armed), the
//! first one cancels it cleanly — sandboxes killed, temp trees removed — and a
//! second ends buildit at once; otherwise the first ends it. Child processes
//! start with an empty mask (std and the sandbox reset it).

use nix::sys::signal::{SigSet, Signal};

use crate::realise::CancelToken;

/// Exit status of a process ended by an interrupt, as shells report one.
const INTERRUPTED: i32 = 130;

/// Starts watching; call before any other thread exists.
pub fn watch() -> CancelToken {
    let token = CancelToken::new();
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if set.thread_block().is_err() {
        // Signals keep their default action: buildit ends at once.
        return token;
    }
    let t = token.clone();
    let spawned = std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || loop {
            let Ok(_) = set.wait() else {
                return;
            };
            if t.is_armed() && !t.is_cancelled() {
                t.cancel();
            } else {
                std::process::exit(INTERRUPTED);
            }
        });
    if spawned.is_err() {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        let _ = set.thread_unblock();
    }
    token
}
