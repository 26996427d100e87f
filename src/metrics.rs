//! Counters of the loop, rendered in the Prometheus text format at `GET /metrics`.
//!
//! Counting is a plain `u64` increment on the loop thread; rendering happens only when scraped.
//! Gauges that the loop already knows (open connections, sessions) are read at render time.

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
}

impl Rejected {
    /// In declaration order, so `why as usize` indexes the counters.
    const ALL: [Rejected; 8] = [
        Rejected::PayloadTooLarge,
        Rejected::MessageTooBig,
        Rejected::Malformed,
        Rejected::HeadersTooLarge,
        Rejected::OverCapacity,
        Rejected::PerIpLimit,
        Rejected::SlowConsumer,
        Rejected::HeaderTimeout,
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

/// Upper bounds (µs) of the loop-turn duration histogram's buckets.
pub const LOOP_TURN_BUCKETS_US: [u64; 10] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000,
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
    /// Longest loop iteration since the last scrape, in microseconds.
    pub loop_max_us: u64,
    /// Loop iterations by duration: counts per `LOOP_TURN_BUCKETS_US` bucket (the last one
    /// is everything longer), and the sum of all durations in microseconds.
    loop_turns: [u64; LOOP_TURN_BUCKETS_US.len() + 1],
    loop_turns_us: u64,
    /// Panics caught at the dispatch boundary.
    pub panics: u64,
    /// Sessions and connections the sweep found with nothing left to end them.
    pub zombies: u64,
}

impl Metrics {
    /// Records how long one loop turn took.
    pub fn loop_turn(&mut self, us: u64) {
        self.loop_iterations += 1;
        self.loop_max_us = self.loop_max_us.max(us);
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

    /// Renders everything; `gauges` are the loop's current counts. Resets the max loop latency.
    pub fn render(&mut self, out: &mut String, gauges: &Gauges) {
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
                .map(|r| r.as_str())
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
            "# HELP pairchat_loop_max_latency_seconds Longest event loop iteration since the \
             previous scrape.\n# TYPE pairchat_loop_max_latency_seconds gauge\n\
             pairchat_loop_max_latency_seconds {:.6}",
            self.loop_max_us as f64 / 1e6
        );
        self.loop_max_us = 0;
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
            loop_max_us: 1500,
            ..Metrics::default()
        };
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
        assert!(out.contains("pairchat_sessions_closed_total{reason=\"ping timeout\"} 1\n"));
        assert!(out.contains("pairchat_rejected_total{reason=\"payload_too_large\"} 1\n"));
        assert!(out.contains("pairchat_connections{kind=\"websocket\"} 2\n"));
        assert!(out.contains("pairchat_loop_max_latency_seconds 0.001500\n"));
        assert_eq!(m.loop_max_us, 0, "the max resets when scraped");
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
