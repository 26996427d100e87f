//! Rooms: which sockets are in which room of a namespace, behind an `Adapter` (socket.io's
//! `Adapter`, socketioxide's `CoreAdapter`). The Socket.IO layer asks it who to deliver a room's
//! packets to; `LocalAdapter`, the default, keeps the rooms of this process in memory. Another
//! adapter can put the rooms somewhere shared (several nodes) without the layer or the
//! application above changing. Pure data: no I/O here.

use std::collections::HashMap;

use super::{Nsp, SocketRef};
use crate::slots::{SlotKey, Slots};

/// A room, by handle: what `join` answers, so a room's packets reach its members without
/// looking its name up again (a generation-checked key: a stale one names no room).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoomId {
    idx: u32,
    generation: u32,
}

impl SlotKey for RoomId {
    fn new(idx: u32, generation: u32) -> Self {
        RoomId { idx, generation }
    }
    fn idx(&self) -> u32 {
        self.idx
    }
    fn generation(&self) -> u32 {
        self.generation
    }
}

/// Room membership.
pub trait Adapter {
    /// Adds `socket` to `room` of `nsp` (at the end of its members; a no-op if it is in), and
    /// answers the room's handle.
    fn join(&mut self, nsp: Nsp, room: &str, socket: SocketRef) -> RoomId;
    /// Takes `socket` out of `room` of `nsp`; a room left empty is gone.
    fn leave(&mut self, nsp: Nsp, room: &str, socket: SocketRef);
    /// The members of `room` of `nsp`, in joining order.
    fn members(&self, nsp: Nsp, room: &str) -> &[SocketRef];
    /// The members of a room by its handle (none once the room is gone).
    fn members_of(&self, room: RoomId) -> &[SocketRef];
    /// The handle of `room` of `nsp`, while it has members.
    fn id(&self, nsp: Nsp, room: &str) -> Option<RoomId>;
}

/// The rooms of this process, in memory.
#[derive(Debug, Default)]
pub struct LocalAdapter {
    /// Each namespace's rooms by name.
    names: Vec<HashMap<Box<str>, RoomId>>,
    /// Each room's members.
    rooms: Slots<RoomId, Vec<SocketRef>>,
}

impl Adapter for LocalAdapter {
    fn join(&mut self, nsp: Nsp, room: &str, socket: SocketRef) -> RoomId {
        let idx = nsp.0 as usize;
        if self.names.len() <= idx {
            self.names.resize_with(idx + 1, HashMap::new);
        }
        let rooms = &mut self.rooms;
        let id = *self.names[idx]
            .entry(room.into())
            .or_insert_with(|| rooms.insert(Vec::new()));
        if let Some(members) = self.rooms.get_mut(id)
            && !members.contains(&socket)
        {
            members.push(socket);
        }
        id
    }

    fn leave(&mut self, nsp: Nsp, room: &str, socket: SocketRef) {
        let Some(names) = self.names.get_mut(nsp.0 as usize) else {
            return;
        };
        let Some(&id) = names.get(room) else {
            return;
        };
        if let Some(members) = self.rooms.get_mut(id) {
            members.retain(|m| *m != socket);
            if members.is_empty() {
                self.rooms.remove(id);
                names.remove(room);
            }
        }
    }

    fn members(&self, nsp: Nsp, room: &str) -> &[SocketRef] {
        self.names
            .get(nsp.0 as usize)
            .and_then(|r| r.get(room))
            .map_or(&[], |id| self.members_of(*id))
    }

    fn members_of(&self, room: RoomId) -> &[SocketRef] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }

    fn id(&self, nsp: Nsp, room: &str) -> Option<RoomId> {
        self.names.get(nsp.0 as usize)?.get(room).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_in_joining_order_and_empty_rooms_go() {
        let mut a = LocalAdapter::default();
        let (x, y) = (SocketRef::for_test(1), SocketRef::for_test(2));
        let id = a.join(Nsp::MAIN, "r", x);
        assert_eq!(a.join(Nsp::MAIN, "r", y), id);
        assert_eq!(a.join(Nsp::MAIN, "r", x), id);
        assert_eq!(a.members(Nsp::MAIN, "r"), [x, y]);
        assert_eq!(a.members_of(id), [x, y]);
        assert_eq!(a.id(Nsp::MAIN, "r"), Some(id));
        assert_eq!(a.members(Nsp(1), "r"), []);
        a.leave(Nsp::MAIN, "r", x);
        assert_eq!(a.members(Nsp::MAIN, "r"), [y]);
        a.leave(Nsp::MAIN, "r", y);
        assert!(a.names[0].is_empty());
        assert_eq!(a.members_of(id), [], "a stale handle names no room");
        assert_ne!(a.join(Nsp::MAIN, "r", x), id);
    }
}
