//! One line per event worth knowing, on stderr: plain text (`<time> <LEVEL> <message>
//! key=value…`) or JSON (`{"ts":…,"level":…,"msg":…,<fields>}`) for log shippers.
//!
//! The level and format are process-wide (set once at start-up from `--log-level` and
//! `--log-format`). Nothing here logs what users write: callers pass counts, reasons and
//! addresses, never message texts.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

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

/// Whether the `count`th occurrence of a repeating event is logged: the first, then one in a
/// thousand (limit hits repeat as fast as a client can ask).
pub fn sampled(count: u64) -> bool {
    count % 1000 == 1
}

/// Logs one event with its fields.
pub fn log(level: Level, msg: &str, fields: &[(&str, &dyn fmt::Display)]) {
    if !enabled(level) {
        return;
    }
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
pub fn error(msg: &str, fields: &[(&str, &dyn fmt::Display)]) {
    log(Level::Error, msg, fields);
}

/// Logs at warn level.
pub fn warn(msg: &str, fields: &[(&str, &dyn fmt::Display)]) {
    log(Level::Warn, msg, fields);
}

/// Logs at info level.
pub fn info(msg: &str, fields: &[(&str, &dyn fmt::Display)]) {
    log(Level::Info, msg, fields);
}

/// Logs at debug level.
pub fn debug(msg: &str, fields: &[(&str, &dyn fmt::Display)]) {
    log(Level::Debug, msg, fields);
}

/// One line, newline included. Pure, for tests.
pub fn format_line(
    level: Level,
    unix_ms: u64,
    msg: &str,
    fields: &[(&str, &dyn fmt::Display)],
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
            crate::sio::packet::write_json_string(&mut out, &v.to_string());
        }
        out.push('}');
    } else {
        let _ = write!(out, "{ts} {:<5} {msg}", level.name());
        for (k, v) in fields {
            let v = v.to_string();
            if v.is_empty() || v.contains([' ', '"', '=']) {
                let _ = write!(out, " {k}={v:?}");
            } else {
                let _ = write!(out, " {k}={v}");
            }
        }
    }
    out.push('\n');
    out
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
        let addr = "127.0.0.1:3000";
        let reason = "ping timeout";
        let fields: [(&str, &dyn fmt::Display); 2] = [("peer", &addr), ("reason", &reason)];
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
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn levels() {
        assert_eq!(Level::parse("WARN"), Ok(Some(Level::Warn)));
        assert_eq!(Level::parse("off"), Ok(None));
        assert!(Level::parse("loud").is_err());
        assert!(Level::Error < Level::Debug);
    }
}
