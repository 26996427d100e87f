//! The memory budget (`--max-memory`) over real sockets: history keeps to its share by dropping
//! the oldest messages across rooms, the process's resident set stays within the budget plus
//! a fixed overhead, and output near its share refuses new work with `Server busy` until it
//! drains.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;

use common::chat::*;
use common::process::Proc;
use pairchat::Config;
use pairchat::chat::{ChatConfig, errors};
use serde_json::json;

/// What the process holds whatever its clients do: the binary, the allocator's own, the
/// loop's buffers and a few dozen test connections (≈ 2 MB measured idle). The bound the
/// README states.
const FIXED_OVERHEAD: usize = 8 << 20;

fn scrape_addr(addr: SocketAddr) -> String {
    let mut s = tcp(addr);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn rss_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[test]
fn history_keeps_to_its_share_oldest_first_and_the_resident_set_stays_bounded() {
    let budget: usize = 4 << 20;
    let mut server = Proc::start(&[
        "--max-memory",
        "4MiB",
        "--message-rate",
        "0",
        "--recovery-window",
        "0",
    ]);
    let addr: SocketAddr = server.addr.parse().unwrap();
    // 16 rooms of 250 long messages each: 16 MB of history unbounded, four times the budget.
    let text = "é".repeat(2000);
    let mut rooms = Vec::new();
    for _ in 0..16 {
        let mut pair = Pair::join(addr);
        for _ in 0..250 {
            assert_success(&pair.a.say(&pair.code, &text));
            pair.a.events.clear();
            pair.b.message(&text);
        }
        rooms.push(pair);
    }
    let metrics = scrape_addr(addr);
    let history = metric(&metrics, "pairchat_history_bytes") as usize;
    let limit = metric(&metrics, "pairchat_history_limit_bytes") as usize;
    assert_eq!(limit, budget / 2);
    assert!(
        history <= limit && history > limit - 8 * 1024,
        "{history} of {limit}"
    );
    assert!(metric(&metrics, "pairchat_history_trimmed_total") > 3000);
    // The oldest went first, across rooms: the first rooms lost everything, the last kept
    // its own whole.
    let kept = |pair: &mut Pair| {
        let code = pair.code.clone();
        pair.b.join(&code)["messages"].as_array().unwrap().len()
    };
    assert_eq!(kept(&mut rooms[0]), 0);
    assert_eq!(kept(&mut rooms[15]), 250);
    let rss = rss_of(server.pid());
    assert!(
        rss < budget + FIXED_OVERHEAD,
        "resident {rss} B over the budget {budget} B plus {FIXED_OVERHEAD} B"
    );
    // Chat goes on in the oldest room; its new messages are kept again.
    let code = rooms[0].code.clone();
    assert_success(&rooms[0].a.say(&code, "still here"));
    assert_eq!(kept(&mut rooms[0]), 1);
    drop(rooms);
    server.stop_and_log();
}

/// A member that never reads: its frames pile up in the server's output. Before they pass
/// the output share, work that would add more is refused with `Server busy`; once the reader
/// is gone, the output drains and the chat goes on.
#[test]
fn output_near_its_share_refuses_new_work_until_it_drains() {
    let share = 1 << 20;
    let server = chat_server(
        Config {
            max_output_bytes: share,
            ..config()
        },
        ChatConfig {
            max_message_chars: 60_000,
            max_history: 0,
            ..chat_config()
        },
    );
    let mut sender = Client::connect(server.addr, None);
    let code = sender.create_room();
    let mut sleeper = Client::connect(server.addr, None);
    assert_success(&sleeper.join(&code));
    let text = "x".repeat(60_000);
    // The kernel's socket buffers fill first, then the server's: at most 200 messages (12 MB).
    let mut refused = None;
    for n in 0..200 {
        let res = sender.say(&code, &text);
        if res.get("error").is_some() {
            refused = Some((n, res));
            break;
        }
        sender.message(&text);
    }
    let (sent, res) = refused.expect("output was never refused");
    assert_eq!(error_of(&res), errors::SERVER_BUSY, "after {sent} messages");
    let metrics = scrape(&server);
    let held = metric(&metrics, "pairchat_output_bytes") as usize;
    assert!(held > share / 4 * 3 && held <= share, "{held} B held");
    assert_eq!(
        metric(&metrics, "pairchat_output_limit_bytes") as usize,
        share
    );
    assert!(metric(&metrics, &limited("max_memory")) >= 1);
    // Every request that adds output waits too.
    let mut other = Client::connect(server.addr, None);
    assert_eq!(
        error_of(&other.call("createRoom", json!({}))),
        errors::SERVER_BUSY
    );
    assert_eq!(error_of(&other.join(&code)), errors::SERVER_BUSY);
    // The sleeper goes: its output with it, and the chat goes on.
    drop(sleeper);
    wait_metric(&server, "pairchat_output_bytes", |n| n < 64 * 1024);
    assert_success(&sender.say(&code, "back to normal"));
    other.create_room();
}
