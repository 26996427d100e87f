//! A hashed timer wheel: every deadline of the server lives here.
//!
//! Ping interval, pong timeout, upgrade timeout, header-read timeout, Socket.IO connect timeout
//! and room expiry are all entries of one wheel owned by the event loop. Insert and cancel are
//! O(1); advancing costs one bucket per elapsed tick. Time is passed in (`poll_to(now)`), so
//! tests step it without sleeping. This module knows nothing of sockets: a payload `T` says
//! what to do when an entry fires, and carries its own generation-checked key.
//!
//! Cancellation is lazy: a cancelled entry leaves its slab slot at once, and its `(index,
//! generation)` reference in the bucket is dropped the next time the bucket is visited. A
//! reused slot has a new generation, so a stale reference never fires the new entry.

use slab::Slab;

/// Milliseconds on the server's monotonic clock (since the loop started).
pub type Millis = u64;

/// Milliseconds of a duration, saturating rather than truncating.
pub fn ms(d: std::time::Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// The time `after` from `now`: saturates at the end of time instead of wrapping round to a
/// deadline in the past (a huge configured duration means "never", not "at once").
pub fn deadline(now: Millis, after: std::time::Duration) -> Millis {
    now.saturating_add(ms(after))
}

/// Number of buckets; one tick is one millisecond, so one turn of the wheel is ~4.1 s.
const BUCKETS: usize = 4096;
const MASK: u64 = BUCKETS as u64 - 1;
const WORDS: usize = BUCKETS / 64;

/// A handle to cancel a timer. Stale handles (fired or cancelled) are harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerId {
    idx: u32,
    generation: u32,
}

#[derive(Debug)]
struct Entry<T> {
    at: Millis,
    generation: u32,
    value: T,
}

/// A hashed timer wheel with one-millisecond ticks.
#[derive(Debug)]
pub struct TimerWheel<T> {
    buckets: Box<[Vec<(u32, u32)>]>,
    /// One bit per bucket that may hold live entries (a lower bound for `next_deadline`).
    occupied: [u64; WORDS],
    entries: Slab<Entry<T>>,
    next_gen: u32,
    /// Every tick up to and including `now` has been processed.
    now: Millis,
}

impl<T> TimerWheel<T> {
    /// An empty wheel whose clock reads `now`.
    pub fn new(now: Millis) -> Self {
        TimerWheel {
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            occupied: [0; WORDS],
            entries: Slab::new(),
            next_gen: 0,
            now,
        }
    }

