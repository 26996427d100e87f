//! Codec micro-benchmarks: the pure decoders and encoders every packet goes through (HTTP request
//! parse, Engine.IO packets and polling payloads, Socket.IO packets with and without binary), and
//! the timer wheel at 10k–100k entries — to see what a message costs before any syscall.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pairchat::config::CorsOrigins;
use pairchat::engine::packet::{decode_payload, decode_text};
use pairchat::engine::{Outgoing, Sid};
use pairchat::http::request::{Parsed, parse, query_param};
use pairchat::http::{Cors, Response};
use pairchat::sio::PacketType;
use pairchat::sio::packet::{check_placeholders, decode, encode, split_event};
use pairchat::timer::TimerWheel;

const SEND: &str =
    r#"42["sendMessage",{"code":"483920","text":"hello there, how are you today?"}]"#;
const POLL_GET: &[u8] =
    b"GET /socket.io/?EIO=4&transport=polling&t=PbE0z2x&sid=Yt3Gd6b8d6aJd4ESAAAB HTTP/1.1\r\n\
Host: localhost:3000\r\nUser-Agent: node\r\nAccept: */*\r\nOrigin: http://localhost:5173\r\n\
Connection: keep-alive\r\n\r\n";

fn http(c: &mut Criterion) {
    c.bench_function("http/parse_poll_get", |b| {
        b.iter(|| match parse(black_box(POLL_GET), 1_000_000) {
            Ok(Parsed::Complete(r, n)) => black_box((r.query_param("sid"), n)),
            _ => unreachable!("the request is complete"),
        })
    });
    // What a polling request's handling asks of its query: the relay check's sid, then the
    // transport, the protocol and the sid again.
    let query = "EIO=4&transport=polling&t=PbE0z2x&sid=Yt3Gd6b8d6aJd4ESAAAB";
    c.bench_function("http/query_params_poll", |b| {
        b.iter(|| {
            let q = black_box(query);
            black_box((
                query_param(q, "sid").and_then(Sid::parse),
                query_param(q, "transport"),
                query_param(q, "EIO"),
                query_param(q, "sid").and_then(Sid::parse),
            ))
        })
    });
    // A poll's answer: eight messages for a browser on another origin.
    let origins = CorsOrigins::List(vec!["http://localhost:5173".into()]);
    let body = [SEND; 8].join("\x1e");
    let exchange = match parse(POLL_GET, 1_000_000) {
        Ok(Parsed::Complete(r, _)) => r.exchange(),
        _ => unreachable!("the request is complete"),
    };
    let mut out = Vec::new();
    c.bench_function("http/write_poll_answer", |b| {
        b.iter(|| {
            out.clear();
            let cors = Cors::new(&origins, Some("http://localhost:5173"));
            Response::new(200, "text/plain; charset=UTF-8", black_box(body.as_bytes()))
                .cors(cors)
                .write_to(&mut out, exchange);
            black_box(out.len())
        })
    });
}

fn engine(c: &mut Criterion) {
    c.bench_function("engine/decode_text", |b| {
        b.iter(|| black_box(decode_text(black_box(SEND))))
    });
    let payload = [SEND; 8].join("\x1e");
    c.bench_function("engine/decode_payload_8", |b| {
        b.iter(|| {
            decode_payload(black_box(payload.as_bytes())).map(|p| p.filter(Result::is_ok).count())
        })
    });
    let binary = format!("{SEND}\x1eb{}", "AQIDBAUGBwgJCg==".repeat(16));
    c.bench_function("engine/decode_payload_binary", |b| {
        b.iter(|| {
            decode_payload(black_box(binary.as_bytes())).map(|p| p.filter(Result::is_ok).count())
        })
    });
    let packets: Vec<Outgoing> = (0..8).map(|_| Outgoing::message_str(&SEND[1..])).collect();
    c.bench_function("engine/encode_payload_8", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(1024),
            |out| {
                // `append_to_payload` writes the separator before every packet but the first.
                for p in &packets {
                    p.append_to_payload(out);
                }
            },
            BatchSize::SmallInput,
        )
    });
}

fn sio(c: &mut Criterion) {
    let text = &SEND[1..];
    c.bench_function("sio/decode_event", |b| {
        b.iter(|| {
            let p = decode(black_box(text)).expect("valid");
            black_box(split_event(p.data.unwrap_or("")).map(|(n, a)| (n.len(), a.len())))
        })
    });
    let binary = r#"51-["message",{"_placeholder":true,"num":0},"text"]"#;
    c.bench_function("sio/decode_binary_event", |b| {
        b.iter(|| {
            let p = decode(black_box(binary)).expect("valid");
            check_placeholders(p.data.unwrap_or(""), p.attachments).expect("valid");
            black_box(split_event(p.data.unwrap_or("")).map(|(n, a)| (n.len(), a.len())))
        })
    });
    let data = r#"["newMessage",{"sender":"Yt3Gd6b8d6aJd4ESAAAB","text":"hello there","timestamp":1732406400000}]"#;
    c.bench_function("sio/encode_event", |b| {
        b.iter_batched_ref(
            || String::with_capacity(256),
            |out| encode(out, PacketType::Event, "/", 0, None, Some(black_box(data))),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("sio/encode_binary_ack", |b| {
        b.iter_batched_ref(
            || String::with_capacity(256),
            |out| {
                encode(
                    out,
                    PacketType::BinaryAck,
                    "/custom",
                    1,
                    Some(17),
                    Some(r#"[{"_placeholder":true,"num":0}]"#),
                )
            },
            BatchSize::SmallInput,
        )
    });
}

fn timer(c: &mut Criterion) {
    for n in [10_000u64, 100_000] {
        // A wheel holding `n` entries spread over 30 s, as heartbeats of n sessions would be.
        let filled = move || {
            let mut w = TimerWheel::new(0);
            for i in 0..n {
                w.insert(1 + (i * 7919) % 30_000, i);
            }
            w
        };
        c.bench_function(&format!("timer/insert_cancel_{n}"), |b| {
            b.iter_batched_ref(
                filled,
                |w| {
                    let id = w.insert(black_box(12_345), 0);
                    black_box(w.cancel(id))
                },
                BatchSize::LargeInput,
            )
        });
        c.bench_function(&format!("timer/advance_1s_{n}"), |b| {
            b.iter_batched_ref(
                filled,
                |w| {
                    let mut due = Vec::new();
                    w.poll_to(1000, &mut due);
                    black_box(due.into_iter().filter_map(|id| w.fire(id)).count())
                },
                BatchSize::LargeInput,
            )
        });
    }
}

criterion_group!(benches, http, engine, sio, timer);
criterion_main!(benches);
