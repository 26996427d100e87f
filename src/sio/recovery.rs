//! Connection state recovery: what lets a socket whose transport dropped come back with its id,
//! its rooms and every event it missed (socket.io's `connectionStateRecovery`, which
//! socket.io-client 4.x speaks natively).
//!
//! With recovery on, every event sent to a client without an ack id carries an offset as the
//! last element of its data array, and each socket keeps its last events in an `Outbox` (the
//! shared packets, not copies). A socket whose transport drops stays registered for the
//! recovery window, its outbox still filling; a client that reconnects with the socket's
//! private id (`pid`) and the last offset it saw gets every event after that offset again,
//! before the CONNECT reply. The outbox keeps the last events by count, not by age (a quiet
//! room recovers however old its last event is), bounded per socket and in total: when a cap
//! drops an event the client may not have seen, recovery past it fails cleanly (a fresh socket),
//! never silently short. Pure data: no I/O here.

use std::collections::VecDeque;
use std::time::Duration;

use crate::engine::Outgoing;

/// Recovery settings.
#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// How long a socket whose transport dropped can come back; zero turns recovery off (no
    /// `pid`, no offsets: socket.io's wire without it). Defaults to 2 minutes (socket.io's).
    pub window: Duration,
    /// Most events kept per socket. Defaults to 1000.
    pub max_events: usize,
    /// Most bytes kept for recovery in total (packets counted once per socket holding them,
    /// plus a fixed cost per entry); also bounds the sockets away at once, to one per
    /// `AWAY_COST` bytes. Defaults to 64 MiB.
    pub max_bytes: usize,
    /// Most bytes one socket keeps: what a restore sends again in one go, so keep it within
    /// half the engine's output buffers (`--max-buffer` sets it to half of that, 1 MiB at
    /// most). Defaults to 1 MiB.
    pub max_socket_bytes: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            window: Duration::from_secs(120),
            max_events: 1000,
            max_bytes: 64 << 20,
            max_socket_bytes: 1 << 20,
        }
    }
}

impl RecoveryConfig {
    /// Recovery off.
    pub fn off() -> Self {
        RecoveryConfig {
            window: Duration::ZERO,
            ..RecoveryConfig::default()
        }
    }

    /// Whether recovery is on.
    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }
}

/// What an entry costs besides its packet's bytes (the entry itself and the packet's header).
pub const ENTRY_COST: usize = 48;

/// What an away socket is reckoned to cost while it waits (its registration and tables): at
/// most `max_bytes / AWAY_COST` sockets are away at once, whatever the events hold.
pub const AWAY_COST: usize = 512;

/// Most bytes one socket is sent again by restores per `RESTORE_PERIOD`: each restore sends
/// everything unconfirmed again, so without a bound a client reconnecting in a loop is an
/// amplifier. Four full outboxes a minute; a flaky network's restores resend a few events.
pub const MAX_REPLAY_BYTES: usize = 4 << 20;

/// The period of `MAX_REPLAY_BYTES`, in milliseconds.
pub const RESTORE_PERIOD: u64 = 60_000;

/// The bytes an entry accounts for.
fn cost(packet: &Outgoing) -> usize {
    ENTRY_COST
        + match packet {
            Outgoing::Text(t) => t.len(),
            Outgoing::Binary(b) => b.len(),
        }
}

/// The total budget shared by every socket's outbox.
#[derive(Debug)]
pub struct Budget {
    /// Bytes held now.
    pub used: usize,
    /// The cap.
    pub max: usize,
}

/// The caps on one outbox.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Most packets.
    pub events: usize,
    /// Most bytes.
    pub bytes: usize,
}

