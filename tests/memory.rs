//! The memory budget (`--max-memory`) over real sockets: history keeps to its share by dropping
//! the oldest messages across rooms, the process's resident set stays within the budget plus
//! a fixed overhead, and output near its share refuses new work with `Server busy` until it
//! drains.

mod common;

use std::net::SocketAddr;

use common::chat::*;
use common::process::{Proc, rss_bytes};
use pairchat::Config;
use pairchat::chat::ChatConfig;

/// What the process holds whatever its clients do: the binary, the allocator's own, the
/// loop's buffers and a few dozen test connections (≈ 2 MB measured idle). The bound the
/// README states.
const FIXED_OVERHEAD: usize = 8 << 20;

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
    assert!(metric(&metrics, "pairchat_history_trimmed_total") > 500);
    // The oldest went first, across rooms: the first rooms lost everything, the last kept
    // all its own cap allows (an eighth of the budget: 512 KiB, 128 of these messages).
    let kept = |pair: &mut Pair| {
        let code = pair.code.clone();
        pair.b.join(&code)["messages"].as_array().unwrap().len()
    };
    assert_eq!(kept(&mut rooms[0]), 0);
    assert_eq!(kept(&mut rooms[15]), 128);
    let rss = rss_bytes(server.pid());
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

/// A member that never reads: its frames pile up in the server's output. Past three quarters of
/// the output share it is cut as a slow consumer (the largest holder first), while its
/// partner, who reads, chats on and is never refused.
#[test]
fn past_its_share_output_costs_the_client_that_does_not_read() {
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
    sender.event("userJoined");
    let text = "x".repeat(60_000);
    // The kernel's buffers fill first (128 KiB a side), then the server's.
    let mut cut_after = None;
    for n in 0..40 {
        assert_success(&sender.say(&code, &text));
        sender.events.retain(|(name, _)| name != "newMessage");
        if !sender.events.is_empty() {
            cut_after = Some(n);
            break;
        }
    }
    let n = cut_after.expect("the sleeper was never cut");
    assert!(n > 2, "cut after {n} messages");
    assert_eq!(sender.event("userLeft")["userId"], sleeper.id.as_str());
    let metrics = scrape(&server);
    assert_eq!(metric(&metrics, &rejected("slow_consumer")), 1);
    assert!(metric(&metrics, "pairchat_output_bytes") < 64 * 1024);
    assert_eq!(metric(&metrics, &limited("max_memory")), 0);
    assert_success(&sender.say(&code, "still here"));
}
