//! The memory budget (`--max-memory`): one bound on everything clients can make the server
//! hold, in three fixed shares.
//!
//! | share | what | at its limit |
//! |---|---|---|
//! | half | room history, every room's together | the oldest messages across all rooms go first |
//! | a quarter | recovery state (events kept for sockets that may come back) | the oldest away socket gives up its events first |
//! | a quarter | output queued for clients (WebSocket frames, polling queues) | new work that would add output is refused (`Server busy`, `503`); a connection over its share is cut as a slow consumer |
//!
//! Fixed shares make the bound hard: each store keeps to its own, so their sum never passes
//! the budget, whatever the mix. What the budget does not count is what every connection
//! costs whatever its client does (≈ 2.6 KB a WebSocket session, bounded by
//! `--max-connections`), a request body on its way in (bounded per connection by
//! `--max-payload`), and the binary itself.
//!
//! The default is half the memory limit of the process's cgroup (a systemd unit's
//! `MemoryMax`, a container's limit), else a quarter of the machine's memory: read once at
//! start-up, which is the only I/O here.

use std::fs;

/// The smallest budget: below it the shares hold less than one long message each.
pub const MIN_BUDGET: usize = 1 << 20;

/// The budget where no limit can be found (no cgroup limit, no `/proc/meminfo`).
const FALLBACK_BUDGET: usize = 256 << 20;

/// `--max-memory`, split into its shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The whole budget, in bytes.
    pub total: usize,
}

impl Budget {
    /// Room history, all rooms together: half.
    pub fn history(self) -> usize {
        self.total / 2
    }

    /// Recovery state: a quarter.
    pub fn recovery(self) -> usize {
        self.total / 4
    }

    /// Output queued for clients: what is left (a quarter).
    pub fn output(self) -> usize {
        self.total - self.history() - self.recovery()
    }

    /// The default: half the cgroup's memory limit, else a quarter of the machine's memory.
    pub fn detect() -> Self {
        let total = match (cgroup_limit(), machine_memory()) {
            (Some(limit), _) => limit / 2,
            (None, Some(ram)) => ram / 4,
            (None, None) => FALLBACK_BUDGET,
        };
        // Whole mebibytes: what `--help` and the start-up line show reads back as it is.
        Budget {
            total: (total & !((1 << 20) - 1)).max(MIN_BUDGET),
        }
    }
}

/// Parses a size: bytes (`1048576`), or a number with a binary unit (`512KiB`, `64MiB`,
/// `2GiB`; `K`, `M`, `G` as systemd reads them, powers of 1024 too).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 64MiB, 512KiB, 1GiB)"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit (B, K or KiB, M or MiB, G or GiB)"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// A size as `parse_size` reads it back, in its largest whole unit.
pub fn show_size(n: usize) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n > 0 && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// The tightest memory limit on this process's cgroup and its ancestors (cgroup v2's
/// `memory.max`, or v1's `memory.limit_in_bytes`), if any is set.
fn cgroup_limit() -> Option<usize> {
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut limits = Vec::new();
    for line in own.lines() {
        // `hierarchy:controllers:path`: v2 is `0::/path`, v1's memory line names `memory`.
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (root, file) = match controllers {
            "" => ("/sys/fs/cgroup", "memory.max"),
            c if c.split(',').any(|c| c == "memory") => {
                ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
            }
            _ => continue,
        };
        // Up from the process's own group: the tightest limit on the way applies.
        let mut dir = path.trim_end_matches('/').to_string();
        loop {
            if let Ok(text) = fs::read_to_string(format!("{root}{dir}/{file}")) {
                limits.extend(text.trim().parse::<u64>().ok());
            }
            match dir.rfind('/') {
                Some(i) => dir.truncate(i),
                None => break,
            }
        }
    }
    // "No limit" reads as `max` (v2) or a page-rounded `i64::MAX` (v1).
    limits
        .into_iter()
        .filter(|l| *l < 1 << 60)
        .min()
        .map(|l| usize::try_from(l).unwrap_or(usize::MAX))
}

/// `MemTotal` from `/proc/meminfo`.
fn machine_memory() -> Option<usize> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("10B"), Ok(10));
        for bad in ["", "MiB", "12 parsecs", "1.5GiB", "-1MiB", "64mb"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert!(parse_size(&format!("{}GiB", usize::MAX >> 20)).is_err());
        for n in [1, 1000, 1 << 10, 3 << 20, 5 << 30, (1 << 20) + 1] {
            assert_eq!(parse_size(&show_size(n)), Ok(n), "{n}");
        }
        assert_eq!(show_size(64 << 20), "64MiB");
    }

    #[test]
    fn shares_add_up_to_the_budget() {
        for total in [MIN_BUDGET, (32 << 20) + 3, 1 << 30] {
            let b = Budget { total };
            assert_eq!(b.history() + b.recovery() + b.output(), total);
            assert!(b.output() >= b.recovery());
        }
    }

    #[test]
    fn the_default_is_found_and_sane() {
        let b = Budget::detect();
        assert!(b.total >= MIN_BUDGET);
        if let Some(ram) = machine_memory() {
            assert!(b.total <= ram, "a budget beyond the machine's memory");
        }
    }
}
