//! The command line: flags and environment → `Settings` (server, Socket.IO and chat
//! configuration, logging), and the help text.
//!
//! Every flag `--some-name <value>` can also be given as `PAIRCHAT_SOME_NAME=<value>`. A flag
//! beats its variable, which beats `PORT` (and `PAIRCHAT_LOG`); a variable something stronger
//! overrides is not read. The defaults `--help` shows are read off the `Default` impls of the
//! configuration types, so they cannot drift. A bad value, or settings that contradict each
//! other, is a one-line error naming the flag or variable (the binary exits 2); `Settings`
//! remembers where each value came from, so errors found later (an address in use) can name
//! it too. No I/O here: the environment comes in as a function.

use std::time::Duration;

use crate::Config;
use crate::chat::ChatConfig;
use crate::chat::limits::Rate;
use crate::cluster::link::RedisConfig;
use crate::config::{CorsOrigins, MAX_DURATION, MetricsAccess, parse_addresses, parse_duration};
use crate::log::Level;
use crate::memory::{Budget, MIN_BUDGET, parse_size, show_size};
use crate::sio::{Parser, Parsers, SioConfig};

/// Everything the command line sets.
#[derive(Debug)]
pub struct Settings {
    /// The HTTP server and Engine.IO.
    pub server: Config,
    /// The chat.
    pub chat: ChatConfig,
    /// Socket.IO.
    pub sio: SioConfig,
    /// Logging.
    pub log: LogSettings,
    /// The memory budget (`--max-memory`), shared out to history, recovery and output.
    pub max_memory: usize,
    /// The cluster's Redis (`--redis`); `None`: embedded, nothing shared.
    pub redis: Option<RedisConfig>,
    /// The address other nodes reach this one at (`--advertise`); `None`: `--host:--port`.
    pub advertise: Option<String>,
    /// The longest wait for Redis (`--redis-timeout`).
    pub redis_timeout: Duration,
    /// Where the values given came from: option name → the flag or variable that set it, as
    /// written (`--port`, `PAIRCHAT_PORT`, `PORT`).
    pub sources: Vec<(&'static str, String)>,
}

impl Default for Settings {
    fn default() -> Self {
        let mut settings = Settings {
            server: Config::default(),
            chat: ChatConfig::default(),
            sio: SioConfig::default(),
            log: LogSettings::default(),
            max_memory: Budget::detect().total,
            redis: None,
            advertise: None,
            redis_timeout: Duration::from_secs(2),
            sources: Vec::new(),
        };
        settings.share_memory(false);
        settings
    }
}

impl Settings {
    /// Gives each store its share of `max_memory`. Recovery keeps at most its share (by
    /// default its own default, if that is smaller); `explicit_recovery`: the recovery bound
    /// was set by flag or variable, and the share only caps it.
    fn share_memory(&mut self, explicit_recovery: bool) {
        let budget = Budget {
            total: self.max_memory,
        };
        self.chat.max_history_bytes = budget.history();
        self.server.max_output_bytes = budget.output();
        let wanted = if explicit_recovery {
            self.sio.recovery.max_bytes
        } else {
            crate::sio::RecoveryConfig::default().max_bytes
        };
        self.sio.recovery.max_bytes = wanted.min(budget.recovery());
    }

    /// A setting as messages name it: the flag or variable that set it and the value
    /// (`--port 3000`, `PORT=8080`), or the flag and its value in force when nothing set it.
    /// `option` is a flag name without `--`.
    pub fn named(&self, option: &str) -> String {
        let Some(opt) = OPTIONS.iter().find(|o| o.name == option) else {
            return option.to_string();
        };
        let value = (opt.show)(self);
        match self.sources.iter().find(|(n, _)| *n == opt.name) {
            Some((_, var)) if !var.starts_with("--") => format!("{var}={value}"),
            _ => format!("--{} {value}", opt.name),
        }
    }
}

/// `--log-level` and `--log-format`.
#[derive(Debug)]
pub struct LogSettings {
    /// The most detailed level logged (`None`: off).
    pub level: Option<Level>,
    /// JSON lines instead of plain text.
    pub json: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: Some(Level::Info),
            json: false,
        }
    }
}

type Setter = fn(&mut Settings, &str) -> Result<(), String>;

/// The value name of a switch: `--flag` alone means `--flag on`.
const SWITCH: &str = "on|off";

