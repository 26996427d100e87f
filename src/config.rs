//! Server and Engine.IO configuration: every limit is a named field with a documented default.
//!
//! Defaults match socket.io's (ping 25 s / 20 s, max payload 1 MB, connect timeout 45 s).
//! Parsing helpers for the command line (`parse_duration`, origin lists) live here too; this
//! module does no I/O.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// Which `Origin`s may use the server from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any origin (`*`): answers say `Access-Control-Allow-Origin: *`, without credentials.
    Any,
    /// Only these exact origins, e.g. `https://chat.example.com`: each is echoed back with
    /// `Access-Control-Allow-Credentials: true`.
    List(Vec<String>),
}

impl CorsOrigins {
    /// Parses a comma-separated list; `*` (alone or in the list) means any origin.
    pub fn parse(s: &str) -> Result<Self, String> {
        let items: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .collect();
        if items.is_empty() {
            return Err("expected `*` or a comma-separated list of origins".into());
        }
        if items.contains(&"*") {
            return Ok(CorsOrigins::Any);
        }
        Ok(CorsOrigins::List(
            items
                .iter()
                .map(|o| o.trim_end_matches('/').to_string())
                .collect(),
        ))
    }

    /// Whether a request carrying this `Origin` header may be served.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            CorsOrigins::Any => true,
            CorsOrigins::List(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// Who may read `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Not served (404), and no metrics port.
    Off,
    /// Served to the host itself: on the main port, only to a loopback peer whose request
    /// carries no `X-Forwarded-For` or `Forwarded` (a reverse proxy on the same host forwards
    /// the world's requests from loopback); a metrics port binds loopback (`127.0.0.1`, or
    /// `::1` when the host is IPv6). Everyone else gets 404, as for an unknown path.
    Local,
    /// Served to anyone who can reach it; a metrics port binds the host.
    Public,
}

impl MetricsAccess {
    /// Parses `off`, `local` or `public` (`on` is `local`, what it meant when metrics were
    /// on or off).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" => Ok(MetricsAccess::Off),
            "local" | "on" => Ok(MetricsAccess::Local),
            "public" => Ok(MetricsAccess::Public),
            _ => Err("expected off, local or public".into()),
        }
    }

    /// The value as `--metrics` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricsAccess::Off => "off",
            MetricsAccess::Local => "local",
            MetricsAccess::Public => "public",
        }
    }
}

/// As `--cors-origin` takes it: `*`, or the origins separated by commas.
impl fmt::Display for CorsOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorsOrigins::Any => f.write_str("*"),
            CorsOrigins::List(list) => f.write_str(&list.join(",")),
        }
    }
}

/// Configuration of the HTTP server and the Engine.IO layer.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind. Defaults to `0.0.0.0`.
    pub host: String,
    /// TCP port; `0` picks a free one. Defaults to 3000.
    pub port: u16,
    /// Path of the Engine.IO endpoint, with leading and trailing slash. Defaults to `/socket.io/`.
    pub path: String,
    /// Interval between server pings. Defaults to 25 s.
    pub ping_interval: Duration,
    /// How long to wait for a pong before closing the session. Defaults to 20 s.
    pub ping_timeout: Duration,
    /// Largest accepted message or polling body, in bytes. Defaults to 1 000 000.
    pub max_payload: usize,
    /// Origins allowed to use the server from a browser. Defaults to any.
    pub cors_origins: CorsOrigins,
    /// How long a WebSocket upgrade may take from probe to `5`. Defaults to 10 s.
    pub upgrade_timeout: Duration,
    /// How long a connection may take to send complete request headers. Defaults to 10 s.
    pub header_timeout: Duration,
    /// How long an idle keep-alive HTTP connection is kept. Defaults to 60 s.
    pub keep_alive_timeout: Duration,
    /// Most simultaneous TCP connections: at the cap the server stops accepting (new clients
    /// wait in the backlog) and resumes below 90 %; meanwhile new sessions on open connections
    /// get 503. Engine.IO sessions are capped at the same number. Defaults to the file-descriptor limit less a reserve (see `default_max_connections`).
    pub max_connections: usize,
    /// Most simultaneous connections, and sessions, from one client address; 0 (the default)
    /// is no limit. A loopback peer `trust_proxy` does not name (a reverse proxy on this host,
    /// or the operator) is not limited. Behind a reverse proxy every client has the proxy's
    /// address: set `trust_proxy` too.
    pub max_connections_per_ip: usize,
    /// Proxies whose `X-Forwarded-For`/`Forwarded` headers name the client. Empty by default.
    pub trust_proxy: Vec<IpAddr>,
    /// Who may read `GET /metrics` (Prometheus text). Defaults to the host itself (`Local`).
    pub metrics: MetricsAccess,
    /// Serve `/metrics` on this port only, instead of the main port (`/health` is served on
    /// both). It binds loopback under `MetricsAccess::Local`, the host under `Public`.
    /// Defaults to none.
    pub metrics_port: Option<u16>,
    /// How long a stopping server waits for output to leave. Defaults to 5 s.
    pub shutdown_timeout: Duration,
    /// Largest polling output buffered for one session before it is closed. Defaults to 4 MB.
    pub max_poll_buffer: usize,
    /// Largest WebSocket output buffered for one connection before it is closed. Defaults to 4 MB.
    pub max_ws_buffer: usize,
    /// Most output queued for all clients together (WebSocket frames and polling queues): the
    /// output share of the memory budget (`memory::Budget`). Past three quarters of it the
    /// handler is told to refuse work that adds output (`Io::output_full`); past all of it a
    /// connection holding more than a pause's worth is cut as a slow consumer. Unbounded by
    /// default (the binary sets it from `--max-memory`).
    pub max_output_bytes: usize,
    /// What every Engine.IO sid this server makes starts with (a cluster node's id, so any
    /// node can tell whose session a request is for: `engine::Handler::owner_of`). Defaults
    /// to none.
    pub sid_prefix: String,
    /// Bind the main port with `SO_REUSEPORT`, so several processes share it (the kernel
    /// spreads connections across them). Defaults to off.
    pub reuse_port: bool,
    /// Listen on a port of its own (on the same host, picked by the system) for other nodes
    /// of a cluster, which cannot reach this process on a shared port. Defaults to off.
    pub relay_listener: bool,
    /// Serve Engine.IO v3 clients too (socket.io-client 2.x): a request without `EIO=4` opens
    /// a v3 session rather than getting 400. Defaults to off, as socket.io's `allowEIO3`.
    pub allow_eio3: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "0.0.0.0".into(),
            port: 3000,
            path: "/socket.io/".into(),
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1_000_000,
            cors_origins: CorsOrigins::Any,
            upgrade_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            max_connections: default_max_connections(),
            max_connections_per_ip: 0,
            trust_proxy: Vec::new(),
            metrics: MetricsAccess::Local,
            metrics_port: None,
            shutdown_timeout: Duration::from_secs(5),
            max_poll_buffer: 4 << 20,
            max_ws_buffer: 4 << 20,
            max_output_bytes: usize::MAX,
            sid_prefix: String::new(),
            reuse_port: false,
            relay_listener: false,
            allow_eio3: false,
        }
    }
}

