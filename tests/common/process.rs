//! The `pairchat` binary as a child process on 127.0.0.1, for the tests that drive the real
//! binary (`ops`, and the Node-driven `e2e` and `browser` suites).

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pairchat");
/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A `pairchat` process on 127.0.0.1; killed on drop if still running.
pub struct Proc {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Proc {
    /// Starts the binary on port 0 and waits for its `listening on` line (plain or JSON).
    pub fn start(args: &[&str]) -> Proc {
        Proc::spawn("0", args, &[], true)
    }

    /// Starts the binary on port 0 with `env` set, and waits for its `listening on` line.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::spawn("0", args, env, true)
    }

    /// Starts the binary on `port` with `env` set, and waits until the port accepts (for log
    /// levels that hide the start line).
    pub fn start_quiet(port: u16, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::spawn(&port.to_string(), args, env, false)
    }

    fn spawn(port: &str, args: &[&str], env: &[(&str, &str)], wait_line: bool) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(["--host", "127.0.0.1", "--port", port])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Only what the test gives configures the server, whatever this environment says.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("PAIRCHAT_")) || key == "PORT" {
                cmd.env_remove(key);
            }
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let reader = {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    {
                        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                        log.push_str(&line);
                        log.push('\n');
                    }
                    if let Some(rest) = line.split("listening on ").nth(1)
                        && let Some(tx) = tx.take()
                    {
                        let addr: String = rest
                            .chars()
                            .take_while(|c| *c != '"' && !c.is_whitespace())
                            .collect();
                        let _ = tx.send(addr);
                    }
                }
            })
        };
        let mut proc = Proc {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
            reader: Some(reader),
        };
        if wait_line {
            match rx.recv_timeout(START_TIMEOUT) {
                Ok(addr) => proc.addr = addr,
                Err(e) => panic!(
                    "no `listening on` line ({e}); stderr:\n{}",
                    proc.stop_and_log()
                ),
            }
        } else {
            let deadline = Instant::now() + START_TIMEOUT;
            while TcpStream::connect(&proc.addr).is_err() {
                if proc.child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    let addr = proc.addr.clone();
                    panic!(
                        "server never accepted on {addr}; stderr:\n{}",
                        proc.stop_and_log()
                    );
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        proc
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn term(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// The exit status, if the process ends within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// What the process wrote to stderr so far.
    pub fn log_so_far(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for the process to end (it must have been told to), then everything it wrote.
    pub fn log_after_exit(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.log_so_far()
    }

    /// SIGTERM (kill after 5 s), then everything the process wrote.
    pub fn stop_and_log(&mut self) -> String {
        if self.running() {
            self.term();
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        self.log_after_exit()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// An IPv4 address of this machine that is not loopback (the one a packet to the outside would
/// leave from), for tests of what a remote peer sees; `None` (the test says it skips that
/// part) on a machine with no such address. No packet is sent: connecting a UDP socket only
/// picks the route.
pub fn non_loopback_ipv4() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // TEST-NET-3: never a local address, routed like any other.
    socket.connect("203.0.113.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

impl Proc {
    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the address")
    }
}

/// The resident set of process `pid`, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The resident set of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> usize {
    rss_kib(pid) as usize * 1024
}
