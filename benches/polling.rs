//! The long-polling path against the chat server running in-process, as socket.io-client uses
//! it with `transports: ['polling']` (or before its upgrade): one POST of a chat message and the
//! GETs that bring it back, and a parked GET woken by a message from the partner.
//!
//! - `post_message`: a pair on polling; per iteration one member POSTs `sendMessage`, then GETs
//!   its ack and its own `newMessage`, and the partner GETs the `newMessage`.
//! - `long_poll_wake`: a polling member holds a parked GET; per iteration its partner (on
//!   WebSocket) sends a message, the parked GET is answered with the `newMessage`, the partner
//!   reads its ack and its own copy, and the member parks its next GET.

mod support;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use support::{ChatServer, Polling, connect_ws, text};
use tungstenite::Message;

/// A room member `a` made (on polling): its code.
fn create_room(a: &mut Polling) -> String {
    a.post("420[\"createRoom\",{}]");
    let created = a.get();
    created
        .split("\"code\":\"")
        .nth(1)
        .and_then(|s| s.get(..6))
        .unwrap_or_else(|| panic!("createRoom answer: {created}"))
        .to_string()
}

/// The code of a room `a` made and `b` joined (both on polling).
fn polling_room(a: &mut Polling, b: &mut Polling) -> String {
    let code = create_room(a);
    b.post(&format!("420[\"joinRoom\",{{\"code\":\"{code}\"}}]"));
    assert!(b.get().starts_with("430[{\"success\":true"));
    assert!(a.get().starts_with("42[\"userJoined\""));
    code
}

fn message(ack: u64, code: &str) -> String {
    format!(
        "42{ack}[\"sendMessage\",{{\"code\":\"{code}\",\"text\":\"hello there, how are you?\"}}]"
    )
}

fn polling(c: &mut Criterion) {
    let server = ChatServer::start();
    let mut group = c.benchmark_group("polling");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));

    let (mut a, mut b) = (Polling::connect(server.addr), Polling::connect(server.addr));
    let code = polling_room(&mut a, &mut b);
    let mut ack = 1;
    group.bench_function("post_message", |bench| {
        bench.iter(|| {
            a.post(&message(ack, &code));
            ack += 1;
            // The ack and the sender's own newMessage, in one payload.
            let mine = a.get();
            assert!(mine.contains("\x1e"), "ack and newMessage: {mine}");
            assert!(b.get().starts_with("42[\"newMessage\""));
        })
    });

    // A member on polling, its partner on WebSocket.
    let mut member = Polling::connect(server.addr);
    let (mut partner, _) = connect_ws(server.addr);
    let code = create_room(&mut member);
    partner
        .send(Message::text(format!(
            "420[\"joinRoom\",{{\"code\":\"{code}\"}}]"
        )))
        .unwrap();
    assert!(text(&mut partner).starts_with("430[{\"success\":true"));
    assert!(member.get().starts_with("42[\"userJoined\""));
    member.park();
    let mut ack = 1;
    group.bench_function("long_poll_wake", |bench| {
        bench.iter(|| {
            partner.send(Message::text(message(ack, &code))).unwrap();
            ack += 1;
            assert!(member.woken().starts_with("42[\"newMessage\""));
            member.park();
            let (x, y) = (text(&mut partner), text(&mut partner));
            assert!(
                x.starts_with("43") || y.starts_with("43"),
                "no ack: {x} {y}"
            );
        })
    });
    group.finish();
}

criterion_group!(benches, polling);
criterion_main!(benches);