/// A socket's last events: each packet's Engine.IO messages (the text, then any attachments)
/// tagged with the packet's offset, in the order they were sent. What the client has surely
/// received is forgotten: a pong answers a ping sent after the previous pong, so at each pong
/// everything held at the previous one has reached the client (`confirm`). A connected socket
/// keeps about one ping interval of events; an away one keeps everything since its last pong.
#[derive(Debug, Default)]
pub struct Outbox {
    entries: VecDeque<(u64, Outgoing)>,
    /// Entries ever removed from the front.
    popped: u64,
    /// `popped + entries.len()` at the previous pong: what the next pong confirms.
    mark: u64,
    /// The offset of the last packet dropped to stay within the caps.
    dropped: Option<u64>,
    /// Packets held (entries with a new offset).
    packets: usize,
    /// Bytes held (as the budget counts them).
    bytes: usize,
    /// Emptied to make room for others: it can restore nothing.
    lost: bool,
    /// The offset of the first packet it ever held.
    first: Option<u64>,
    /// The last offset the client saw before this socket (on another node it was brought
    /// from, or an earlier socket of a failed recovery), which means it has seen nothing held
    /// here.
    /// Zero: none (offsets start at 1); a plain `u64` keeps every socket's outbox small.
    base: u64,
}

/// Why a restore cannot give the client everything it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incomplete {
    /// Events after the client's offset were dropped by a cap (or the offset was never sent).
    Dropped,
}

impl Outbox {
    /// Appends one message of the packet with `offset`; drops the oldest packets past its
    /// caps (the new one too if they cannot hold it). The shared budget is the caller's
    /// (`trim`).
    pub fn push(&mut self, offset: u64, packet: Outgoing, caps: Caps, budget: &mut Budget) {
        if self.lost {
            return;
        }
        let size = cost(&packet);
        self.first.get_or_insert(offset);
        // The client's last offset from before names this packet now (a process's offsets
        // start over when it does): an offset means this packet from here on.
        if offset == self.base {
            self.base = 0;
        }
        let new_packet = self.entries.back().is_none_or(|(o, _)| *o != offset);
        if new_packet {
            self.packets += 1;
        }
        self.entries.push_back((offset, packet));
        budget.used += size;
        self.bytes += size;
        while (self.packets > caps.events || self.bytes > caps.bytes) && self.drop_oldest(budget) {}
    }

    /// Drops the oldest packets while the shared budget is exceeded.
    pub fn trim(&mut self, budget: &mut Budget) {
        while budget.used > budget.max && self.drop_oldest(budget) {}
    }

    /// Empties the outbox for good, to make room for others: it can restore nothing now.
    pub fn lose(&mut self, budget: &mut Budget) {
        self.clear(budget);
        self.lost = true;
    }

    /// Whether it was emptied for others.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Drops the oldest packet (all its messages); false when empty.
    fn drop_oldest(&mut self, budget: &mut Budget) -> bool {
        let Some(&(offset, _)) = self.entries.front() else {
            return false;
        };
        while let Some((o, p)) = self.entries.front()
            && *o == offset
        {
            budget.used -= cost(p);
            self.bytes -= cost(p);
            self.entries.pop_front();
            self.popped += 1;
        }
        self.packets -= 1;
        self.dropped = Some(offset);
        true
    }

    /// The messages sent after the packet with `offset` (after nothing: every message kept),
    /// when nothing after it was dropped. Offsets come from one sequence for all sockets: an
    /// offset below the first this socket was sent is the client's last from an earlier
    /// socket (socket.io-client keeps it across sockets), so this one sent it nothing yet.
    pub fn after(
        &self,
        offset: Option<u64>,
    ) -> Result<impl Iterator<Item = &Outgoing>, Incomplete> {
        if self.lost {
            return Err(Incomplete::Dropped);
        }
        let offset = offset
            .filter(|o| self.first.is_some_and(|f| *o >= f))
            .filter(|o| *o != self.base || self.base == 0);
        let start = match offset {
            None if self.dropped.is_none() => 0,
            Some(o) if self.dropped == Some(o) => 0,
            Some(o) => match self.entries.iter().rposition(|(e, _)| *e == o) {
                // The last message of that packet (its attachments come before it ends).
                Some(i) => i + 1,
                None => return Err(Incomplete::Dropped),
            },
            None => return Err(Incomplete::Dropped),
        };
        Ok(self.entries.range(start..).map(|(_, p)| p))
    }

