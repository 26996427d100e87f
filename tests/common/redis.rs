//! A real `redis-server` for the cluster tests, and pairchat nodes on it.
//!
//! [`Redis`] runs Debian's `redis-server` on a free port of 127.0.0.1 with persistence off,
//! keeps what it prints for a failing test's report, and can be stopped, frozen and restarted
//! on the same port; it is killed on drop. [`redis_cli`] sends one command over a raw
//! `TcpStream` (RESP, no client library): the tests use it to read what the nodes keep, never
//! to write behind their back. [`start_node`] starts a `pairchat --redis` process and waits
//! until its link to Redis is up.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::HttpConn;
use super::chat::{HEALTH, metric, scrape_addr};
use super::process::{Proc, free_port};
use super::tools::{find_program, skip};

/// How long `redis-server` may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports tried when the one picked is taken before Redis binds it.
const PORT_TRIES: usize = 5;
/// How long `redis_cli` waits to connect and for a reply.
const CLI_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a new node may take to make its link to Redis.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` process on 127.0.0.1; killed on drop.
pub struct Redis {
    program: PathBuf,
    port: u16,
    /// More arguments of every start (`start_with`).
    extra: Vec<String>,
    child: Option<Child>,
    /// stdout and stderr of every run, in order.
    log: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Redis {
    /// Starts `redis-server` from `PATH`, or prints a loud SKIPPED line saying `suite` did not
    /// run and returns `None` when there is none (panics instead when `CI` is set).
    pub fn start(suite: &str) -> Option<Redis> {
        Redis::start_with(suite, &[])
    }

    /// `start` with more arguments for `redis-server` (`--requirepass`, `--user`, …).
    pub fn start_with(suite: &str, extra: &[&str]) -> Option<Redis> {
        let Some(program) = find_program("redis-server") else {
            skip(
                suite,
                "redis-server not found on PATH",
                "install Redis (Debian: apt-get install redis-server)",
            );
            return None;
        };
        let mut redis = Redis {
            program,
            port: 0,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            readers: Vec::new(),
        };
        // Redis cannot bind port 0: a port found free may be taken before it binds.
        for _ in 0..PORT_TRIES {
            redis.port = free_port();
            match redis.spawn() {
                Ok(()) => return Some(redis),
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("redis-server did not start:\n{log}"),
            }
        }
        panic!("redis-server found no free port:\n{}", redis.log());
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: no goodbye to its clients beyond the kernel's FIN), and
    /// waits for it to be gone. Its data is lost (no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    /// Starts a new, empty server on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        self.stop();
        self.log_line("---- restarted ----");
        if let Err(log) = self.spawn() {
            panic!("redis-server did not restart on {}:\n{log}", self.port);
        }
    }

    /// SIGSTOP: the server keeps its connections and its port but answers nothing.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Redis::freeze`].
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("a running redis-server");
        // SAFETY: a plain kill(2) of our own child, which has not been waited for (so its pid
        // cannot have been reused).
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill redis-server");
    }

    /// Everything the server printed, over every run.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn log_line(&self, line: &str) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.push_str(line);
        log.push('\n');
    }

    /// Starts the process on `self.port` and waits until it answers PING; `Err` with its
    /// output if it exits or stays silent.
    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let dir = std::env::temp_dir();
        let mut child = Command::new(&self.program)
            .args(["--bind", "127.0.0.1", "--port", &port])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        self.readers.push(self.keep(stdout));
        self.readers.push(self.keep(stderr));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // Up: it answers (`NOAUTH` when a password is required).
            match redis_cli(&self.url(), &["PING"]) {
                Ok(Resp::Simple(pong)) if pong == "PONG" => return Ok(()),
                Ok(Resp::Error(e)) if e.starts_with("NOAUTH") => return Ok(()),
                _ => {}
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| !matches!(c.try_wait(), Ok(None)));
            if exited || Instant::now() > deadline {
                self.stop();
                return Err(self.log());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// A thread copying `pipe`'s lines into the log.
    fn keep(&self, pipe: impl Read + Send + 'static) -> JoinHandle<()> {
        let log = Arc::clone(&self.log);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SIGKILL ends a frozen server too.
        self.stop();
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    /// A bulk string; `None` is nil.
    Bulk(Option<String>),
    /// An array; `None` is nil.
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub fn int(&self) -> Option<i64> {
        match self {
            Resp::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The strings of an array reply, sorted (KEYS, SMEMBERS, HGETALL's fields and values).
    pub fn strings(&self) -> Vec<String> {
        let Resp::Array(Some(items)) = self else {
            return Vec::new();
        };
        let mut out: Vec<String> = items
            .iter()
            .filter_map(|i| match i {
                Resp::Bulk(Some(s)) | Resp::Simple(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }
}

/// Sends one command to the Redis at `url` (`redis://host:port`, no auth, database 0) on a new
/// connection and reads its reply.
pub fn redis_cli(url: &str, args: &[&str]) -> io::Result<Resp> {
    let mut replies = redis_cli_all(url, &[args])?;
    replies
        .pop()
        .ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
}

/// Sends several commands (`AUTH`, `SELECT`, then what to read) on one new connection and
/// reads their replies.
pub fn redis_cli_all(url: &str, commands: &[&[&str]]) -> io::Result<Vec<Resp>> {
    let hostport = url
        .strip_prefix("redis://")
        .and_then(|r| r.split('/').next())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, url.to_string()))?;
    let addr: SocketAddr = hostport
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, url.to_string()))?;
    let mut stream = TcpStream::connect_timeout(&addr, CLI_TIMEOUT)?;
    stream.set_read_timeout(Some(CLI_TIMEOUT))?;
    let mut command = String::new();
    for args in commands {
        command.push_str(&format!("*{}\r\n", args.len()));
        for arg in *args {
            command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
    }
    stream.write_all(command.as_bytes())?;
    let mut reader = BufReader::new(stream);
    commands.iter().map(|_| read_resp(&mut reader)).collect()
}

fn read_resp(r: &mut impl BufRead) -> io::Result<Resp> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.strip_suffix("\r\n").ok_or_else(|| bad(&line))?;
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| bad("an empty line"))?;
    let len = || rest.parse::<i64>().map_err(|_| bad(line));
    Ok(match kind {
        "+" => Resp::Simple(rest.to_string()),
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Int(len()?),
        "$" => match usize::try_from(len()?) {
            Err(_) => Resp::Bulk(None),
            Ok(n) => {
                let mut bytes = vec![0; n + 2];
                r.read_exact(&mut bytes)?;
                bytes.truncate(n);
                Resp::Bulk(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
        },
        "*" => match usize::try_from(len()?) {
            Err(_) => Resp::Array(None),
            Ok(n) => Resp::Array(Some(
                (0..n).map(|_| read_resp(r)).collect::<Result<_, _>>()?,
            )),
        },
        _ => return Err(bad(line)),
    })
}

/// Starts `pairchat --redis <redis> <flags>` and waits until its link to Redis is up.
pub fn start_node(redis: &Redis, flags: &[&str]) -> Proc {
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str()];
    args.extend_from_slice(flags);
    let mut proc = Proc::start(&args);
    if let Err(state) = wait_redis_state(&proc.addr, "up", LINK_TIMEOUT) {
        panic!(
            "the node's link to Redis is {state} after {LINK_TIMEOUT:?}; its log:\n{}\nredis:\n{}",
            proc.stop_and_log(),
            redis.log()
        );
    }
    proc
}

/// `GET /health` of the server at `addr`, as JSON.
pub fn health(addr: &str) -> Value {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(super::READ_TIMEOUT)).unwrap();
    let mut conn = HttpConn::new(stream);
    conn.send(HEALTH);
    let res = conn.response().expect("a /health response");
    assert_eq!(res.status, 200, "/health: {}", res.text());
    res.json()
}

/// Polls `/health` until its `redis` field is `state` (`up` or `down`): how long it took, or
/// the last state seen after `limit`.
pub fn wait_redis_state(addr: &str, state: &str, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let seen = health(addr)["redis"].to_string();
        if seen == format!("\"{state}\"") {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(seen);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until each node at `addrs` knows all the others' addresses (each reads them from
/// Redis every second): before that, a relay or a recovery claim cannot find its node.
pub fn wait_peers(addrs: &[SocketAddr]) {
    let others = addrs.len() as u64 - 1;
    let started = Instant::now();
    while !addrs
        .iter()
        .all(|a| metric(&scrape_addr(*a), "pairchat_cluster_peers") == others)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nodes never met"
        );
        thread::sleep(Duration::from_millis(50));
    }
}
