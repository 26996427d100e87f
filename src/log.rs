//! One line per event worth knowing, on stderr: plain text (`<time> <LEVEL> <message>
//! key=value…`) or JSON (`{"ts":…,"level":…,"msg":…,<fields>}`) for log shippers.
//!
//! The level and format are process-wide (set once at start-up from `--log-level` and
//! `--log-format`). Fields keep their types: numbers and booleans are JSON numbers and
//! booleans, the rest strings (`Value`). Events that repeat as fast as a client can cause them
//! (limit hits, refusals) go through a `Sampler`: the first, then at most one line a second.
//! A caught panic is described by `catch` (message and place). Nothing here logs what users
//! write: callers pass counts, reasons and addresses, never message texts.

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

/// How much to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Only failures.
    Error = 1,
    /// Failures and limits being hit.
    Warn = 2,
    /// Also start, stop and other lifecycle events (the default).
    Info = 3,
    /// Also per-session events.
    Debug = 4,
}

impl Level {
    /// Parses `error`, `warn`, `info`, `debug` (or `off`, as `None`).
    pub fn parse(s: &str) -> Result<Option<Level>, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(None),
            "error" => Ok(Some(Level::Error)),
            "warn" | "warning" => Ok(Some(Level::Warn)),
            "info" => Ok(Some(Level::Info)),
            "debug" => Ok(Some(Level::Debug)),
            _ => Err("expected off, error, warn, info or debug".into()),
        }
    }

    /// The level as `--log-level` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static JSON: AtomicBool = AtomicBool::new(false);

/// Sets the most detailed level logged (`None`: nothing).
pub fn set_level(level: Option<Level>) {
    MAX_LEVEL.store(level.map_or(0, |l| l as u8), Ordering::Relaxed);
}

/// Logs JSON lines instead of plain text.
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// Whether events of `level` are logged.
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// A field's value: numbers and booleans are written bare in JSON (`"sessions":2`), text is a
/// JSON string; in plain lines text with a space, a quote or `=` (or nothing) is quoted.
pub trait Value {
    /// Appends the value as JSON (`json`) or as plain text.
    fn write(&self, out: &mut String, json: bool);
}

/// A field list: `&[("sessions", &2), ("reason", &"ping_timeout")]`.
pub type Fields<'a> = [(&'a str, &'a dyn Value)];