    /// Number of live (not fired, not cancelled) timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no timer is live.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The time the wheel was last advanced to.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Schedules `value` to fire at `at`. A deadline in the past fires on the next `poll_to`.
    pub fn insert(&mut self, at: Millis, value: T) -> TimerId {
        let generation = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1);
        let idx = self.entries.insert(Entry {
            at,
            generation,
            value,
        });
        let tick = at.max(self.now + 1);
        let b = (tick & MASK) as usize;
        // Slab indices fit u32: more than 4 billion live timers would exhaust memory first.
        self.buckets[b].push((idx as u32, generation));
        self.occupied[b / 64] |= 1 << (b % 64);
        TimerId {
            idx: idx as u32,
            generation,
        }
    }

    /// Cancels a timer, returning its payload if it was still live.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let idx = id.idx as usize;
        match self.entries.get(idx) {
            Some(e) if e.generation == id.generation => Some(self.entries.remove(idx).value),
            _ => None,
        }
    }

    /// The deadline of a live timer.
    pub fn deadline(&self, id: TimerId) -> Option<Millis> {
        match self.entries.get(id.idx as usize) {
            Some(e) if e.generation == id.generation => Some(e.at),
            _ => None,
        }
    }

    /// Advances the clock to `now`, appending the handle of every timer due by then to `out`.
    /// A due timer stays live until `fire` takes it: one cancelled meanwhile (by a timer that
    /// fired before it in the same turn, say) never fires. Each id must be fired (or
    /// cancelled): one left alone stays on the wheel (counted by `len`) and fires never.
    pub fn poll_to(&mut self, now: Millis, out: &mut Vec<TimerId>) {
        if now <= self.now {
            return;
        }
        if now - self.now >= BUCKETS as u64 {
            // A long pause: every bucket is due once; one pass over all of them catches up.
            for b in 0..BUCKETS {
                self.expire_bucket(b, now, out);
            }
        } else {
            for tick in self.now + 1..=now {
                self.expire_bucket((tick & MASK) as usize, now, out);
            }
        }
        self.now = now;
    }

    /// Takes a due timer (from `poll_to`) off the wheel: its payload, if it is still live.
    pub fn fire(&mut self, id: TimerId) -> Option<T> {
        self.cancel(id)
    }

    fn expire_bucket(&mut self, b: usize, now: Millis, out: &mut Vec<TimerId>) {
        if self.occupied[b / 64] & (1 << (b % 64)) == 0 {
            return;
        }
        let entries = &mut self.entries;
        self.buckets[b].retain(|&(idx, generation)| {
            let idx = idx as usize;
            match entries.get(idx) {
                Some(e) if e.generation == generation => {
                    if e.at <= now {
                        out.push(TimerId {
                            idx: idx as u32,
                            generation,
                        });
                        false
                    } else {
                        true
                    }
                }
                _ => false, // cancelled: drop the stale reference
            }
        });
        if self.buckets[b].is_empty() {
            self.occupied[b / 64] &= !(1 << (b % 64));
        }
    }

    /// A lower bound of the next deadline (`None` when no timer is live): the start of the
    /// first non-empty bucket ahead. The event loop uses it as its poll timeout; waking at a
    /// bucket that only holds later-round or cancelled entries costs one empty turn.
    pub fn next_deadline(&self) -> Option<Millis> {
        if self.entries.is_empty() {
            return None;
        }
        let start = self.now + 1;
        let mut step = 0u64;
        while step < BUCKETS as u64 {
            let b = ((start + step) & MASK) as usize;
            let rest = self.occupied[b / 64] >> (b % 64);
            if rest == 0 {
                step += 64 - (b % 64) as u64; // the rest of this word is empty
                continue;
            }
            return Some(start + step + u64::from(rest.trailing_zeros()));
        }
        Some(self.now + BUCKETS as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fired(w: &mut TimerWheel<u32>, now: Millis) -> Vec<u32> {
        let mut due = Vec::new();
        w.poll_to(now, &mut due);
        let mut out: Vec<u32> = due.into_iter().filter_map(|id| w.fire(id)).collect();
        out.sort();
        out
    }

    #[test]
    fn a_timer_cancelled_by_one_due_before_it_in_the_same_turn_never_fires() {
        let mut w = TimerWheel::new(0);
        let first = w.insert(10, 1);
        let second = w.insert(10, 2);
        let mut due = Vec::new();
        w.poll_to(10, &mut due);
        assert_eq!(due, vec![first, second]);
        assert_eq!(w.fire(first), Some(1));
        // The first one's handler cancels the second.
        assert_eq!(w.cancel(second), Some(2));
        assert_eq!(w.fire(second), None);
        assert!(w.is_empty());
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let mut w = TimerWheel::new(0);
        w.insert(10, 1);
        w.insert(25, 2);
        assert_eq!(fired(&mut w, 9), Vec::<u32>::new());
        assert_eq!(fired(&mut w, 10), vec![1]);
        assert_eq!(fired(&mut w, 24), Vec::<u32>::new());
        assert_eq!(fired(&mut w, 30), vec![2]);
        assert!(w.is_empty());
    }

    #[test]
    fn past_deadline_fires_on_next_poll() {
        let mut w = TimerWheel::new(100);
        w.insert(50, 7);
        assert_eq!(fired(&mut w, 101), vec![7]);
    }

    #[test]
    fn hash_collisions_wait_for_their_round() {
        let mut w = TimerWheel::new(0);
        // Same bucket, three different rounds.
        w.insert(5, 1);
        w.insert(5 + BUCKETS as u64, 2);
        w.insert(5 + 2 * BUCKETS as u64, 3);
        assert_eq!(fired(&mut w, 5), vec![1]);
        assert_eq!(fired(&mut w, BUCKETS as u64), Vec::<u32>::new());
        assert_eq!(fired(&mut w, 5 + BUCKETS as u64), vec![2]);
        assert_eq!(w.len(), 1);
        assert_eq!(fired(&mut w, 5 + 2 * BUCKETS as u64), vec![3]);
    }

    #[test]
    fn catch_up_after_a_long_pause() {
        let mut w = TimerWheel::new(0);
        for i in 0..100u32 {
            w.insert(u64::from(i) * 97, i);
        }
        let all = fired(&mut w, 1_000_000);
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn cancel_prevents_firing_and_returns_payload() {
        let mut w = TimerWheel::new(0);
        let a = w.insert(10, 1);
        w.insert(10, 2);
        assert_eq!(w.cancel(a), Some(1));
        assert_eq!(w.cancel(a), None, "a second cancel is a no-op");
        assert_eq!(fired(&mut w, 10), vec![2]);
    }

    #[test]
    fn a_stale_handle_never_touches_a_reused_slot() {
        let mut w = TimerWheel::new(0);
        let old = w.insert(10, 1);
        assert_eq!(w.cancel(old), Some(1));
        // The slab slot is reused by a new timer in another bucket...
        let new = w.insert(20, 2);
        // ...the old handle cannot cancel it...
        assert_eq!(w.cancel(old), None);
        // ...and the old bucket's stale reference does not fire it early.
        assert_eq!(fired(&mut w, 15), Vec::<u32>::new());
        assert_eq!(w.deadline(new), Some(20));
        assert_eq!(fired(&mut w, 20), vec![2]);
    }

    #[test]
    fn next_deadline_is_a_lower_bound() {
        let mut w = TimerWheel::new(1000);
        assert_eq!(w.next_deadline(), None);
        w.insert(1300, 1);
        w.insert(1200, 2);
        assert_eq!(w.next_deadline(), Some(1200));
        fired(&mut w, 1200);
        assert_eq!(w.next_deadline(), Some(1300));
        // A deadline more than a turn away: the wheel wakes at its bucket, no later.
        let mut w = TimerWheel::new(0);
        w.insert(3 * BUCKETS as u64 + 7, 1);
        let d = w.next_deadline().unwrap();
        assert!(d <= 3 * BUCKETS as u64 + 7);
        assert!(d >= 1);
    }
}