    /// Whether it holds every event it was given (none dropped by a cap, none lost).
    pub fn is_whole(&self) -> bool {
        !self.lost && self.dropped.is_none()
    }

    /// The packets after `offset` with their offsets, as `after` finds them.
    pub fn entries_after(&self, offset: Option<u64>) -> Result<Vec<(u64, Outgoing)>, Incomplete> {
        let skip = self.entries.len() - self.after(offset)?.count();
        Ok(self.entries.iter().skip(skip).cloned().collect())
    }

    /// Takes every entry out, giving their bytes back to the budget: the outbox is new.
    pub fn take_all(&mut self, budget: &mut Budget) -> Vec<(u64, Outgoing)> {
        for (_, p) in &self.entries {
            budget.used -= cost(p);
        }
        let entries = std::mem::take(&mut self.entries);
        *self = Outbox::default();
        entries.into()
    }

    /// The client last saw `offset` before this socket: asked for what came after it, this
    /// outbox gives everything it holds.
    pub fn set_base(&mut self, offset: Option<u64>) {
        self.base = offset.unwrap_or(0);
    }

    /// The last offset the client saw elsewhere (`set_base`).
    pub fn base(&self) -> Option<u64> {
        (self.base != 0).then_some(self.base)
    }

    /// The client answered a ping: forgets what was held at the previous pong (it has reached
    /// the client), and marks what is held now for the next one.
    pub fn confirm(&mut self, budget: &mut Budget) {
        while self.popped < self.mark && self.drop_oldest(budget) {}
        self.mark = self.popped + self.entries.len() as u64;
        self.shrink();
    }

    /// Gives back the memory of a deque that held far more than it holds now (after a busy
    /// spell, a quiet socket would otherwise keep its peak capacity for good).
    fn shrink(&mut self) {
        let (len, capacity) = (self.entries.len(), self.entries.capacity());
        if capacity > 16 && len < capacity / 4 {
            self.entries.shrink_to(len * 2);
        }
    }

    /// The socket is back on a new transport: what it holds was sent again, unconfirmed.
    pub fn resent(&mut self) {
        self.mark = self.popped;
    }

    /// Empties the outbox, giving its bytes back to the budget.
    pub fn clear(&mut self, budget: &mut Budget) {
        for (_, p) in std::mem::take(&mut self.entries) {
            budget.used -= cost(&p);
        }
        self.popped += self.packets as u64;
        self.packets = 0;
        self.bytes = 0;
    }

    /// Bytes held (the packets and their entries, as the budget counts them).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.packets
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.packets == 0
    }
}

/// Bits of a cluster's offset below its count (`tagged`): the application's tag, which a
/// node can read back from the offset a client sends (the cluster's chat puts the room's
/// message count there, so another node knows which messages the client has).
pub const TAG_BITS: u32 = 20;

/// The tag of an offset whose packet was given none; tags are below it.
pub const TAG_UNKNOWN: u64 = (1 << TAG_BITS) - 1;

/// A cluster's offset: `count` then `tag` (below `TAG_UNKNOWN`, or it).
pub fn tagged(count: u64, tag: u64) -> u64 {
    count.wrapping_shl(TAG_BITS) | (tag & TAG_UNKNOWN)
}

/// The count of a cluster's offset.
pub fn count_of(offset: u64) -> u64 {
    offset >> TAG_BITS
}

/// The tag of a cluster's offset.
pub fn tag_of_offset(offset: u64) -> u64 {
    offset & TAG_UNKNOWN
}

