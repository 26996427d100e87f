//! Session establishment through loopback against the chat server running in-process on its own
//! thread: TCP connect, WebSocket upgrade, Engine.IO open and Socket.IO CONNECT answered — and
//! the same over long-polling (handshake GET, `40` POST, the GET that brings the CONNECT
//! answer). Its inverse is sessions per second for one client; `examples/loadgen.rs` measures
//! many in flight.

mod support;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use support::{ChatServer, connect_polling, connect_ws};

fn connect(c: &mut Criterion) {
    let server = ChatServer::start();
    let mut group = c.benchmark_group("connect");
    group.throughput(Throughput::Elements(1));
    group.bench_function("websocket", |b| {
        b.iter(|| {
            let (mut ws, sid) = connect_ws(server.addr);
            // Leave the way a closing tab does, so the server's table stays small.
            let _ = ws.close(None);
            sid
        })
    });
    group.bench_function("polling", |b| b.iter(|| connect_polling(server.addr)));
    group.finish();
}

criterion_group!(benches, connect);
criterion_main!(benches);