impl Config {
    /// Normalises the path to `/x/`.
    pub fn normalized_path(path: &str) -> String {
        let trimmed = path.trim_matches('/');
        if trimmed.is_empty() {
            "/".into()
        } else {
            format!("/{trimmed}/")
        }
    }
}

/// The default connection cap: the soft file-descriptor limit less 64 for the listener, logs
/// and the like (at least 64); 10 000 where the limit is unknown.
pub fn default_max_connections() -> usize {
    crate::sys::fd_limit().map_or(10_000, |n| n.saturating_sub(64).max(64))
}

/// Parses a comma-separated list of IP addresses (`--trust-proxy`); an IPv4-mapped IPv6
/// address is taken as the IPv4 address it maps (as peers are).
pub fn parse_addresses(s: &str) -> Result<Vec<IpAddr>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse::<IpAddr>()
                .map(|ip| ip.to_canonical())
                .map_err(|_| format!("`{a}` is not an IP address"))
        })
        .collect()
}

/// The longest duration any setting takes: 2^31 - 1 ms (24.8 days). Clients' JavaScript
/// timers overflow past it, and every deadline the loop computes stays far from wrapping.
pub const MAX_DURATION: Duration = Duration::from_millis(i32::MAX as u64);

/// A malformed duration such as `12parsecs`, a bare number, or one over `MAX_DURATION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError(String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration `{}` (a number with a unit: 1500ms, 2s, 20m, 1h, 1d; at most 24d)",
            self.0
        )
    }
}

impl std::error::Error for DurationError {}

/// Parses `1500ms`, `2s`, `20m`, `1h`, `1d`, up to `MAX_DURATION`. The unit is required: a
/// bare `30` could mean 30 ms or 30 s.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(s.to_string());
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    };
    ms.map(Duration::from_millis)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("20m"), Ok(Duration::from_secs(1200)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("24d"), Ok(Duration::from_secs(24 * 86_400)));
        assert_eq!(parse_duration("2147483647ms"), Ok(MAX_DURATION));
        assert!(parse_duration("2147483648ms").is_err());
        assert!(parse_duration("25d").is_err());
        assert!(parse_duration("18446744073709551615ms").is_err());
        assert!(parse_duration("250").is_err(), "a unit is required");
        assert!(parse_duration("").is_err());
        assert!(parse_duration("2x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn origins() {
        assert_eq!(CorsOrigins::parse("*"), Ok(CorsOrigins::Any));
        let list = CorsOrigins::parse("https://a.example, https://b.example/").unwrap();
        assert!(list.allows("https://a.example"));
        assert!(list.allows("https://b.example"));
        assert!(!list.allows("https://c.example"));
        assert!(CorsOrigins::parse(" , ").is_err());
    }

    #[test]
    fn metrics_access() {
        assert_eq!(MetricsAccess::parse("on"), Ok(MetricsAccess::Local));
        for access in [
            MetricsAccess::Off,
            MetricsAccess::Local,
            MetricsAccess::Public,
        ] {
            assert_eq!(MetricsAccess::parse(access.as_str()), Ok(access));
        }
        assert!(MetricsAccess::parse("yes").is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(Config::normalized_path("socket.io"), "/socket.io/");
        assert_eq!(Config::normalized_path("/engine.io/"), "/engine.io/");
        assert_eq!(Config::normalized_path("/"), "/");
    }
}
