//! Rooms: which sockets are in which room of a namespace, behind an `Adapter` (socket.io's
//! `Adapter`, socketioxide's `CoreAdapter`). The Socket.IO layer asks it who to deliver a room's
//! packets to; `LocalAdapter`, the default, keeps the rooms of this process in memory. Another
//! adapter can put the rooms somewhere shared (several nodes) without the layer or the
//! application above changing. Pure data: no I/O here.

use std::collections::HashMap;

use super::{Nsp, SocketRef};

/// Room membership.
pub trait Adapter {
    /// Adds `socket` to `room` of `nsp` (at the end of its members; a no-op if it is in).
    fn join(&mut self, nsp: Nsp, room: &str, socket: SocketRef);
    /// Takes `socket` out of `room` of `nsp`; a room left empty is gone.
    fn leave(&mut self, nsp: Nsp, room: &str, socket: SocketRef);
    /// The members of `room` of `nsp`, in joining order.
    fn members(&self, nsp: Nsp, room: &str) -> &[SocketRef];
}

/// The rooms of this process, in memory.
#[derive(Debug, Default)]
pub struct LocalAdapter {
    /// Members of each room, per namespace.
    rooms: Vec<HashMap<Box<str>, Vec<SocketRef>>>,
}

impl Adapter for LocalAdapter {
    fn join(&mut self, nsp: Nsp, room: &str, socket: SocketRef) {
        let idx = nsp.0 as usize;
        if self.rooms.len() <= idx {
            self.rooms.resize_with(idx + 1, HashMap::new);
        }
        let members = self.rooms[idx].entry(room.into()).or_default();
        if !members.contains(&socket) {
            members.push(socket);
        }
    }

    fn leave(&mut self, nsp: Nsp, room: &str, socket: SocketRef) {
        let Some(rooms) = self.rooms.get_mut(nsp.0 as usize) else {
            return;
        };
        if let Some(members) = rooms.get_mut(room) {
            members.retain(|m| *m != socket);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    fn members(&self, nsp: Nsp, room: &str) -> &[SocketRef] {
        self.rooms
            .get(nsp.0 as usize)
            .and_then(|r| r.get(room))
            .map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_in_joining_order_and_empty_rooms_go() {
        let mut a = LocalAdapter::default();
        let (x, y) = (SocketRef::for_test(1), SocketRef::for_test(2));
        a.join(Nsp::MAIN, "r", x);
        a.join(Nsp::MAIN, "r", y);
        a.join(Nsp::MAIN, "r", x);
        assert_eq!(a.members(Nsp::MAIN, "r"), [x, y]);
        assert_eq!(a.members(Nsp(1), "r"), []);
        a.leave(Nsp::MAIN, "r", x);
        assert_eq!(a.members(Nsp::MAIN, "r"), [y]);
        a.leave(Nsp::MAIN, "r", y);
        assert!(a.rooms[0].is_empty());
    }
}
