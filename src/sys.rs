//! The libc calls std does not expose: a larger listen backlog, a signal flag and the
//! file-descriptor limit. They are declared here by hand (libc is linked by std anyway) and
//! used once at start-up.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

unsafe extern "C" {
    fn listen(fd: i32, backlog: i32) -> i32;
    fn signal(signum: i32, handler: usize) -> usize;
    fn getrlimit(resource: i32, rlim: *mut [u64; 2]) -> i32;
}

/// The soft limit on open file descriptors (`RLIMIT_NOFILE`), if known and finite.
pub fn fd_limit() -> Option<usize> {
    const RLIMIT_NOFILE: i32 = 7;
    let mut limit = [0u64; 2];
    // SAFETY: `getrlimit` writes two `rlim_t` (u64 on Linux) into the array it is given.
    let rc = unsafe { getrlimit(RLIMIT_NOFILE, &mut limit) };
    (rc == 0 && limit[0] != u64::MAX).then(|| usize::try_from(limit[0]).unwrap_or(usize::MAX))
}

/// Re-issues `listen` on a bound, listening socket with a larger backlog (mio uses 128, which
/// makes clients wait a second for SYN retries under connection bursts).
pub fn set_backlog(listener: &impl AsRawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: `listen` only reads its two integer arguments; the fd is owned by `listener`,
    // which outlives the call.
    let rc = unsafe { listen(listener.as_raw_fd(), backlog) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Set by SIGINT/SIGTERM.
pub static STOP_SIGNAL: AtomicBool = AtomicBool::new(false);
/// Count of stop signals (a second one exits at once).
static SIGNALS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn on_stop_signal(_: i32) {
    // Only async-signal-safe work here: atomics, and `_exit` on a second signal.
    STOP_SIGNAL.store(true, Ordering::SeqCst);
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
        unsafe extern "C" {
            fn _exit(status: i32) -> !;
        }
        // SAFETY: `_exit` is async-signal-safe and never returns.
        unsafe { _exit(1) }
    }
}

/// Routes SIGINT and SIGTERM to `STOP_SIGNAL`. A blocked `epoll_wait` returns `EINTR` when the
/// signal arrives, so the loop sees the flag at once.
pub fn install_stop_signals() {
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    for sig in [SIGINT, SIGTERM] {
        // SAFETY: the handler is an `extern "C" fn(i32)` that only touches atomics and calls
        // `_exit`, both async-signal-safe.
        unsafe {
            signal(sig, on_stop_signal as *const () as usize);
        }
    }
}