/// One option: flag name (without `--`), value name, help, how its value in `Settings` reads
/// back as a flag value (the default `--help` shows), setter.
struct Opt {
    name: &'static str,
    value: &'static str,
    help: &'static str,
    show: fn(&Settings) -> String,
    set: Setter,
}

const OPTIONS: &[Opt] = &[
    Opt {
        name: "host",
        value: "ADDR",
        help: "address to bind",
        show: |s| s.server.host.clone(),
        set: |s, v| {
            s.server.host = v.to_string();
            Ok(())
        },
    },
    Opt {
        name: "port",
        value: "PORT",
        help: "TCP port (also $PORT)",
        show: |s| s.server.port.to_string(),
        set: |s, v| {
            s.server.port = v
                .parse()
                .map_err(|_| "expected a port number 0-65535".to_string())?;
            Ok(())
        },
    },
    Opt {
        name: "path",
        value: "PATH",
        help: "Engine.IO endpoint path",
        show: |s| s.server.path.clone(),
        set: |s, v| {
            if !v.starts_with('/') {
                return Err("expected a path starting with `/`".into());
            }
            s.server.path = v.to_string();
            Ok(())
        },
    },
    Opt {
        name: "ping-interval",
        value: "DURATION",
        help: "interval between server pings",
        show: |s| show_duration(s.server.ping_interval),
        set: |s, v| {
            s.server.ping_interval = positive_duration(v)?;
            Ok(())
        },
    },
    Opt {
        name: "ping-timeout",
        value: "DURATION",
        help: "how long to wait for a pong",
        show: |s| show_duration(s.server.ping_timeout),
        set: |s, v| {
            s.server.ping_timeout = positive_duration(v)?;
            Ok(())
        },
    },
    Opt {
        name: "max-payload",
        value: "SIZE",
        help: "largest message or polling body",
        show: |s| show_size(s.server.max_payload),
        set: |s, v| {
            s.server.max_payload = parse_size(v)?;
            if s.server.max_payload == 0 {
                return Err("expected a positive size".into());
            }
            Ok(())
        },
    },
    Opt {
        name: "cors-origin",
        value: "ORIGINS",
        help: "comma-separated allowed browser origins (echoed, with credentials), or * (any, without)",
        show: |s| s.server.cors_origins.to_string(),
        set: |s, v| {
            s.server.cors_origins = CorsOrigins::parse(v)?;
            Ok(())
        },
    },
    Opt {
        name: "room-ttl",
        value: "DURATION",
        help: "room lifetime from creation",
        show: |s| show_duration(s.chat.room_ttl),
        set: |s, v| {
            s.chat.room_ttl = positive_duration(v)?;
            Ok(())
        },
    },
    Opt {
        name: "max-connections",
        value: "N",
        help: "most simultaneous TCP connections and sessions (503 for new sessions at the cap); defaults to the file-descriptor limit less 64",
        show: |s| s.server.max_connections.to_string(),
        set: |s, v| {
            s.server.max_connections = positive(v)?;
            Ok(())
        },
    },
    Opt {
        name: "max-connections-per-ip",
        value: "N",
        help: "most connections from one client address (0: no limit)",
        show: |s| s.server.max_connections_per_ip.to_string(),
        set: |s, v| {
            s.server.max_connections_per_ip = whole(v)?;
            Ok(())
        },
    },
    Opt {
        name: "trust-proxy",
        value: "ADDRS",
        help: "comma-separated proxy addresses whose X-Forwarded-For/Forwarded name the client",
        show: |s| show_list(&s.server.trust_proxy),
        set: |s, v| {
            s.server.trust_proxy = if v == "none" {
                Vec::new()
            } else {
                parse_addresses(v)?
            };
            Ok(())
        },
    },
    Opt {
        name: "header-timeout",
        value: "DURATION",
        help: "how long a client may take to send request headers",
        show: |s| show_duration(s.server.header_timeout),
        set: |s, v| {
            s.server.header_timeout = positive_duration(v)?;
            Ok(())
        },
    },
    Opt {
        name: "keep-alive-timeout",
        value: "DURATION",
        help: "how long an idle keep-alive HTTP connection is kept",
        show: |s| show_duration(s.server.keep_alive_timeout),
        set: |s, v| {
            s.server.keep_alive_timeout = positive_duration(v)?;
            Ok(())
        },
    },
    Opt {
        name: "upgrade-timeout",
        value: "DURATION",
        help: "how long a WebSocket upgrade may take",
        show: |s| show_duration(s.server.upgrade_timeout),
        set: |s, v| {
            s.server.upgrade_timeout = positive_duration(v)?;
            Ok(())
        },
    },
    Opt {
        name: "max-memory",
        value: "SIZE",
        help: "memory budget for what clients make the server hold: half for room history (oldest messages across rooms go first), a quarter for recovery, a quarter for output (then Server busy); defaults to half the cgroup memory limit, else a quarter of RAM",
        show: |s| show_size(s.max_memory),
        set: |s, v| {
            let n = parse_size(v)?;
            if n < MIN_BUDGET {
                return Err(format!("at least {}", show_size(MIN_BUDGET)));
            }
            s.max_memory = n;
            Ok(())
        },
    },
    Opt {
        name: "max-buffer",
        value: "SIZE",
        help: "output buffered for a client that does not read before it is dropped",
        show: |s| show_size(s.server.max_ws_buffer),
        set: |s, v| {
            let n = parse_size(v)?;
            if n == 0 {
                return Err("expected a positive size".into());
            }
            s.server.max_poll_buffer = n;
            s.server.max_ws_buffer = n;
            // What a restore sends again in one go must fit the buffer, with room to spare.
            s.sio.recovery.max_socket_bytes = (n / 2).min(1 << 20);
            Ok(())
        },
    },
    Opt {
        name: "join-failures",
        value: "RATE",
        help: "failed joinRoom per socket and client address (e.g. 10/m; 0: no limit)",
        show: |s| show_rate(s.chat.join_failures),
        set: |s, v| {
            s.chat.join_failures = Rate::parse(v)?;
            Ok(())
        },
    },
    Opt {
        name: "message-rate",
        value: "RATE",
        help: "sendMessage per socket, bursts of twice that (e.g. 20/s; 0: no limit)",
        show: |s| show_rate(s.chat.message_rate),
        set: |s, v| {
            s.chat.message_rate = Rate::parse(v)?;
            Ok(())
        },
    },
    Opt {
        name: "max-rooms",
        value: "N",
        help: "most live rooms (createRoom then answers Server busy)",
        show: |s| s.chat.max_rooms.to_string(),
        set: |s, v| {
            s.chat.max_rooms = positive(v)?;
            Ok(())
        },
    },
    Opt {
        name: "metrics",
        value: "off|local|public",
        help: "who may GET /metrics (Prometheus text): local is loopback peers not forwarding for someone (on = local)",
        show: |s| s.server.metrics.as_str().into(),
        set: |s, v| {
            s.server.metrics = MetricsAccess::parse(v)?;
            Ok(())
        },
    },
    Opt {
        name: "metrics-port",
        value: "PORT",
        help: "serve /metrics on this port instead (on loopback when --metrics local)",
        show: |s| {
            s.server
                .metrics_port
                .map_or_else(|| "none".into(), |p| p.to_string())
        },
        set: |s, v| {
            s.server.metrics_port = match v {
                "none" => None,
                _ => Some(
                    v.parse()
                        .map_err(|_| "expected a port number 0-65535 or none".to_string())?,
                ),
            };
            Ok(())
        },
    },
    Opt {
        name: "shutdown-timeout",
        value: "DURATION",
        help: "how long a stopping server waits for output to leave",
        show: |s| show_duration(s.server.shutdown_timeout),
        set: |s, v| {
            s.server.shutdown_timeout = positive_duration(v)?;
            Ok(())
        },
    },
    Opt {
        name: "log-level",
        value: "LEVEL",
        help: "off, error, warn, info or debug (also $PAIRCHAT_LOG)",
        show: |s| s.log.level.map_or("off", Level::as_str).into(),
        set: |s, v| {
            s.log.level = Level::parse(v)?;
            Ok(())
        },
    },
    Opt {
        name: "log-format",
        value: "FORMAT",
        help: "plain or json",
        show: |s| if s.log.json { "json" } else { "plain" }.into(),
        set: |s, v| {
            s.log.json = match v {
                "plain" => false,
                "json" => true,
                _ => return Err("expected plain or json".into()),
            };
            Ok(())
        },
    },
    Opt {
        name: "max-message-chars",
        value: "N",
        help: "longest chat message, in characters",
        show: |s| s.chat.max_message_chars.to_string(),
        set: |s, v| {
            s.chat.max_message_chars = positive(v)?;
            Ok(())
        },
    },
    Opt {
        name: "max-history",
        value: "N",
        help: "messages kept per room (0: none)",
        show: |s| s.chat.max_history.to_string(),
        set: |s, v| {
            s.chat.max_history = v
                .parse()
                .map_err(|_| "expected a whole number".to_string())?;
            Ok(())
        },
    },
    Opt {
        name: "connect-timeout",
        value: "DURATION",
        help: "how long a session may wait before its Socket.IO CONNECT",
        show: |s| show_duration(s.sio.connect_timeout),
        set: |s, v| {
            s.sio.connect_timeout = positive_duration(v)?;
            Ok(())
        },
    },
    Opt {
        name: "redis",
        value: "URL",
        help: "join a cluster of nodes sharing one room space: redis://[user:password@]host:port[/db] (off: embedded, nothing connects anywhere)",
        show: |s| {
            s.redis
                .as_ref()
                .map_or_else(|| "off".into(), RedisConfig::display)
        },
        set: |s, v| {
            s.redis = if v.trim() == "off" {
                None
            } else {
                Some(RedisConfig::parse(v.trim())?)
            };
            Ok(())
        },
    },
    Opt {
        name: "reuse-port",
        value: SWITCH,
        help: "share the port with other pairchat processes (SO_REUSEPORT): with --redis, one node per core",
        show: |s| show_switch(s.server.reuse_port),
        set: |s, v| {
            s.server.reuse_port = switch(v)?;
            Ok(())
        },
    },
    Opt {
        name: "redis-timeout",
        value: "DURATION",
        help: "longest wait for Redis (a reply, a connection) before its link is made again and requests answer Server busy",
        show: |s| show_duration(s.redis_timeout),
        set: |s, v| {
            s.redis_timeout = positive_duration(v)?;
            Ok(())
        },
    },
    Opt {
        name: "advertise",
        value: "HOST:PORT",
        help: "the address other nodes reach this one at, registered in Redis (default: the bound address)",
        show: |s| s.advertise.clone().unwrap_or_else(|| "bound".into()),
        set: |s, v| {
            if v.trim() == "bound" {
                s.advertise = None;
                return Ok(());
            }
            if v.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err("expected host:port (or bound)".into());
            }
            s.advertise = Some(v.to_string());
            Ok(())
        },
    },
    Opt {
        name: "allow-eio3",
        value: SWITCH,
        help: "serve Engine.IO v3 clients too (socket.io-client 2.x), as socket.io's allowEIO3",
        show: |s| show_switch(s.server.allow_eio3),
        set: |s, v| {
            s.server.allow_eio3 = switch(v)?;
            Ok(())
        },
    },
    Opt {
        name: "parser",
        value: "auto|json|msgpack",
        help: "the Socket.IO parsers clients may speak (auto: either, per session)",
        show: |s| {
            match s.sio.parsers {
                Parsers::Auto => "auto",
                Parsers::Only(Parser::Json) => "json",
                Parsers::Only(Parser::Msgpack) => "msgpack",
            }
            .to_string()
        },
        set: |s, v| {
            s.sio.parsers = match v.trim() {
                "auto" => Parsers::Auto,
                "json" => Parsers::Only(Parser::Json),
                "msgpack" => Parsers::Only(Parser::Msgpack),
                _ => return Err("expected auto, json or msgpack".to_string()),
            };
            Ok(())
        },
    },
    Opt {
        name: "recovery-window",
        value: "DURATION",
        help: "how long a dropped client can come back with its id, room and missed events (0: off)",
        show: |s| show_duration(s.sio.recovery.window),
        set: |s, v| {
            s.sio.recovery.window = if v.trim() == "0" {
                Duration::ZERO
            } else {
                parse_duration(v).map_err(|e| e.to_string())?
            };
            Ok(())
        },
    },
    Opt {
        name: "recovery-max-events",
        value: "N",
        help: "events kept per socket for recovery",
        show: |s| s.sio.recovery.max_events.to_string(),
        set: |s, v| {
            s.sio.recovery.max_events = positive(v)?;
            Ok(())
        },
    },
    Opt {
        name: "recovery-max-bytes",
        value: "BYTES",
        help: "bytes kept for recovery in all (at most a quarter of --max-memory)",
        show: |s| show_size(s.sio.recovery.max_bytes),
        set: |s, v| {
            s.sio.recovery.max_bytes = parse_size(v)?;
            if s.sio.recovery.max_bytes == 0 {
                return Err("expected a positive size".into());
            }
            Ok(())
        },
    },
];

