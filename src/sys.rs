//! The system calls std does not expose: a larger listen backlog, stop signals, the
//! file-descriptor limit and the units of `/proc` (clock ticks, page size), through `libc` (so
//! each platform's constants and structs are its own: `RLIMIT_NOFILE` is 7 on Linux, 8 on
//! macOS). Used at start-up and when `/metrics` is scraped.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The soft limit on open file descriptors (`RLIMIT_NOFILE`), if known and finite.
pub fn fd_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` into the struct it is given, which lives here.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY)
        .then(|| usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

/// Gives every large allocation (128 KiB and up: a joinRoom answer carrying a megabyte of
/// history, its frame) pages of its own, returned to the system when it is freed. glibc
/// otherwise raises its threshold to the size of the first such block freed, and later large
/// blocks come from the heap, which keeps their pages after they are freed: transient
/// answers then left the process's resident set megabytes above what it held.
pub fn keep_large_allocations_apart() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets a tunable of the allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, the unit of CPU times in `/proc`); 100
/// if unknown.
pub fn clock_ticks() -> u64 {
    // SAFETY: `sysconf` only reads its integer argument.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(n).ok().filter(|n| *n > 0).unwrap_or(100)
}

/// The memory page size in bytes (`sysconf(_SC_PAGESIZE)`, the unit of RSS in `/proc`); 4096
/// if unknown.
pub fn page_size() -> u64 {
    // SAFETY: `sysconf` only reads its integer argument.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|n| *n > 0).unwrap_or(4096)
}

/// Sets a socket's send buffer (`SO_SNDBUF`), which also turns off its autotuning.
pub fn set_send_buffer(socket: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `setsockopt` reads `size_of::<c_int>()` bytes from a live local; the fd is owned
    // by `socket`, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Gives the pages of freed memory back to the system (glibc's `malloc_trim`): after rooms
/// and connections go, their memory otherwise stays resident (reused, but counted in RSS) when
/// something still in use sits above it in the heap.
pub fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks the allocator's own free lists; single-threaded here.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Re-issues `listen` on a bound, listening socket with a larger backlog (mio uses 128, which
/// makes clients wait a second for SYN retries under connection bursts).
pub fn set_backlog(listener: &impl AsRawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: `listen` only reads its two integer arguments; the fd is owned by `listener`,
    // which outlives the call.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), backlog) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Set by SIGINT/SIGTERM.
pub static STOP_SIGNAL: AtomicBool = AtomicBool::new(false);
/// Count of stop signals (a second one exits at once).
static SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only async-signal-safe work here: atomics, and `_exit` on a second signal.
    STOP_SIGNAL.store(true, Ordering::SeqCst);
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
        // SAFETY: `_exit` is async-signal-safe and never returns.
        unsafe { libc::_exit(1) }
    }
}

/// Routes SIGINT and SIGTERM to `STOP_SIGNAL` with `sigaction` (without `SA_RESTART`, so a
/// blocked `epoll_wait` returns `EINTR` when the signal arrives and the loop sees the flag at
/// once).
pub fn install_stop_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed `sigaction` is a valid value to fill in; the handler is an
        // `extern "C" fn(c_int)` that only touches atomics and calls `_exit`, both
        // async-signal-safe; `sigemptyset` and `sigaction` get pointers to live locals.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction =
                on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = 0;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}
