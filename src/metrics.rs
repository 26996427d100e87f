//! Counters of the loop, rendered in the Prometheus text format at `GET /metrics`, and the
//! standard `process_*` metrics of the Prometheus client libraries (Linux: read from `/proc`).
//!
//! Counting is a plain `u64` increment on the loop thread; rendering happens only when scraped.
//! Gauges that the loop already knows (open connections, sessions) are read at render time.
//! Label values are snake_case. Every family rendered is listed in README.md (a test scrapes
//! a running server and checks).

use std::fmt::Write as _;

use crate::engine::CloseReason;

/// Why input was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// A polling body over max payload (413).
    PayloadTooLarge,
    /// A WebSocket message over max payload (close 1009).
    MessageTooBig,
    /// Not Engine.IO / Socket.IO, or not HTTP.
    Malformed,
    /// Request headers too large (431).
    HeadersTooLarge,
    /// The server is at `--max-connections` (503).
    OverCapacity,
    /// A client address is at `--max-connections-per-ip`.
    PerIpLimit,
    /// A client that stopped reading overflowed its output buffer.
    SlowConsumer,
    /// Headers not complete within `--header-timeout`.
    HeaderTimeout,
    /// A browser `Origin` that `--cors-origin` does not allow (403).
    ForbiddenOrigin,
}

impl Rejected {
    /// In declaration order, so `why as usize` indexes the counters.
    const ALL: [Rejected; 9] = [
        Rejected::PayloadTooLarge,
        Rejected::MessageTooBig,
        Rejected::Malformed,
        Rejected::HeadersTooLarge,
        Rejected::OverCapacity,
        Rejected::PerIpLimit,
        Rejected::SlowConsumer,
        Rejected::HeaderTimeout,
        Rejected::ForbiddenOrigin,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::PayloadTooLarge => "payload_too_large",
            Rejected::MessageTooBig => "message_too_big",
            Rejected::Malformed => "malformed",
            Rejected::HeadersTooLarge => "headers_too_large",
            Rejected::OverCapacity => "over_capacity",
            Rejected::PerIpLimit => "per_ip_limit",
            Rejected::SlowConsumer => "slow_consumer",
            Rejected::HeaderTimeout => "header_timeout",
            Rejected::ForbiddenOrigin => "forbidden_origin",
        }
    }
}

const CLOSE_REASONS: [CloseReason; 7] = [
    CloseReason::TransportClose,
    CloseReason::ClientClose,
    CloseReason::PingTimeout,
    CloseReason::ParseError,
    CloseReason::TransportError,
    CloseReason::ServerClose,
    CloseReason::ServerShutdown,
];

/// Upper bounds (µs) of the loop-turn duration histogram's buckets: a turn of a few
/// sessions' events takes tens of µs, a stall worth an alert milliseconds to a second.
pub const LOOP_TURN_BUCKETS_US: [u64; 15] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000,
];

/// The loop's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// TCP connections accepted.
    pub connections_accepted: u64,
    /// Engine.IO sessions opened.
    pub sessions_opened: u64,
    /// Sessions closed to make room at the cap (never heard from).
    pub sessions_reclaimed: u64,
    sessions_closed: [u64; CLOSE_REASONS.len()],
    /// Upgrades to WebSocket completed.
    pub upgrades_ok: u64,
    /// Upgrades abandoned (probe failed, connection lost, timed out).
    pub upgrades_failed: u64,
    rejected: [u64; Rejected::ALL.len()],
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Loop iterations.
    pub loop_iterations: u64,
    /// Loop iterations by duration: counts per `LOOP_TURN_BUCKETS_US` bucket (the last one
    /// is everything longer), and the sum of all durations in microseconds.
    loop_turns: [u64; LOOP_TURN_BUCKETS_US.len() + 1],
    loop_turns_us: u64,
    /// Panics caught at the dispatch boundary.
    pub panics: u64,
    /// Sessions and connections the sweep found with nothing left to end them.
    pub zombies: u64,
    /// Connections relayed to the node that owns their session (cluster mode).
    pub relays: u64,
    /// Relays whose owner node could not be reached (answered `Session ID unknown`).
    pub relays_failed: u64,
    /// When the process started, in seconds since the epoch (read once; `None` where unknown).
    pub process_start: Option<f64>,
}

