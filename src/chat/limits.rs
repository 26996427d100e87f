//! Abuse limits of the chat, pure and clock-driven (the loop's milliseconds): a fixed window
//! for failed joins (per socket, and per client address when it is trustworthy), so guessing
//! live 6-digit codes is impractical; a token bucket for messages per socket.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use crate::timer::Millis;

/// `count` events per `per` (`10/m`, `20/s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per period.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// Parses `N/s`, `N/m`, `N/h` (or `N/<duration>` such as `5/10s`); `0` means no limit.
    pub fn parse(s: &str) -> Result<Option<Rate>, String> {
        let s = s.trim();
        if s == "0" {
            return Ok(None);
        }
        let err = || format!("expected N/s, N/m, N/h, N/<duration> (5/2s) or 0, not `{s}`");
        let (count, per) = s.split_once('/').ok_or_else(err)?;
        let count: u32 = count.trim().parse().map_err(|_| err())?;
        let per = match per.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => crate::config::parse_duration(other).map_err(|_| err())?,
        };
        if count == 0 {
            return Ok(None);
        }
        if per.is_zero() {
            return Err(err());
        }
        Ok(Some(Rate { count, per }))
    }

    fn per_ms(self) -> Millis {
        self.per.as_millis() as Millis
    }
}

const SWEEP_MIN: usize = 4096;

/// Failures counted in fixed windows, per key.
#[derive(Debug)]
pub struct Failures<K> {
    rate: Rate,
    windows: HashMap<K, (Millis, u32)>,
    /// Table size at which expired windows are next swept out (doubles with the live ones, so
    /// sweeping stays amortised O(1) per failure however many keys fail at once).
    sweep_at: usize,
}

impl<K: Hash + Eq + Copy> Failures<K> {
    /// A counter allowing `rate.count` failures per `rate.per`.
    pub fn new(rate: Rate) -> Self {
        Failures {
            rate,
            windows: HashMap::new(),
            sweep_at: SWEEP_MIN,
        }
    }

    /// Whether `key` has used up its failures in the current window.
    pub fn exhausted(&self, key: K, now: Millis) -> bool {
        self.windows
            .get(&key)
            .is_some_and(|&(start, n)| now < start + self.rate.per_ms() && n >= self.rate.count)
    }

    /// Counts a failure; returns true when this one used up the window.
    pub fn fail(&mut self, key: K, now: Millis) -> bool {
        let per = self.rate.per_ms();
        if self.windows.len() >= self.sweep_at {
            // Forget expired windows, so the table tracks only recent failures.
            self.windows.retain(|_, (start, _)| now < *start + per);
            self.sweep_at = (2 * self.windows.len()).max(SWEEP_MIN);
        }
        let w = self.windows.entry(key).or_insert((now, 0));
        if now >= w.0 + per {
            *w = (now, 0);
        }
        w.1 += 1;
        w.1 == self.rate.count
    }

    /// Forgets `key` (its socket is gone).
    pub fn forget(&mut self, key: K) {
        self.windows.remove(&key);
    }

    /// Keys with a window.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no key has a window.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

/// A token bucket: `rate.count` per `rate.per`, bursts up to twice that.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    /// Tokens, in thousandths.
    milli_tokens: u64,
    last: Millis,
}

impl Bucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: Millis) -> Self {
        Bucket {
            milli_tokens: capacity(rate),
            last: now,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, rate: Rate, now: Millis) -> bool {
        let elapsed = now.saturating_sub(self.last);
        self.last = now;
        let refill = elapsed.saturating_mul(u64::from(rate.count) * 1000) / rate.per_ms().max(1);
        self.milli_tokens = (self.milli_tokens + refill).min(capacity(rate));
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

fn capacity(rate: Rate) -> u64 {
    2 * u64::from(rate.count) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        let r = Rate::parse("10/m").unwrap().unwrap();
        assert_eq!((r.count, r.per), (10, Duration::from_secs(60)));
        assert_eq!(
            Rate::parse("20/s").unwrap().unwrap().per,
            Duration::from_secs(1)
        );
        assert_eq!(
            Rate::parse("5/10s").unwrap().unwrap().per,
            Duration::from_secs(10)
        );
        assert_eq!(Rate::parse("0"), Ok(None));
        assert_eq!(Rate::parse("0/s"), Ok(None));
        for bad in ["", "10", "x/s", "10/parsec", "10/0s", "-1/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn failures_exhaust_then_reset_with_the_window() {
        let mut f = Failures::new(Rate::parse("3/m").unwrap().unwrap());
        assert!(!f.fail(1, 0));
        assert!(!f.fail(1, 10));
        assert!(!f.exhausted(1, 20));
        assert!(f.fail(1, 20), "the third failure uses the window up");
        assert!(f.exhausted(1, 59_999));
        assert!(!f.exhausted(2, 59_999), "other keys are not affected");
        assert!(!f.exhausted(1, 60_000), "a new window");
        assert!(!f.fail(1, 60_000));
        f.forget(1);
        assert!(f.is_empty());
    }

    #[test]
    fn bucket_allows_bursts_of_twice_the_rate_then_the_rate() {
        let rate = Rate::parse("20/s").unwrap().unwrap();
        let mut b = Bucket::full(rate, 0);
        let burst = (0..100).take_while(|_| b.take(rate, 0)).count();
        assert_eq!(burst, 40);
        assert!(!b.take(rate, 49), "under one token after 49 ms");
        assert!(b.take(rate, 50), "one token per 50 ms");
        let later = (0..100).take_while(|_| b.take(rate, 1050)).count();
        assert_eq!(later, 20, "one second refills twenty");
    }
}