/// A duration as a flag value, in its largest whole unit (`25s`, `20m`, `1500ms`).
fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms > 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

fn show_rate(rate: Option<Rate>) -> String {
    match rate {
        None => "0".into(),
        Some(r) => match show_duration(r.per).as_str() {
            "1s" => format!("{}/s", r.count),
            "1m" => format!("{}/m", r.count),
            "1h" => format!("{}/h", r.count),
            per => format!("{}/{per}", r.count),
        },
    }
}

fn show_list(addresses: &[std::net::IpAddr]) -> String {
    if addresses.is_empty() {
        return "none".into();
    }
    let shown: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    shown.join(",")
}

fn whole(v: &str) -> Result<usize, String> {
    v.parse().map_err(|_| "expected a whole number".to_string())
}

fn positive(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a positive whole number".into()),
    }
}

/// An on/off switch's value.
fn switch(v: &str) -> Result<bool, String> {
    match v.trim() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

fn show_switch(on: bool) -> String {
    if on { "on" } else { "off" }.into()
}

fn positive_duration(v: &str) -> Result<Duration, String> {
    match parse_duration(v) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("expected a duration above zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the server with these settings.
    Run(Box<Settings>),
    /// Print the help text.
    Help,
    /// Print the version.
    Version,
}

/// Parses arguments (without the program name) over environment lookups. A flag beats its
/// `PAIRCHAT_*` variable, which beats `PORT` (and `PAIRCHAT_LOG`); a variable a flag overrides
/// is not read at all, so a bad value there is no error.
pub fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Command, String> {
    let mut flags: Vec<(&'static str, String)> = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ => {}
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg:?} (see --help)"));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let Some(opt) = OPTIONS.iter().find(|o| o.name == name) else {
            return Err(format!("unknown flag --{name} (see --help)"));
        };
        // A switch (`on|off`) given bare is on.
        let bare = opt.value == SWITCH && args.clone().next().is_none_or(|a| a.starts_with("--"));
        let value = match inline {
            Some(v) => v,
            None if bare => "on".into(),
            None => match args.next() {
                Some(v) => v.clone(),
                None => return Err(format!("--{name}: missing value")),
            },
        };
        flags.push((opt.name, value));
    }
    let given = |name: &str| flags.iter().any(|(n, _)| *n == name);
    let explicit_recovery =
        given("recovery-max-bytes") || env(&env_name("recovery-max-bytes")).is_some();

    let mut settings = Settings::default();
    for (fallback, flag) in [("PORT", "port"), ("PAIRCHAT_LOG", "log-level")] {
        if !given(flag)
            && env(&env_name(flag)).is_none()
            && let Some(v) = env(fallback)
        {
            apply(&mut settings, flag, &v).map_err(|e| format!("{fallback}: {e}"))?;
            settings
                .sources
                .push((flag_name(flag), fallback.to_string()));
        }
    }
    for opt in OPTIONS.iter().filter(|o| !given(o.name)) {
        let var = env_name(opt.name);
        if let Some(v) = env(&var) {
            (opt.set)(&mut settings, &v).map_err(|e| format!("{var}: invalid value {v:?}: {e}"))?;
            settings.sources.push((opt.name, var));
        }
    }
    for (name, value) in &flags {
        apply(&mut settings, name, value)
            .map_err(|e| format!("--{name}: invalid value {value:?}: {e}"))?;
        settings.sources.push((name, format!("--{name}")));
    }
    settings.share_memory(explicit_recovery);
    check(&settings)?;
    Ok(Command::Run(Box::new(settings)))
}