impl Metrics {
    /// Records how long one loop turn took.
    pub fn loop_turn(&mut self, us: u64) {
        self.loop_iterations += 1;
        let bucket = LOOP_TURN_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LOOP_TURN_BUCKETS_US.len());
        self.loop_turns[bucket] += 1;
        self.loop_turns_us += us;
    }

    /// Counts a closed session.
    pub fn session_closed(&mut self, reason: CloseReason) {
        if let Some(i) = CLOSE_REASONS.iter().position(|r| *r == reason) {
            self.sessions_closed[i] += 1;
        }
    }

    /// Counts refused input.
    pub fn reject(&mut self, why: Rejected) {
        self.rejected[why as usize] += 1;
    }

    /// How often `why` was counted.
    pub fn rejected(&self, why: Rejected) -> u64 {
        self.rejected[why as usize]
    }

    /// Renders everything; `gauges` are the loop's current counts. Rendering changes nothing,
    /// so any number of scrapers see the same series.
    pub fn render(&self, out: &mut String, gauges: &Gauges) {
        process::render(out, self.process_start);
        let g = gauges;
        labelled_gauge(
            out,
            "pairchat_connections",
            "Open TCP connections by kind.",
            "kind",
            [
                ("http", g.http_connections),
                ("websocket", g.websocket_connections),
            ],
        );
        labelled_gauge(
            out,
            "pairchat_sessions",
            "Open Engine.IO sessions by transport.",
            "transport",
            [
                ("polling", g.polling_sessions),
                ("websocket", g.websocket_sessions),
            ],
        );
        gauge(
            out,
            "pairchat_parked_polls",
            "Long-poll GETs held open until there is output for their session.",
            g.parked_polls,
        );
        counter(
            out,
            "pairchat_connections_accepted_total",
            "TCP connections accepted.",
            self.connections_accepted,
        );
        counter(
            out,
            "pairchat_sessions_opened_total",
            "Engine.IO sessions opened.",
            self.sessions_opened,
        );
        labelled_counter(
            out,
            "pairchat_sessions_closed_total",
            "Engine.IO sessions closed, by reason.",
            "reason",
            CLOSE_REASONS
                .iter()
                .map(|r| r.label())
                .zip(self.sessions_closed),
        );
        labelled_counter(
            out,
            "pairchat_upgrades_total",
            "Upgrades from polling to WebSocket, by result.",
            "result",
            [("ok", self.upgrades_ok), ("failed", self.upgrades_failed)],
        );
        labelled_counter(
            out,
            "pairchat_rejected_total",
            "Input refused by the transport layers, by reason.",
            "reason",
            Rejected::ALL.iter().map(|r| r.as_str()).zip(self.rejected),
        );
        counter(
            out,
            "pairchat_bytes_in_total",
            "Bytes read from clients.",
            self.bytes_in,
        );
        counter(
            out,
            "pairchat_bytes_out_total",
            "Bytes written to clients.",
            self.bytes_out,
        );
        counter(
            out,
            "pairchat_loop_iterations_total",
            "Event loop iterations.",
            self.loop_iterations,
        );
        let _ = writeln!(
            out,
            "# HELP pairchat_loop_turn_seconds Event loop iterations by duration.\n\
             # TYPE pairchat_loop_turn_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, n) in self.loop_turns.iter().enumerate() {
            cumulative += n;
            match LOOP_TURN_BUCKETS_US.get(i) {
                Some(us) => {
                    let le = *us as f64 / 1e6;
                    let _ = writeln!(
                        out,
                        "pairchat_loop_turn_seconds_bucket{{le=\"{le}\"}} {cumulative}"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "pairchat_loop_turn_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "pairchat_loop_turn_seconds_sum {:.6}\npairchat_loop_turn_seconds_count {cumulative}",
            self.loop_turns_us as f64 / 1e6
        );
        counter(
            out,
            "pairchat_relays_total",
            "Client connections relayed to the cluster node that owns their session.",
            self.relays,
        );
        counter(
            out,
            "pairchat_relays_failed_total",
            "Relays whose owner node could not be reached (answered Session ID unknown).",
            self.relays_failed,
        );
        counter(
            out,
            "pairchat_zombies_total",
            "Sessions and connections closed by the periodic sweep: nothing else would have ended them (a bug, or what a caught panic left).",
            self.zombies,
        );
        counter(
            out,
            "pairchat_sessions_reclaimed_total",
            "Sessions never heard from, closed to make room for a new one at the session cap.",
            self.sessions_reclaimed,
        );
        counter(
            out,
            "pairchat_panics_total",
            "Panics caught while handling one connection (that connection was closed).",
            self.panics,
        );
    }
}

/// Counts the loop reads off its tables when scraped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    /// HTTP connections (including parked polls).
    pub http_connections: u64,
    /// WebSocket connections.
    pub websocket_connections: u64,
    /// Sessions on long-polling.
    pub polling_sessions: u64,
    /// Sessions on WebSocket.
    pub websocket_sessions: u64,
    /// Long-poll GETs held open, waiting for output.
    pub parked_polls: u64,
}

/// Appends a counter with one sample.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, help, "counter", "", [("", value)]);
}