/// The packet with its offset (the last element of its data, `…,"123"]`) changed to
/// `offset`; attachments and packets without one are unchanged.
pub fn with_offset(packet: &Outgoing, offset: u64) -> Outgoing {
    let Outgoing::Text(text) = packet else {
        return packet.clone();
    };
    let t = text.as_str();
    let Some(head) = t.strip_suffix("\"]") else {
        return packet.clone();
    };
    let Some(quote) = head.rfind('"') else {
        return packet.clone();
    };
    if parse_offset(&head[quote + 1..]).is_none() || !head[..quote].ends_with(',') {
        return packet.clone();
    }
    let mut out = String::with_capacity(t.len() + 4);
    out.push_str(&head[..=quote]);
    crate::sio::packet::push_decimal(&mut out, offset);
    out.push_str("\"]");
    Outgoing::Text(out.into())
}

/// Parses an offset the client sent back (`"123"`); `None` when it is no offset of ours.
pub fn parse_offset(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt as _, SeedableRng};

    fn text(s: &str) -> Outgoing {
        Outgoing::message_str(s)
    }

    fn texts<'a>(it: impl Iterator<Item = &'a Outgoing>) -> Vec<String> {
        it.map(|p| match p {
            Outgoing::Text(t) => t.as_str()[1..].to_string(),
            Outgoing::Binary(b) => format!("<{} bytes>", b.len()),
        })
        .collect()
    }

    fn caps(events: usize) -> Caps {
        Caps {
            events,
            bytes: 1 << 20,
        }
    }

    fn budget(max: usize) -> Budget {
        Budget { used: 0, max }
    }

    #[test]
    fn replays_after_the_offset_and_everything_without_one() {
        let mut b = budget(usize::MAX);
        let mut o = Outbox::default();
        for (off, s) in [(1, "a"), (2, "b"), (5, "c")] {
            o.push(off, text(s), caps(10), &mut b);
        }
        assert_eq!(texts(o.after(Some(2)).unwrap()), ["c"]);
        assert_eq!(texts(o.after(Some(5)).unwrap()), Vec::<String>::new());
        assert_eq!(texts(o.after(None).unwrap()), ["a", "b", "c"]);
        assert_eq!(
            o.after(Some(3)).err(),
            Some(Incomplete::Dropped),
            "never sent"
        );
    }

    #[test]
    fn an_offset_from_before_the_socket_means_it_saw_nothing_of_it() {
        let mut b = budget(usize::MAX);
        let mut o = Outbox::default();
        assert_eq!(texts(o.after(Some(7)).unwrap()), Vec::<String>::new());
        o.push(10, text("a"), caps(10), &mut b);
        o.push(12, text("b"), caps(10), &mut b);
        assert_eq!(texts(o.after(Some(7)).unwrap()), ["a", "b"]);
        assert_eq!(
            o.after(Some(11)).err(),
            Some(Incomplete::Dropped),
            "never sent"
        );
        o.confirm(&mut b);
        o.confirm(&mut b);
        assert_eq!(
            o.after(Some(7)).err(),
            Some(Incomplete::Dropped),
            "a was received"
        );
    }

    #[test]
    fn a_packets_attachments_travel_with_it() {
        let mut b = budget(usize::MAX);
        let mut o = Outbox::default();
        o.push(1, text("a"), caps(2), &mut b);
        o.push(2, text("b"), caps(2), &mut b);
        o.push(2, Outgoing::binary(vec![0u8; 3]), caps(2), &mut b);
        assert_eq!(o.len(), 2);
        assert_eq!(texts(o.after(Some(1)).unwrap()), ["b", "<3 bytes>"]);
        assert_eq!(texts(o.after(Some(2)).unwrap()), Vec::<String>::new());
        o.push(3, text("c"), caps(2), &mut b);
        // Packet 1 went whole; packet 2 kept its attachment.
        assert_eq!(texts(o.after(Some(1)).unwrap()), ["b", "<3 bytes>", "c"]);
        o.push(4, text("d"), caps(2), &mut b);
        assert_eq!(texts(o.after(Some(2)).unwrap()), ["c", "d"]);
        assert_eq!(o.after(Some(1)).err(), Some(Incomplete::Dropped));
    }

    #[test]
    fn the_count_cap_drops_the_oldest_and_recovery_past_it_fails() {
        let mut b = budget(usize::MAX);
        let mut o = Outbox::default();
        for off in 1..=5 {
            o.push(off, text(&off.to_string()), caps(3), &mut b);
        }
        assert_eq!(o.len(), 3);
        assert_eq!(
            texts(o.after(Some(2)).unwrap()),
            ["3", "4", "5"],
            "2 was the last dropped"
        );
        assert_eq!(o.after(Some(1)).err(), Some(Incomplete::Dropped));
        assert_eq!(
            o.after(None).err(),
            Some(Incomplete::Dropped),
            "3 of 5 left"
        );
    }

    #[test]
    fn a_pong_forgets_what_the_previous_pong_saw_and_recovery_still_finds_the_client() {
        let mut b = budget(usize::MAX);
        let mut o = Outbox::default();
        o.push(1, text("a"), caps(10), &mut b);
        o.confirm(&mut b); // the ping after this pong is queued after "a"
        o.push(2, text("b"), caps(10), &mut b);
        o.push(2, Outgoing::binary(vec![1u8]), caps(10), &mut b);
        assert_eq!(o.len(), 2, "nothing confirmed yet");
        o.confirm(&mut b); // "a" has reached the client
        assert_eq!(texts(o.after(Some(1)).unwrap()), ["b", "<1 bytes>"]);
        assert_eq!(texts(o.after(Some(2)).unwrap()), Vec::<String>::new());
        o.push(3, text("c"), caps(10), &mut b);
        o.confirm(&mut b); // "b" too
        assert_eq!(
            texts(o.after(Some(2)).unwrap()),
            ["c"],
            "the client is at 2 or later"
        );
        assert_eq!(
            o.after(None).err(),
            Some(Incomplete::Dropped),
            "it had events"
        );
        // Back on a new transport: the replay is unconfirmed again.
        o.resent();
        o.confirm(&mut b);
        assert_eq!(o.len(), 1);
        o.confirm(&mut b);
        assert!(o.is_empty());
        assert_eq!(b.used, 0);
        assert_eq!(texts(o.after(Some(3)).unwrap()), Vec::<String>::new());
    }

    #[test]
    fn an_emptied_outbox_gives_its_memory_back_and_a_lost_one_restores_nothing() {
        let mut b = budget(usize::MAX);
        let mut o = Outbox::default();
        for off in 1..=1000 {
            o.push(off, text("x"), caps(1000), &mut b);
        }
        let peak = o.entries.capacity();
        o.confirm(&mut b);
        o.confirm(&mut b);
        assert!(o.is_empty() && b.used == 0);
        assert!(
            o.entries.capacity() < peak / 8,
            "{} of {peak}",
            o.entries.capacity()
        );
        o.push(1001, text("y"), caps(1000), &mut b);
        o.lose(&mut b);
        assert_eq!(b.used, 0);
        o.push(1002, text("z"), caps(1000), &mut b);
        assert!(o.is_empty(), "a lost outbox keeps nothing");
        assert_eq!(o.after(Some(1000)).err(), Some(Incomplete::Dropped));
        assert_eq!(o.after(Some(1002)).err(), Some(Incomplete::Dropped));
    }

    #[test]
    fn one_socket_keeps_at_most_a_megabyte() {
        let mut b = budget(usize::MAX);
        let mut o = Outbox::default();
        let big = "x".repeat(300 << 10);
        for off in 1..=5 {
            o.push(off, text(&big), caps(100), &mut b);
        }
        assert_eq!(
            o.len(),
            3,
            "three 300 KiB packets fit in 1 MiB, four do not"
        );
        assert!(o.bytes <= 1 << 20 && b.used == o.bytes);
        assert_eq!(o.after(Some(2)).map(|r| r.count()).ok(), Some(3));
    }

    #[test]
    fn the_shared_budget_holds_and_is_given_back() {
        let per = cost(&text("0123456789"));
        let mut b = budget(per * 3);
        let (mut x, mut y) = (Outbox::default(), Outbox::default());
        x.push(1, text("0123456789"), caps(100), &mut b);
        x.push(2, text("0123456789"), caps(100), &mut b);
        y.push(3, text("0123456789"), caps(100), &mut b);
        assert_eq!(b.used, per * 3);
        y.push(4, text("0123456789"), caps(100), &mut b);
        y.trim(&mut b);
        assert_eq!(
            b.used,
            per * 3,
            "over the budget, the growing outbox drops its oldest"
        );
        assert_eq!(texts(y.after(Some(3)).unwrap()), ["0123456789"]);
        // A packet larger than the whole budget is not kept at all.
        y.push(5, text(&"z".repeat(per * 4)), caps(100), &mut b);
        y.trim(&mut b);
        assert!(y.is_empty());
        assert_eq!(y.after(Some(4)).err(), Some(Incomplete::Dropped));
        assert_eq!(texts(y.after(Some(5)).unwrap()), Vec::<String>::new());
        x.clear(&mut b);
        assert_eq!(b.used, 0);
    }

    /// Against a model: every message pushed is a number; what `after` gives is exactly the
    /// model's messages after the offset, or an error exactly when one of those was dropped.
    #[test]
    fn after_matches_a_model() {
        let mut rng = StdRng::seed_from_u64(14);
        for _ in 0..300 {
            let max_events = rng.random_range(1..8usize);
            let mut b = budget(rng.random_range(1..20usize) * (ENTRY_COST + 4));
            let mut o = Outbox::default();
            let mut sent: Vec<(u64, String)> = Vec::new();
            let mut offset = 0u64;
            for _ in 0..rng.random_range(0..30) {
                if rng.random_bool(0.2) {
                    o.confirm(&mut b);
                }
                offset += rng.random_range(1..3u64);
                for part in 0..rng.random_range(1..3) {
                    let s = format!("{offset}.{part}");
                    o.push(offset, text(&s), caps(max_events), &mut b);
                    o.trim(&mut b);
                    sent.push((offset, s));
                }
            }
            let kept: Vec<String> = texts(o.after(None).unwrap_or_else(|_| {
                o.after(o.dropped)
                    .expect("everything after the last dropped is kept")
            }));
            // What is kept is a suffix of what was sent, whole packets only.
            assert!(
                sent.iter()
                    .map(|(_, s)| s.clone())
                    .collect::<Vec<_>>()
                    .ends_with(&kept)
            );
            assert!(b.used <= b.max);
            for probe in (0..=offset + 1).map(Some).chain([None]) {
                let want: Vec<String> = sent
                    .iter()
                    .skip_while(|(o, _)| probe.is_some_and(|p| *o <= p))
                    .map(|(_, s)| s.clone())
                    .collect();
                // An offset before the first sent is the client's from an earlier socket.
                let before_first = |p: u64| sent.first().is_none_or(|(f, _)| p < *f);
                let sent_offset =
                    probe.is_none_or(|p| before_first(p) || sent.iter().any(|(o, _)| *o == p));
                match o.after(probe) {
                    Ok(got) => {
                        assert!(sent_offset, "{probe:?} was never sent");
                        assert_eq!(texts(got), want, "after {probe:?}");
                    }
                    Err(_) => assert!(
                        !sent_offset || want.len() > kept.len(),
                        "after {probe:?}: refused although {want:?} is kept"
                    ),
                }
            }
        }
    }

    #[test]
    fn offsets_parse_strictly() {
        assert_eq!(parse_offset("0"), Some(0));
        assert_eq!(parse_offset("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "-1", "1.0", "x", "18446744073709551616", " 1"] {
            assert_eq!(parse_offset(bad), None, "{bad:?}");
        }
    }
}
