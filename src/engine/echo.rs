//! A plain Engine.IO echo application: every message goes back as it came (text as text,
//! binary as binary). Used by the Engine.IO conformance example and the engine tests.

use super::{Event, Handler, Io, Outgoing};

/// Echoes every message to the session that sent it.
#[derive(Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    type Timer = ();

    fn handle(&mut self, event: Event<'_, ()>, io: &mut Io<'_, ()>) {
        match event {
            Event::Message { session, text } => io.send(session, Outgoing::message_str(text)),
            Event::Binary { session, data } => io.send(session, Outgoing::binary(data.to_vec())),
            Event::Open { .. }
            | Event::Close { .. }
            | Event::Pong { .. }
            | Event::Timer(())
            | Event::Start { .. }
            | Event::TurnEnd
            | Event::Socket { .. } => {}
        }
    }
}