/// Appends a counter with one sample per value of `label`.
pub fn labelled_counter<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) {
    family(out, name, help, "counter", label, samples);
}

/// Appends a gauge with one sample.
pub fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, help, "gauge", "", [("", value)]);
}

/// Appends a gauge with one sample per value of `label`.
pub fn labelled_gauge<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) {
    family(out, name, help, "gauge", label, samples);
}

fn family<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (value, n) in samples {
        if label.is_empty() {
            let _ = writeln!(out, "{name} {n}");
        } else {
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
        }
    }
}

/// Appends a gauge or counter with one sample that need not be whole (`process_*`).
fn float(out: &mut String, name: &str, help: &str, kind: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The `process_*` metrics every Prometheus client library exports, with their names, types
/// and units (`process_resident_memory_bytes`, `process_cpu_seconds_total`, …). Linux only:
/// read from `/proc/self/stat`, `/proc/self/fd` and `getrlimit`; elsewhere none are rendered.
pub mod process {
    /// Appends the process metrics (`start`: `process_start_time_seconds`, read once).
    #[cfg(target_os = "linux")]
    pub fn render(out: &mut String, start: Option<f64>) {
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| Stat::parse(&s))
        {
            let ticks = crate::sys::clock_ticks() as f64;
            let cpu = (stat.utime + stat.stime) as f64 / ticks;
            super::float(
                out,
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                "counter",
                cpu,
            );
            let rss = stat.rss_pages.saturating_mul(crate::sys::page_size());
            super::float(
                out,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                "gauge",
                rss as f64,
            );
            super::float(
                out,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                "gauge",
                stat.vsize as f64,
            );
        }
        if let Some(open) = open_fds() {
            super::float(
                out,
                "process_open_fds",
                "Number of open file descriptors.",
                "gauge",
                open as f64,
            );
        }
        if let Some(max) = crate::sys::fd_limit() {
            super::float(
                out,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                "gauge",
                max as f64,
            );
        }
        if let Some(start) = start {
            super::float(
                out,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                "gauge",
                start,
            );
        }
    }

    /// Elsewhere: nothing.
    #[cfg(not(target_os = "linux"))]
    pub fn render(_out: &mut String, _start: Option<f64>) {}

    /// Open file descriptors. Since Linux 6.2 the size of `/proc/self/fd` is their number,
    /// read in constant time; before, it is 0 and the directory is listed (about 1 µs a
    /// descriptor: 10 ms at 10 000 connections, a stall of the loop at every scrape).
    #[cfg(target_os = "linux")]
    fn open_fds() -> Option<u64> {
        match std::fs::metadata("/proc/self/fd").map(|m| m.len()) {
            Ok(n) if n > 0 => Some(n),
            // The listing's own descriptor is among those counted, as in the client
            // libraries.
            _ => std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|fds| fds.count() as u64),
        }
    }

    /// When this process started, in seconds since the epoch: the boot time (`btime` in
    /// `/proc/stat`) plus the process's start in clock ticks after boot.
    #[cfg(target_os = "linux")]
    pub fn start_time() -> Option<f64> {
        let stat = Stat::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let boot = boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
        Some(boot as f64 + stat.start_ticks as f64 / crate::sys::clock_ticks() as f64)
    }

    /// Elsewhere: unknown.
    #[cfg(not(target_os = "linux"))]
    pub fn start_time() -> Option<f64> {
        None
    }

    /// The fields of `/proc/<pid>/stat` used here (proc(5)).
    #[derive(Debug, PartialEq, Eq)]
    pub struct Stat {
        /// User-mode CPU time, in clock ticks (field 14).
        pub utime: u64,
        /// Kernel-mode CPU time, in clock ticks (field 15).
        pub stime: u64,
        /// Start after boot, in clock ticks (field 22).
        pub start_ticks: u64,
        /// Virtual memory size in bytes (field 23).
        pub vsize: u64,
        /// Resident set in pages (field 24).
        pub rss_pages: u64,
    }

    impl Stat {
        /// Parses the one line of `/proc/<pid>/stat`. The command name (field 2) is in
        /// parentheses and may hold spaces and parentheses itself: fields are counted after
        /// the last `)`.
        pub fn parse(line: &str) -> Option<Stat> {
            let (_, rest) = line.rsplit_once(')')?;
            // `rest` starts at field 3 (the state).
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
            Some(Stat {
                utime: field(14)?,
                stime: field(15)?,
                start_ticks: field(22)?,
                vsize: field(23)?,
                rss_pages: field(24)?,
            })
        }
    }

    /// The boot time in seconds since the epoch: the `btime` line of `/proc/stat`.
    pub fn boot_time(proc_stat: &str) -> Option<u64> {
        proc_stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_reasons_index_their_counters_in_order() {
        for (i, r) in Rejected::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn renders_prometheus_text() {
        let mut m = Metrics {
            sessions_opened: 3,
            ..Metrics::default()
        };
        m.loop_turn(40);
        m.loop_turn(2_000_000);
        m.session_closed(CloseReason::PingTimeout);
        m.reject(Rejected::PayloadTooLarge);
        let mut out = String::new();
        m.render(
            &mut out,
            &Gauges {
                websocket_connections: 2,
                ..Gauges::default()
            },
        );
        assert!(out.contains(
            "# TYPE pairchat_sessions_opened_total counter\npairchat_sessions_opened_total 3\n"
        ));
        assert!(out.contains("pairchat_sessions_closed_total{reason=\"ping_timeout\"} 1\n"));
        assert!(out.contains("pairchat_rejected_total{reason=\"payload_too_large\"} 1\n"));
        assert!(out.contains("pairchat_connections{kind=\"websocket\"} 2\n"));
        assert!(out.contains("pairchat_loop_turn_seconds_bucket{le=\"0.00001\"} 0\n"));
        assert!(out.contains("pairchat_loop_turn_seconds_bucket{le=\"0.00005\"} 1\n"));
        assert!(out.contains("pairchat_loop_turn_seconds_bucket{le=\"1\"} 1\n"));
        assert!(out.contains("pairchat_loop_turn_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(out.contains("pairchat_loop_turn_seconds_count 2\n"));
        assert!(!out.contains("max_latency"));
        let mut again = String::new();
        m.render(&mut again, &Gauges::default());
        let series = |s: &str| {
            s.lines()
                .filter(|l| l.starts_with("pairchat_") && !l.starts_with("pairchat_connections"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(series(&out), series(&again), "a scrape changes nothing");
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn label_values_are_snake_case() {
        let mut m = Metrics::default();
        for r in CLOSE_REASONS {
            m.session_closed(r);
        }
        let mut out = String::new();
        m.render(&mut out, &Gauges::default());
        for line in out.lines().filter(|l| l.contains('{')) {
            let labels = &line[line.find('{').unwrap() + 1..line.rfind('}').unwrap()];
            let (_, value) = labels.split_once('=').unwrap();
            let value = value.trim_matches('"');
            let snake = value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            let number = value == "+Inf" || value.parse::<f64>().is_ok();
            assert!(snake || number, "{line}");
        }
    }

    #[test]
    fn proc_stat_fields() {
        // A command name with a space and a parenthesis, as `(sd-pam)` or `(my (app))`.
        let line = "4242 (pair chat)) S 1 4242 4242 0 -1 4194560 300 0 0 0 \
                    17 5 0 0 20 0 1 0 123456 11223344 377 18446744073709551615 1 1 0 0 0 0 0 \
                    0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            process::Stat::parse(line),
            Some(process::Stat {
                utime: 17,
                stime: 5,
                start_ticks: 123_456,
                vsize: 11_223_344,
                rss_pages: 377,
            })
        );
        assert_eq!(process::Stat::parse("4242 (x) S 1 2"), None);
        let proc_stat = "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(process::boot_time(proc_stat), Some(1_700_000_000));
        assert_eq!(process::boot_time("cpu 1\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_on_linux() {
        let start = process::start_time().expect("a start time");
        let now = crate::http::unix_millis() as f64 / 1000.0;
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
        let mut out = String::new();
        process::render(&mut out, Some(start));
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            let value: f64 = out
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing: {out}"))
                .parse()
                .unwrap();
            // A fresh test process may not have used a clock tick of CPU yet.
            let cpu = name == "process_cpu_seconds_total";
            assert!(value > 0.0 || cpu && value == 0.0, "{name} {value}");
        }
    }
}
