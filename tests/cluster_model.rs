//! A model test of cluster mode: two in-process nodes on one real `redis-server`, eight
//! clients (four per node) sending random requests in concurrent batches, so that Redis
//! interleaves the two nodes' scripts in ever different orders. After every batch, what Redis
//! holds must match what the clients were told (each client is in the room its acks say, and
//! holds that room's seat; no room has more than two); at the end, every message stream must
//! be consistent: each acknowledged message reached its sender exactly once, no refused
//! message reached anyone, nothing arrived twice, and any two members saw the messages they
//! both got in the same order.
//!
//! The seed is printed; `PAIRCHAT_MODEL_SEED=<n>` replays a run's requests (the interleaving
//! in Redis still varies with timing). Without `redis-server` the test prints a loud SKIPPED
//! line and passes, unless `CI` is set.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use pairchat::chat::ChatConfig;
use pairchat::cluster::link::RedisConfig;
use pairchat::cluster::{ClusterChat, ClusterConfig};
use pairchat::sio::{SioConfig, SocketIo};
use pairchat::{Config, chat};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;

use common::TestServer;
use common::chat::Client;
use common::redis::{Redis, redis_cli};

const SUITE: &str = "the cluster model test (tests/cluster_model.rs)";
const CLIENTS_PER_NODE: usize = 4;
const BATCHES: usize = 40;
/// How long Redis may take to reflect a batch's fire-and-forget scripts (a leave is answered
/// before its script runs).
const SETTLE: Duration = Duration::from_secs(3);

/// A node in this process, with its id (the prefix of its sids).
fn node(redis: &Redis) -> TestServer {
    let chat_config = ChatConfig {
        join_failures: None,
        message_rate: None,
        ..ChatConfig::default()
    };
    let cluster = ClusterConfig {
        redis: RedisConfig::parse(&redis.url()).expect("a redis URL"),
        advertise: String::new(),
        recovery: Default::default(),
    };
    let app = ClusterChat::new(chat_config, cluster);
    let config = Config {
        sid_prefix: app.node().to_string(),
        ..Config::default()
    };
    let sio = SioConfig::default();
    TestServer::start(config, move |c| SocketIo::new(app, sio, c.max_payload))
}