/// Settings that are each valid but contradict each other.
fn check(settings: &Settings) -> Result<(), String> {
    let server = &settings.server;
    // The client arms one timer for both (socket.io-client's ping timeout check).
    let heartbeat = server.ping_interval + server.ping_timeout;
    if heartbeat > MAX_DURATION {
        return Err(format!(
            "--ping-interval + --ping-timeout: {} ms in all, over the {} ms a JavaScript timer holds",
            heartbeat.as_millis(),
            MAX_DURATION.as_millis()
        ));
    }
    // socket.io-client 2.x speaks the JSON parser here (socket.io-msgpack-parser 2 is not served).
    if server.allow_eio3 && settings.sio.parsers == Parsers::Only(Parser::Msgpack) {
        return Err(format!(
            "{} with {}: 2.x clients speak JSON only (use --parser auto or json)",
            settings.named("allow-eio3"),
            settings.named("parser")
        ));
    }
    match server.metrics_port {
        Some(_) if server.metrics == MetricsAccess::Off => Err(format!(
            "{} with {}: the metrics port would serve nothing (drop one, or use --metrics local or public)",
            settings.named("metrics"),
            settings.named("metrics-port")
        )),
        Some(port) if port != 0 && port == server.port => Err(format!(
            "{}: the same port as {} (use another port, or none to serve /metrics on the main one)",
            settings.named("metrics-port"),
            settings.named("port")
        )),
        _ => Ok(()),
    }
}