macro_rules! bare_values {
    ($($t:ty)*) => {$(
        impl Value for $t {
            fn write(&self, out: &mut String, _json: bool) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}

bare_values!(u8 u16 u32 u64 usize i32 i64 bool);

impl Value for f64 {
    fn write(&self, out: &mut String, json: bool) {
        if json && !self.is_finite() {
            out.push_str("null");
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

impl Value for str {
    fn write(&self, out: &mut String, json: bool) {
        if json {
            crate::sio::packet::write_json_string(out, self);
        } else if self.is_empty()
            || self.contains([' ', '"', '='])
            || self.contains(char::is_control)
        {
            let _ = write!(out, "{self:?}");
        } else {
            out.push_str(self);
        }
    }
}

impl Value for String {
    fn write(&self, out: &mut String, json: bool) {
        self.as_str().write(out, json);
    }
}

impl<T: Value + ?Sized> Value for &T {
    fn write(&self, out: &mut String, json: bool) {
        (**self).write(out, json);
    }
}

/// `None` is JSON `null`, `-` in plain text.
impl<T: Value> Value for Option<T> {
    fn write(&self, out: &mut String, json: bool) {
        match self {
            Some(v) => v.write(out, json),
            None if json => out.push_str("null"),
            None => out.push('-'),
        }
    }
}

/// A value written as its `Display` text, a string.
pub struct Shown<'a>(pub &'a dyn fmt::Display);

impl Value for Shown<'_> {
    fn write(&self, out: &mut String, json: bool) {
        self.0.to_string().write(out, json);
    }
}

macro_rules! shown_values {
    ($($t:ty)*) => {$(
        impl Value for $t {
            fn write(&self, out: &mut String, json: bool) {
                Shown(self).write(out, json);
            }
        }
    )*};
}

shown_values!(IpAddr SocketAddr std::io::Error);

/// A session of the loop, as `slot.generation`: what ties a Socket.IO socket's lines to its
/// Engine.IO session's (`session opened` names both).
impl Value for crate::engine::SessionId {
    fn write(&self, out: &mut String, json: bool) {
        format!("{}.{}", self.idx, self.generation).write(out, json);
    }
}

impl Value for crate::engine::Sid {
    fn write(&self, out: &mut String, json: bool) {
        self.as_str().write(out, json);
    }
}

/// Logs one event with its fields.
pub fn log(level: Level, msg: &str, fields: &Fields<'_>) {
    if enabled(level) {
        write_line(level, msg, fields);
    }
}

/// Logs at error level whatever the level setting (`off` included): why the process could
/// not start, or a panic nothing caught.
pub fn always(msg: &str, fields: &Fields<'_>) {
    write_line(Level::Error, msg, fields);
}

fn write_line(level: Level, msg: &str, fields: &Fields<'_>) {
    let line = format_line(
        level,
        crate::http::unix_millis(),
        msg,
        fields,
        JSON.load(Ordering::Relaxed),
    );
    // A failed write to stderr has nowhere to be reported.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs at error level.
pub fn error(msg: &str, fields: &Fields<'_>) {
    log(Level::Error, msg, fields);
}

/// Logs at warn level.
pub fn warn(msg: &str, fields: &Fields<'_>) {
    log(Level::Warn, msg, fields);
}

/// Logs at info level.
pub fn info(msg: &str, fields: &Fields<'_>) {
    log(Level::Info, msg, fields);
}

/// Logs at debug level.
pub fn debug(msg: &str, fields: &Fields<'_>) {
    log(Level::Debug, msg, fields);
}

/// One line, newline included. Pure, for tests.
pub fn format_line(
    level: Level,
    unix_ms: u64,
    msg: &str,
    fields: &Fields<'_>,
    json: bool,
) -> String {
    let mut out = String::with_capacity(96);
    let ts = Timestamp(unix_ms);
    if json {
        let _ = write!(out, "{{\"ts\":\"{ts}\",\"level\":\"");
        out.push_str(&level.name().to_ascii_lowercase());
        out.push_str("\",\"msg\":");
        crate::sio::packet::write_json_string(&mut out, msg);
        for (k, v) in fields {
            out.push(',');
            crate::sio::packet::write_json_string(&mut out, k);
            out.push(':');
            v.write(&mut out, true);
        }
        out.push('}');
    } else {
        let _ = write!(out, "{ts} {:<5} {msg}", level.name());
        for (k, v) in fields {
            let _ = write!(out, " {k}=");
            v.write(&mut out, false);
        }
    }
    out.push('\n');
    out
}

/// How often a repeating event is logged: its first occurrence, then at most one a second;
/// each line says how many occurrences it stands for (itself and those not logged since the
/// previous line), so the lines add up to the total. One per kind of event, in a `static`
/// (the level and format are process-wide too).
#[derive(Debug, Default)]
pub struct Sampler {
    /// Unix ms before which occurrences are only counted.
    quiet_until: AtomicU64,
    skipped: AtomicU64,
}

/// The least time between two lines of one `Sampler`, in ms.
const SAMPLE_EVERY_MS: u64 = 1000;

impl Sampler {
    /// A sampler that logs its next occurrence.
    pub const fn new() -> Self {
        Sampler {
            quiet_until: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// Counts an occurrence of an event logged at `level`: `Some(n)` when this one is logged,
    /// standing for `n` occurrences. `None` when `level` is not logged at all.
    pub fn sample(&self, level: Level) -> Option<u64> {
        if !enabled(level) {
            return None;
        }
        self.sample_at(crate::http::unix_millis())
    }

    /// Logs this occurrence if it is sampled, with an `occurrences` field: how many it
    /// stands for.
    pub fn log(&self, level: Level, msg: &str, fields: &Fields<'_>) {
        if let Some(n) = self.sample(level) {
            let mut all = Vec::with_capacity(fields.len() + 1);
            all.extend_from_slice(fields);
            all.push(("occurrences", &n as &dyn Value));
            log(level, msg, &all);
        }
    }

    /// `log` at warn level.
    pub fn warn(&self, msg: &str, fields: &Fields<'_>) {
        self.log(Level::Warn, msg, fields);
    }

    /// `sample` at a given time (pure but for the sampler's own state).
    pub fn sample_at(&self, now_ms: u64) -> Option<u64> {
        if now_ms < self.quiet_until.load(Ordering::Relaxed) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.quiet_until
            .store(now_ms + SAMPLE_EVERY_MS, Ordering::Relaxed);
        Some(self.skipped.swap(0, Ordering::Relaxed) + 1)
    }
}

thread_local! {
    /// Inside `catch` on this thread: a panic is described for the catcher, not logged.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// The description the panic hook left for `catch`.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Routes panics through the log (for the binary): a panic that `catch` catches is described
/// to it, with its place in the source, for one line saying what it closed; any other is
/// logged at once, whatever the level (it is about to end the process). With
/// `RUST_BACKTRACE` set, the standard hook runs too, for the backtrace.
pub fn install_panic_hook() {
    let standard = std::panic::take_hook();
    let backtrace = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    std::panic::set_hook(Box::new(move |info| {
        let message = panic_message(info.payload());
        let what = match info.location() {
            Some(at) => format!("{message} (at {}:{})", at.file(), at.line()),
            None => message.to_string(),
        };
        if CATCHING.with(Cell::get) {
            CAUGHT.with(|c| *c.borrow_mut() = Some(what));
        } else {
            always("panic", &[("panic", &what)]);
            if backtrace {
                standard(info);
            }
        }
    }));
}

/// Runs `f`, catching a panic: `Err` describes it (its message, and its place when
/// `install_panic_hook` is in force).
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    let outer = CATCHING.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(outer));
    result.map_err(|payload| {
        CAUGHT
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| panic_message(payload.as_ref()).to_string())
    })
}

/// A panic's message: `panic!`'s text, or a placeholder for a payload of another type.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)")
}

/// Milliseconds since the epoch as RFC 3339 UTC (`2026-11-30T10:13:53.123Z`).
struct Timestamp(u64);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1000;
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let s = secs % 86_400;
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            s / 3600,
            s / 60 % 60,
            s % 60,
            self.0 % 1000
        )
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp(1_796_033_633_123).to_string(),
            "2026-11-30T10:13:53.123Z"
        );
    }

    #[test]
    fn plain_and_json_lines() {
        let peer: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let fields: [(&str, &dyn Value); 2] = [("peer", &peer), ("reason", &"ping timeout")];
        let plain = format_line(Level::Warn, 0, "session closed", &fields, false);
        assert_eq!(
            plain,
            "1970-01-01T00:00:00.000Z WARN  session closed peer=127.0.0.1:3000 reason=\"ping timeout\"\n"
        );
        let json = format_line(Level::Warn, 0, "session \"closed\"", &fields, true);
        let v: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["msg"], "session \"closed\"");
        assert_eq!(v["reason"], "ping timeout");
        assert_eq!(v["peer"], "127.0.0.1:3000");
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
    }

    /// Numbers and booleans stay numbers and booleans in JSON; text, addresses and errors
    /// are strings; a missing value is `null`.
    #[test]
    fn json_fields_keep_their_types() {
        let ip: IpAddr = "::1".parse().unwrap();
        let error = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let text = String::from("a \"quoted\"\nline");
        let fields: [(&str, &dyn Value); 10] = [
            ("sessions", &2usize),
            ("count", &u64::MAX),
            ("delta", &-3i64),
            ("ratio", &0.25f64),
            ("infinite", &f64::INFINITY),
            ("recovered", &true),
            ("client", &Some(ip)),
            ("nobody", &None::<IpAddr>),
            ("error", &error),
            ("text", &text),
        ];
        let line = format_line(Level::Info, 0, "m", &fields, true);
        assert!(line.contains(r#""sessions":2,"count":18446744073709551615,"delta":-3,"#));
        assert!(line.contains(r#""ratio":0.25,"infinite":null,"recovered":true,"#));
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["sessions"], 2);
        assert_eq!(v["count"], u64::MAX);
        assert_eq!(v["delta"], -3);
        assert_eq!(v["ratio"], 0.25);
        assert!(v["infinite"].is_null());
        assert_eq!(v["recovered"], true);
        assert_eq!(v["client"], "::1");
        assert!(v["nobody"].is_null());
        assert_eq!(v["error"], error.to_string());
        assert_eq!(v["text"], text.as_str());
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");

        let plain = format_line(Level::Info, 0, "m", &fields, false);
        assert!(plain.contains(" sessions=2 count=18446744073709551615 delta=-3 ratio=0.25"));
        assert!(plain.contains(" recovered=true client=::1 nobody=- "));
        assert!(
            plain.ends_with(" text=\"a \\\"quoted\\\"\\nline\"\n"),
            "{plain}"
        );
        assert_eq!(plain.matches('\n').count(), 1, "one line: {plain:?}");
        let empty = format_line(Level::Info, 0, "m", &[("origin", &"")], false);
        assert!(empty.ends_with(" origin=\"\"\n"), "{empty}");
    }

    #[test]
    fn a_sampler_logs_the_first_then_one_a_second_counting_the_rest() {
        let s = Sampler::new();
        assert_eq!(s.sample_at(10_000), Some(1));
        assert_eq!(s.sample_at(10_001), None);
        assert_eq!(s.sample_at(10_999), None);
        assert_eq!(s.sample_at(11_000), Some(3), "itself and the two skipped");
        assert_eq!(s.sample_at(13_000), Some(1));
        for t in 0..100 {
            assert_eq!(s.sample_at(13_001 + t), None);
        }
        assert_eq!(s.sample_at(14_500), Some(101));
    }

    #[test]
    fn catch_describes_the_panic() {
        assert_eq!(catch(|| 7), Ok(7));
        let e = catch(|| panic!("broken {}", 42)).unwrap_err();
        assert!(e.contains("broken 42"), "{e}");
        let e = catch(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(e, "(a panic without a message)");
    }

    #[test]
    fn levels() {
        assert_eq!(Level::parse("WARN"), Ok(Some(Level::Warn)));
        assert_eq!(Level::parse("off"), Ok(None));
        assert!(Level::parse("loud").is_err());
        assert!(Level::Error < Level::Debug);
    }
}