/// A request written: its ack id, event, code and text.
type Asked = (u32, &'static str, Option<String>, Option<String>);

/// What a client was told.
#[derive(Default)]
struct Belief {
    /// The room its last successful createRoom or joinRoom put it in (none after leaveRoom).
    room: Option<String>,
    /// Texts of its messages acknowledged with success, and of those refused.
    sent: Vec<String>,
    refused: Vec<String>,
}

#[test]
fn redis_agrees_with_what_clients_were_told_whatever_the_interleaving() {
    let Some(redis) = Redis::start(SUITE) else {
        return;
    };
    let seed = std::env::var("PAIRCHAT_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("cluster model: seed {seed} (PAIRCHAT_MODEL_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let nodes = [node(&redis), node(&redis)];
    wait_up(&nodes);
    let mut clients: Vec<Client> = (0..2 * CLIENTS_PER_NODE)
        .map(|i| Client::connect(nodes[i % 2].addr, None))
        .collect();
    let mut beliefs: Vec<Belief> = (0..clients.len()).map(|_| Belief::default()).collect();
    let mut codes: Vec<String> = vec!["100000".into()];
    let mut next_text = 0u64;
    // (client, text): deliveries that must have happened (see `stable` below).
    let mut expected: Vec<(usize, String)> = Vec::new();

    for batch in 0..BATCHES {
        let before: Vec<Option<String>> = beliefs.iter().map(|b| b.room.clone()).collect();
        // Every client queues one to three requests, all written before any answer is read.
        let mut asked: Vec<Vec<Asked>> = Vec::new();
        for (i, client) in clients.iter_mut().enumerate() {
            let mut mine = Vec::new();
            // Half the clients only chat this batch (so pairs stay together long enough to
            // check deliveries); the others mix every request.
            let chat_only = rng.random_range(0..2) == 0;
            for _ in 0..rng.random_range(1..=3) {
                let current = beliefs[i].room.clone();
                let pick = if chat_only {
                    5
                } else {
                    rng.random_range(0..10)
                };
                let (event, code, text) = match pick {
                    0 | 1 => ("createRoom", None, None),
                    2..=4 => {
                        // Mostly a room someone is in (pairs form), else any code seen.
                        let live: Vec<&String> =
                            beliefs.iter().filter_map(|b| b.room.as_ref()).collect();
                        let code = if !live.is_empty() && rng.random_range(0..4) > 0 {
                            live[rng.random_range(0..live.len())].clone()
                        } else {
                            codes[rng.random_range(0..codes.len())].clone()
                        };
                        ("joinRoom", Some(code), None)
                    }
                    5..=8 => {
                        next_text += 1;
                        let code = current.clone().unwrap_or_else(|| "100000".into());
                        ("sendMessage", Some(code), Some(format!("m{next_text}")))
                    }
                    _ => ("leaveRoom", current.clone(), None),
                };
                let mut arg = json!({});
                if let Some(code) = &code {
                    arg["code"] = json!(code);
                }
                if let Some(text) = &text {
                    arg["text"] = json!(text);
                }
                let id = client.queue(event, arg);
                mine.push((id, event, code, text));
            }
            asked.push(mine);
        }
        for client in &mut clients {
            client.flush();
        }
        // A socket's requests are answered in the order it sent them: the last success wins.
        for (i, client) in clients.iter_mut().enumerate() {
            for (id, event, code, text) in &asked[i] {
                let answer = client.ack(*id);
                let ok = answer.get("error").is_none();
                let belief = &mut beliefs[i];
                match *event {
                    "createRoom" if ok => {
                        let code = answer["code"].as_str().expect("a code").to_string();
                        codes.push(code.clone());
                        belief.room = Some(code);
                    }
                    "joinRoom" if ok => belief.room.clone_from(code),
                    "leaveRoom" if ok => belief.room = None,
                    "sendMessage" if ok => belief.sent.push(text.clone().expect("a text")),
                    "sendMessage" => belief.refused.push(text.clone().expect("a text")),
                    _ => {}
                }
                assert!(
                    ok || answer["error"].is_string(),
                    "batch {batch}: {event} answered {answer}"
                );
            }
        }
        // A member that stayed in its room through the batch (no createRoom, joinRoom or
        // leaveRoom of its own) gets every message acknowledged in that room by another such.
        let stable: Vec<Option<&String>> = (0..clients.len())
            .map(|i| {
                let moved = asked[i].iter().any(|(_, e, _, _)| *e != "sendMessage");
                let room = beliefs[i].room.as_ref();
                (!moved && room == before[i].as_ref())
                    .then_some(room)
                    .flatten()
            })
            .collect();
        for (i, mine) in asked.iter().enumerate() {
            let Some(room) = stable[i] else { continue };
            for (_, event, _, text) in mine {
                let text = text.clone().unwrap_or_default();
                if *event != "sendMessage" || !beliefs[i].sent.contains(&text) {
                    continue;
                }
                for (j, other) in stable.iter().enumerate() {
                    if j != i && *other == Some(room) {
                        expected.push((j, text.clone()));
                    }
                }
            }
        }
        let ids: Vec<String> = clients.iter().map(|c| c.id.clone()).collect();
        settle(&redis, &ids, &beliefs, batch);
    }

    // Every message stream, once nothing more arrives.
    let streams: Vec<Vec<String>> = clients
        .iter_mut()
        .map(|c| {
            // `events_until_quiet` takes the events filed while acks were read too.
            c.events_until_quiet(Duration::from_millis(500))
                .into_iter()
                .filter(|(name, _)| name == "newMessage")
                .map(|(_, m)| m["text"].as_str().expect("a text").to_string())
                .collect()
        })
        .collect();
    let refused: HashSet<&String> = beliefs.iter().flat_map(|b| &b.refused).collect();
    let mut delivered = 0;
    for (i, stream) in streams.iter().enumerate() {
        let mut seen = HashSet::new();
        for text in stream {
            assert!(seen.insert(text), "client {i} got {text} twice: {stream:?}");
            assert!(
                !refused.contains(text),
                "client {i} got {text}, which was refused to its sender"
            );
        }
        for text in &beliefs[i].sent {
            assert!(
                seen.contains(text),
                "client {i} never got its own acknowledged {text}"
            );
        }
        delivered += stream.len();
    }
    for (j, text) in &expected {
        assert!(
            streams[*j].contains(text),
            "client {j} never got {text}, sent in its room while it stayed there"
        );
    }
    for (a, sa) in streams.iter().enumerate() {
        for (b, sb) in streams.iter().enumerate().skip(a + 1) {
            let in_b: HashSet<&String> = sb.iter().collect();
            let common_a: Vec<&String> = sa.iter().filter(|t| in_b.contains(t)).collect();
            let in_a: HashSet<&String> = sa.iter().collect();
            let common_b: Vec<&String> = sb.iter().filter(|t| in_a.contains(t)).collect();
            assert_eq!(
                common_a, common_b,
                "clients {a} and {b} saw their common messages in different orders"
            );
        }
    }
    let sent: usize = beliefs.iter().map(|b| b.sent.len()).sum();
    eprintln!(
        "cluster model: {BATCHES} batches, {sent} messages acknowledged, {} refused, {delivered} deliveries, {} to partners checked",
        refused.len(),
        expected.len()
    );
    assert!(
        sent > 0 && !expected.is_empty(),
        "no message between partners was ever acknowledged: the model tested nothing"
    );
}

/// Both nodes' links are up.
fn wait_up(nodes: &[TestServer]) {
    for n in nodes {
        common::redis::wait_redis_state(&n.addr.to_string(), "up", Duration::from_secs(10))
            .expect("the node's link to Redis");
    }
}

/// Waits until Redis's seats are exactly the clients' beliefs (fire-and-forget scripts may
/// still be running); fails with both if they do not agree within `SETTLE`.
fn settle(redis: &Redis, ids: &[String], beliefs: &[Belief], batch: usize) {
    let want: HashMap<&str, &str> = ids
        .iter()
        .zip(beliefs)
        .filter_map(|(id, b)| Some((id.as_str(), b.room.as_deref()?)))
        .collect();
    let started = Instant::now();
    loop {
        let held = seats(redis);
        let got: HashMap<&str, &str> = held
            .iter()
            .map(|(sid, code)| (sid.as_str(), code.as_str()))
            .collect();
        let mut per_room: HashMap<&str, usize> = HashMap::new();
        for code in got.values() {
            *per_room.entry(code).or_default() += 1;
        }
        assert!(
            per_room.values().all(|n| *n <= chat::rooms::ROOM_CAPACITY),
            "batch {batch}: a room with more than two seats: {held:?}"
        );
        if got == want && held.len() == got.len() {
            return;
        }
        assert!(
            started.elapsed() < SETTLE,
            "batch {batch}: Redis's seats {got:?} are not what the clients were told {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every seat in Redis: (sid, code).
fn seats(redis: &Redis) -> Vec<(String, String)> {
    let url = redis.url();
    let keys = redis_cli(&url, &["KEYS", "pairchat:room:*"])
        .expect("KEYS")
        .strings();
    let mut out = Vec::new();
    for key in keys {
        let code = key.trim_start_matches("pairchat:room:").to_string();
        let seats = redis_cli(&url, &["HMGET", &key, "s1", "s2"])
            .expect("HMGET")
            .strings();
        for seat in seats.iter().filter(|s| !s.is_empty()) {
            let sid = seat
                .split(' ')
                .nth(1)
                .expect("a seat: node sid")
                .to_string();
            out.push((sid, code.clone()));
        }
    }
    out
}