/// The `'static` name of an option (they all are in `OPTIONS`).
fn flag_name(name: &str) -> &'static str {
    OPTIONS
        .iter()
        .find(|o| o.name == name)
        .map_or("", |o| o.name)
}

fn apply(settings: &mut Settings, name: &str, value: &str) -> Result<(), String> {
    let opt = OPTIONS
        .iter()
        .find(|o| o.name == name)
        .ok_or_else(|| format!("unknown option {name}"))?;
    (opt.set)(settings, value)
}

fn env_name(flag: &str) -> String {
    format!("PAIRCHAT_{}", flag.replace('-', "_").to_ascii_uppercase())
}

/// The exit statuses, as `--help` ends.
const EXIT_STATUS: &str = "
Exit status:
  0  stopped by SIGTERM or SIGINT after a graceful shutdown (or --help, --version)
  1  could not start or keep running with these settings: an address in use or not on this
     machine, a --host that does not resolve, a permission refused, an I/O error; or a
     second signal cut the shutdown short. Retrying may succeed.
  2  the command line or environment is wrong as written: an unknown flag, a bad value,
     settings that contradict each other. Retrying cannot succeed; fix the setting named.
Every error is one line on stderr naming the flag or variable, and the address if any.
";

/// The `--help` text.
pub fn help() -> String {
    let mut out = format!(
        "pairchat {}: temporary one-to-one chat rooms over Socket.IO\n\nUsage: pairchat [--flag value]...\n\nOptions:\n",
        env!("CARGO_PKG_VERSION")
    );
    let defaults = Settings::default();
    for o in OPTIONS {
        let flag = format!("--{} <{}>", o.name, o.value);
        out.push_str(&format!(
            "  {flag:<30} {} [default: {}] [env: {}]\n",
            o.help,
            (o.show)(&defaults),
            env_name(o.name)
        ));
    }
    out.push_str("  -h, --help                     print this help\n  -V, --version                  print the version\n");
    out.push_str("\nDurations take a unit (1500ms, 2s, 20m, 1h, 1d) and are at most 2147483647ms (24.8 days).\nSizes are bytes, or take a unit: K or KiB, M or MiB, G or GiB (64MiB).\n");
    out.push_str("A flag beats its PAIRCHAT_* variable, which beats PORT.\n");
    out.push_str(EXIT_STATUS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Duration;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match parse(&args, |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })? {
            Command::Run(s) => Ok(*s),
            other => panic!("expected settings, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_documentation() {
        let s = run(&[], &[]).unwrap();
        assert_eq!(s.server.port, 3000);
        assert_eq!(s.server.host, "0.0.0.0");
        assert_eq!(s.server.path, "/socket.io/");
        assert_eq!(s.server.ping_interval, Duration::from_secs(25));
        assert_eq!(s.server.ping_timeout, Duration::from_secs(20));
        assert_eq!(s.server.max_payload, 1_000_000);
        assert_eq!(s.chat.room_ttl, Duration::from_secs(1200));
        assert_eq!(s.chat.max_message_chars, 2000);
        assert_eq!(s.chat.max_history, 500);
    }

    #[test]
    fn flags_beat_environment_which_beats_port() {
        let s = run(
            &["--room-ttl", "90s"],
            &[("PORT", "4000"), ("PAIRCHAT_ROOM_TTL", "1m")],
        )
        .unwrap();
        assert_eq!(s.server.port, 4000);
        assert_eq!(s.chat.room_ttl, Duration::from_secs(90));
        let s = run(
            &["--port=5000"],
            &[("PORT", "4000"), ("PAIRCHAT_PORT", "4500")],
        )
        .unwrap();
        assert_eq!(s.server.port, 5000);
        let s = run(&[], &[("PORT", "4000"), ("PAIRCHAT_PORT", "4500")]).unwrap();
        assert_eq!(s.server.port, 4500);
        // A variable a flag (or a stronger variable) overrides is not read: no error.
        let s = run(
            &["--port", "5000"],
            &[("PORT", "http"), ("PAIRCHAT_PORT", "x")],
        )
        .unwrap();
        assert_eq!(s.server.port, 5000);
        let s = run(&[], &[("PORT", "http"), ("PAIRCHAT_PORT", "4500")]).unwrap();
        assert_eq!(s.server.port, 4500);
        let e = run(&[], &[("PORT", "http")]).unwrap_err();
        assert!(e.starts_with("PORT:"), "{e}");
        let s = run(
            &[
                "--ping-interval",
                "1500ms",
                "--cors-origin",
                "https://a.example, https://b.example",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(s.server.ping_interval, Duration::from_millis(1500));
        assert_eq!(
            s.server.cors_origins,
            CorsOrigins::List(vec!["https://a.example".into(), "https://b.example".into()])
        );
    }

    #[test]
    fn recovery_flags() {
        let s = run(&["--recovery-window", "0"], &[]).unwrap();
        assert!(!s.sio.recovery.enabled());
        let s = run(&["--recovery-window", "30s", "--max-buffer", "65536"], &[]).unwrap();
        assert_eq!(s.sio.recovery.window, Duration::from_secs(30));
        assert_eq!(
            s.sio.recovery.max_socket_bytes, 32768,
            "a replay fits the buffer"
        );
        assert!(run(&["--recovery-max-events", "0"], &[]).is_err());
        assert!(run(&["--recovery-window", "-1s"], &[]).is_err());
    }

    #[test]
    fn the_memory_budget_is_shared_out() {
        let s = run(&["--max-memory", "8MiB"], &[]).unwrap();
        assert_eq!(s.max_memory, 8 << 20);
        assert_eq!(s.chat.max_history_bytes, 4 << 20);
        assert_eq!(s.sio.recovery.max_bytes, 2 << 20);
        assert_eq!(s.server.max_output_bytes, 2 << 20);
        // A recovery bound of its own holds within the share, wherever it is set.
        let s = run(
            &["--max-memory", "1GiB", "--recovery-max-bytes", "1MiB"],
            &[],
        )
        .unwrap();
        assert_eq!(s.sio.recovery.max_bytes, 1 << 20);
        let s = run(
            &["--recovery-max-bytes", "1GiB"],
            &[("PAIRCHAT_MAX_MEMORY", "16M")],
        )
        .unwrap();
        assert_eq!(s.sio.recovery.max_bytes, 4 << 20);
        // Without one, recovery keeps its default (64 MiB) when the share is larger.
        let s = run(&["--max-memory", "1GiB"], &[]).unwrap();
        assert_eq!(s.sio.recovery.max_bytes, 64 << 20);
        assert_eq!(s.chat.max_history_bytes, 512 << 20);
        let e = run(&["--max-memory", "100KiB"], &[]).unwrap_err();
        assert!(e.starts_with("--max-memory:"), "{e}");
        let e = run(&["--max-memory", "lots"], &[]).unwrap_err();
        assert!(e.starts_with("--max-memory:"), "{e}");
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = run(&["--port", "http"], &[]).unwrap_err();
        assert!(e.starts_with("--port: invalid value \"http\""), "{e}");
        let e = run(&["--room-ttl", "12parsecs"], &[]).unwrap_err();
        assert!(e.starts_with("--room-ttl:"), "{e}");
        let e = run(&["--max-payload", "0"], &[]).unwrap_err();
        assert!(e.starts_with("--max-payload:"), "{e}");
        let e = run(&[], &[("PAIRCHAT_PING_TIMEOUT", "soon")]).unwrap_err();
        assert!(e.starts_with("PAIRCHAT_PING_TIMEOUT:"), "{e}");
        assert!(run(&["--nope", "1"], &[]).unwrap_err().contains("--nope"));
        assert!(run(&["--port"], &[]).unwrap_err().contains("missing value"));
        assert!(run(&["stray"], &[]).is_err());
    }

    #[test]
    fn durations_need_a_unit_and_stay_within_javascript_timers() {
        let e = run(&["--room-ttl", "30"], &[]).unwrap_err();
        assert!(e.starts_with("--room-ttl:"), "{e}");
        let e = run(&["--header-timeout", "18446744073709551615ms"], &[]).unwrap_err();
        assert!(e.starts_with("--header-timeout:"), "{e}");
        let e = run(&["--room-ttl", "18446744073709551615ms"], &[]).unwrap_err();
        assert!(e.starts_with("--room-ttl:"), "{e}");
        let e = run(&["--ping-interval", "600h"], &[]).unwrap_err();
        assert!(e.starts_with("--ping-interval:"), "{e}");
        // Each within bounds, together over what the client's one timer holds.
        let e = run(&["--ping-interval", "20d", "--ping-timeout", "5d"], &[]).unwrap_err();
        assert!(e.starts_with("--ping-interval + --ping-timeout"), "{e}");
        assert!(run(&["--room-ttl", "24d"], &[]).is_ok());
    }

    /// Every default `--help` shows is the value `Settings::default()` holds: set back
    /// through its own flag, it changes nothing.
    #[test]
    fn shown_defaults_are_the_real_defaults() {
        let defaults = format!("{:?}", Settings::default());
        for o in OPTIONS {
            let shown = (o.show)(&Settings::default());
            let mut s = run(&[&format!("--{}", o.name), &shown], &[])
                .unwrap_or_else(|e| panic!("--{} {shown}: {e}", o.name));
            assert_eq!(s.sources, [(o.name, format!("--{}", o.name))]);
            s.sources.clear();
            assert_eq!(format!("{s:?}"), defaults, "--{} {shown}", o.name);
        }
        assert!(help().contains("--room-ttl <DURATION>"));
        assert!(help().contains("[default: 20m]"));
    }

    #[test]
    fn settings_are_named_as_they_were_given() {
        let s = run(
            &["--host", "::1"],
            &[("PORT", "8080"), ("PAIRCHAT_METRICS_PORT", "9100")],
        )
        .unwrap();
        assert_eq!(s.named("host"), "--host ::1");
        assert_eq!(s.named("port"), "PORT=8080");
        assert_eq!(s.named("metrics-port"), "PAIRCHAT_METRICS_PORT=9100");
        assert_eq!(
            s.named("metrics"),
            "--metrics local",
            "a default names its flag"
        );
        let s = run(&[], &[("PAIRCHAT_LOG", "debug")]).unwrap();
        assert_eq!(s.named("log-level"), "PAIRCHAT_LOG=debug");
    }

    #[test]
    fn metrics_access_and_its_port() {
        assert_eq!(run(&[], &[]).unwrap().server.metrics, MetricsAccess::Local);
        let s = run(&["--metrics", "on"], &[]).unwrap();
        assert_eq!(s.server.metrics, MetricsAccess::Local, "on is local");
        let s = run(&["--metrics", "public", "--metrics-port", "9100"], &[]).unwrap();
        assert_eq!(s.server.metrics, MetricsAccess::Public);
        assert_eq!(s.server.metrics_port, Some(9100));
        let e = run(&["--metrics", "off", "--metrics-port", "9100"], &[]).unwrap_err();
        assert!(
            e.starts_with("--metrics off with --metrics-port 9100:"),
            "{e}"
        );
        let e = run(&["--metrics-port", "9100"], &[("PAIRCHAT_METRICS", "off")]).unwrap_err();
        assert!(
            e.starts_with("PAIRCHAT_METRICS=off with --metrics-port 9100:"),
            "{e}"
        );
        let e = run(&["--metrics-port", "3000"], &[]).unwrap_err();
        assert!(
            e.starts_with("--metrics-port 3000: the same port as --port 3000"),
            "{e}"
        );
        assert!(run(&["--port", "0", "--metrics-port", "0"], &[]).is_ok());
        assert!(run(&["--metrics", "yes"], &[]).is_err());
    }

    #[test]
    fn help_lists_every_flag_and_its_variable() {
        let h = help();
        for o in OPTIONS {
            assert!(h.contains(&format!("--{}", o.name)), "{}", o.name);
            assert!(h.contains(&env_name(o.name)));
        }
        assert!(h.contains("Exit status:\n  0 "), "{h}");
    }
}
