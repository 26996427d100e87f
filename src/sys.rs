//! The system calls std does not expose: listeners with a larger backlog and the options their
//! connections start with, stop signals, the file-descriptor limit and the units of `/proc`
//! (clock ticks, page size), through `libc` (so each platform's constants and structs are its
//! own: `RLIMIT_NOFILE` is 7 on Linux, 8 on macOS). Used at start-up and when `/metrics` is
//! scraped.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
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

/// `setsockopt` with an integer value.
fn set_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `setsockopt` reads `size_of::<c_int>()` bytes from a live local; `fd` is open
    // for the call (every caller holds the socket it comes from).
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
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

/// `listen` with `backlog` on a bound socket, or again on a listening one to enlarge its
/// backlog (std and mio use 128, which makes clients wait a second for SYN retries under
/// connection bursts).
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

/// A non-blocking listening socket on `addr` with `backlog` (`set_backlog`). The sockets it
/// accepts start with its options, which Linux copies to them: no Nagle (`TCP_NODELAY`: each
/// write goes out at once), and a send buffer of `send_buffer` bytes (`SO_SNDBUF`, which also
/// turns off its autotuning). They are set before `listen`, so no connection is ever accepted
/// without them. `reuse_port`: other processes may bind it too (`SO_REUSEPORT`: the kernel
/// spreads new connections across them).
pub fn listen(
    addr: std::net::SocketAddr,
    backlog: i32,
    reuse_port: bool,
    send_buffer: usize,
) -> io::Result<std::net::TcpListener> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (family, storage, len) = sockaddr(addr);
    // SAFETY: `socket` takes three integers and returns a new fd (or -1).
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just made and is owned by nothing else: it is closed on drop.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_option(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuse_port {
        set_option(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    set_option(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    let send_buffer = libc::c_int::try_from(send_buffer).unwrap_or(libc::c_int::MAX);
    set_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, send_buffer)?;
    // SAFETY: `storage` holds a valid socket address of `len` bytes for `family`.
    if unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    set_backlog(&owned, backlog)?;
    Ok(std::net::TcpListener::from(owned))
}

/// A socket address as the C structs hold it: (family, storage, length).
fn sockaddr(addr: std::net::SocketAddr) -> (libc::c_int, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero `sockaddr_storage` is a valid value (it is plain data).
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        std::net::SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is larger than and aligned for `sockaddr_in`.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (
                libc::AF_INET,
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        std::net::SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: `sockaddr_storage` is larger than and aligned for `sockaddr_in6`.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                libc::AF_INET6,
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn option(socket: &impl AsRawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `getsockopt` writes at most `len` bytes into `value`, a live local.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        value
    }

    /// The server sets its connections' options once, on its listener: every socket it
    /// accepts has them, with `SO_REUSEPORT` or without.
    #[test]
    fn accepted_sockets_start_with_the_listeners_options() {
        let accept = |l: &TcpListener| {
            let _client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            for _ in 0..1000 {
                match l.accept() {
                    Ok((s, _)) => return s,
                    // `listen`'s listener is non-blocking.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(1))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            panic!("no connection to accept");
        };
        let sndbuf = |s: &TcpStream| option(s, libc::SOL_SOCKET, libc::SO_SNDBUF);
        let plain = accept(&TcpListener::bind("127.0.0.1:0").unwrap());
        assert_eq!(option(&plain, libc::IPPROTO_TCP, libc::TCP_NODELAY), 0);
        for reuse_port in [false, true] {
            let addr = "127.0.0.1:0".parse().unwrap();
            let tuned = accept(&listen(addr, 16, reuse_port, 64 * 1024).unwrap());
            assert_ne!(option(&tuned, libc::IPPROTO_TCP, libc::TCP_NODELAY), 0);
            // Linux reports twice the size asked for (its bookkeeping share).
            assert_eq!(sndbuf(&tuned), 2 * 64 * 1024);
            assert_ne!(sndbuf(&plain), sndbuf(&tuned));
        }
    }
}
