//! Chat round trips through loopback against the server running in-process: P room pairs over
//! WebSocket; per iteration one member of every pair sends `sendMessage` and the iteration ends
//! when that member has its ack and its own `newMessage` and the partner has the `newMessage`.
//! Throughput is messages (round trips) per second, for P = 1, 100, 1000.

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use support::{ChatServer, connect_ws, text};
use tungstenite::{Message, WebSocket};

struct Pair {
    code: String,
    a: WebSocket<TcpStream>,
    b: WebSocket<TcpStream>,
    ack: u64,
}

fn pair(server: &ChatServer) -> Pair {
    let (mut a, _) = connect_ws(server.addr);
    let (mut b, _) = connect_ws(server.addr);
    a.send(Message::text("420[\"createRoom\",{}]")).unwrap();
    let created = text(&mut a);
    let code = created
        .split("\"code\":\"")
        .nth(1)
        .and_then(|s| s.get(..6))
        .unwrap_or_else(|| panic!("createRoom answer: {created}"))
        .to_string();
    b.send(Message::text(format!(
        "420[\"joinRoom\",{{\"code\":\"{code}\"}}]"
    )))
    .unwrap();
    assert!(text(&mut b).starts_with("430[{\"success\":true"));
    assert!(text(&mut a).starts_with("42[\"userJoined\""));
    Pair { code, a, b, ack: 1 }
}

/// One round for every pair: all sends first, then all reads.
fn round(pairs: &mut [Pair]) {
    for p in pairs.iter_mut() {
        let packet = format!(
            "42{}[\"sendMessage\",{{\"code\":\"{}\",\"text\":\"hello there, how are you?\"}}]",
            p.ack, p.code
        );
        p.ack += 1;
        p.a.send(Message::text(packet)).unwrap();
    }
    for p in pairs.iter_mut() {
        // The sender gets its ack and its own newMessage (in either order), the partner one.
        let (x, y) = (text(&mut p.a), text(&mut p.a));
        assert!(
            x.starts_with("43") || y.starts_with("43"),
            "no ack: {x} {y}"
        );
        assert!(text(&mut p.b).starts_with("42[\"newMessage\""));
    }
}

fn chat(c: &mut Criterion) {
    let server = ChatServer::start();
    let mut group = c.benchmark_group("chat");
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(20);
    for n in [1usize, 100, 1000] {
        let mut pairs: Vec<Pair> = (0..n).map(|_| pair(&server)).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("round_trip_{n}_pairs"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    round(&mut pairs);
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, chat);
criterion_main!(benches);
