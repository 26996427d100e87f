//! The TypeScript contract (`examples/typescript/pairchat.d.ts`) against the server it
//! describes, so neither can drift from the other:
//! - with no Node at all: every error text of `pairchat::chat::errors` is in the declarations
//!   and every text the declarations name is one of them; the events each side sends are the
//!   ones `src/chat/mod.rs` handles and emits;
//! - with Node (`tsc` from `tests/e2e`'s packages): the sample client type-checks under
//!   `strict`, and `misuse.ts` fails with exactly the errors it marks, so the types do reject
//!   what they are meant to.
//!
//! Without `node` and `npm` on `PATH` the `tsc` tests print a loud SKIPPED line and pass,
//! unless `CI` is set: then they fail.

// The harness needs `common` beside it (for its tools); this suite does not.
mod common;
// Only the install and the child runner are used here, not the `node --test` parts.
#[allow(dead_code)]
#[path = "e2e/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pairchat::chat::errors;

const SUITE: &str = "the TypeScript typings check (tsc on examples/typescript)";
/// How long one `tsc` run may take (it normally needs a few seconds).
const TSC_TIMEOUT: Duration = Duration::from_secs(120);
/// The declarations, the sample client and its tsconfig, from the repository's root.
const EXAMPLE_DIR: &str = "examples/typescript";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    let path = root().join(path);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---- the declarations against the source (no Node) ------------------------------------------

#[test]
fn error_texts_and_event_names_match_the_server() {
    let dts = strip_comments(&read(&format!("{EXAMPLE_DIR}/pairchat.d.ts")));
    let chat = strip_comments(&read("src/chat/mod.rs"));

    // The error texts: the `errors` module as written (so a new constant is seen too)...
    let start = chat
        .find("pub mod errors {")
        .expect("src/chat/mod.rs has `pub mod errors`");
    let block = &chat[start..start + chat[start..].find("\n}").expect("end of `mod errors`")];
    let server: BTreeSet<String> = literals(block).into_iter().map(|(s, _)| s).collect();
    // ...which this reads right: the constants the crate exports are among them.
    for known in [
        errors::ROOM_NOT_FOUND,
        errors::ROOM_FULL,
        errors::INVALID_CODE,
        errors::NOT_MEMBER,
        errors::TEXT_REQUIRED,
        errors::TEXT_EMPTY,
        errors::TEXT_TOO_LONG,
        errors::SERVER_BUSY,
        errors::UNKNOWN_EVENT,
        errors::TOO_MANY_ATTEMPTS,
        errors::RATE_LIMITED,
    ] {
        assert!(
            server.contains(known),
            "{known:?} not read from `mod errors`"
        );
    }
    // Outside comments, the only string literals of the declarations are error texts.
    let declared: BTreeSet<String> = literals(&dts).into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        declared, server,
        "pairchat.d.ts's error texts (left) are not the server's (right)"
    );

    // The events: in mod.rs, every event name is a camelCase literal; the ones matched in
    // `on_event` (`"name" => …`) come in, the others go out.
    let (mut incoming, mut outgoing) = (BTreeSet::new(), BTreeSet::new());
    for (name, end) in literals(&chat) {
        if !is_camel_case(&name) {
            continue;
        }
        if chat[end..].trim_start().starts_with("=>") {
            incoming.insert(name);
        } else {
            outgoing.insert(name);
        }
    }
    assert!(incoming.contains("sendMessage") && outgoing.contains("newMessage"));
    assert_eq!(
        members(&dts, "ClientToServerEvents"),
        incoming,
        "ClientToServerEvents (left) against the events the chat handles (right)"
    );
    assert_eq!(
        members(&dts, "ServerToClientEvents"),
        outgoing,
        "ServerToClientEvents (left) against the events the chat emits (right)"
    );
}

/// `src` without its `//` and `/* */` comments (string and char literals kept whole).
fn strip_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1)) {
            (b'/', Some(b'/')) => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            (b'/', Some(b'*')) => {
                let end = src[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
                out.push(' ');
                i = end;
            }
            (b'"', _) => {
                let end = literal_end(b, i);
                out.push_str(&src[i..end]);
                i = end;
            }
            // A char literal (`'"'`, `'\n'`); a lifetime (`'a`) is copied as it is.
            (b'\'', Some(b'\\')) => {
                let end = i + 2 + src[i + 2..].find('\'').map_or(b.len(), |e| e + 1);
                out.push_str(&src[i..end.min(b.len())]);
                i = end;
            }
            (b'\'', Some(_)) if b.get(i + 2) == Some(&b'\'') => {
                out.push_str(&src[i..i + 3]);
                i += 3;
            }
            _ => {
                let len = src[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&src[i..i + len]);
                i += len;
            }
        }
    }
    out
}

/// Where the string literal opening at `b[start]` (a `"`) ends: just past its closing quote.
fn literal_end(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// Every `"…"` literal of comment-free `src` (escapes left as written), with where it ends.
fn literals(src: &str) -> Vec<(String, usize)> {
    let b = src.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1)) {
            (b'"', _) => {
                let end = literal_end(b, i);
                found.push((src[i + 1..end - 1].to_string(), end));
                i = end;
            }
            (b'\'', Some(b'\\')) => i += 2 + src[i + 2..].find('\'').map_or(b.len(), |e| e + 1),
            (b'\'', Some(_)) if b.get(i + 2) == Some(&b'\'') => i += 3,
            _ => i += 1,
        }
    }
    found
}

/// An identifier like `sendMessage`: ASCII letters, a lower-case first, an upper-case within.
fn is_camel_case(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_alphabetic())
        && s.chars().any(|c| c.is_ascii_uppercase())
}

/// The member names of `export interface <name> { … }` in comment-free `dts`.
fn members(dts: &str, name: &str) -> BTreeSet<String> {
    let head = format!("export interface {name} {{");
    let start = dts.find(&head).unwrap_or_else(|| panic!("no `{head}`")) + head.len();
    let (mut names, mut member, mut depth) = (BTreeSet::new(), String::new(), 0usize);
    for c in dts[start..].chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' => depth -= 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ';' if depth == 0 => {
                let (key, _) = member.split_once(':').expect("a member is `name: type`");
                names.insert(key.trim().to_string());
                member.clear();
                continue;
            }
            _ => {}
        }
        member.push(c);
    }
    assert!(member.trim().is_empty(), "unterminated member {member:?}");
    names
}

// ---- tsc (Node) ------------------------------------------------------------------------------

/// `tsc -p <project> --noEmit` from the repository's root with the suites' TypeScript, or
/// `None` after a skip banner when Node is missing.
fn tsc(project: &str) -> Option<harness::Run> {
    let (node, npm) = harness::node_and_npm(SUITE)?;
    let _installed = harness::install(&npm);
    let compiler = harness::suite_dir().join("node_modules/typescript/bin/tsc");
    let mut cmd = Command::new(node);
    cmd.arg(compiler)
        .args(["-p", project, "--noEmit", "--pretty", "false"])
        .current_dir(root())
        .env_remove("NODE_OPTIONS");
    let run = harness::run(cmd, TSC_TIMEOUT);
    eprintln!(
        "---- tsc -p {project} ({}) ----\n{}",
        run.describe(),
        run.output
    );
    Some(run)
}

#[test]
fn sample_client_type_checks() {
    let Some(run) = tsc(EXAMPLE_DIR) else {
        return;
    };
    assert!(
        run.exited_ok(),
        "tsc -p {EXAMPLE_DIR} failed ({}):\n{}",
        run.describe(),
        run.output
    );
}

/// Each misuse in misuse.ts carries its expected error on its line (`// TS2345: why`); tsc must
/// report exactly those, each at its line, and nothing else.
#[test]
fn misuse_fails_with_exactly_the_marked_errors() {
    let file = format!("{EXAMPLE_DIR}/misuse.ts");
    let expected: Vec<(usize, String)> = read(&file)
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let code = line.split("// TS").nth(1)?;
            let digits: String = code.chars().take_while(char::is_ascii_digit).collect();
            (!digits.is_empty()).then(|| (i + 1, format!("TS{digits}")))
        })
        .collect();
    assert!(
        expected.len() >= 3,
        "misuse.ts marks too few errors: {expected:?}"
    );

    let Some(run) = tsc(&format!("{EXAMPLE_DIR}/tsconfig.misuse.json")) else {
        return;
    };
    assert!(!run.exited_ok(), "tsc accepted misuse.ts:\n{}", run.output);
    // `examples/typescript/misuse.ts(12,28): error TS2345: Argument of type …`
    let mut reported = Vec::new();
    for line in run.output.lines().filter(|l| l.contains("): error TS")) {
        let at = line
            .strip_prefix(&format!("{file}("))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse::<usize>().ok());
        let code = line
            .split("): error ")
            .nth(1)
            .and_then(|r| r.split(':').next());
        match (at, code) {
            (Some(at), Some(code)) => reported.push((at, code.to_string())),
            _ => panic!("an error outside misuse.ts: {line}\n{}", run.output),
        }
    }
    assert_eq!(
        reported, expected,
        "tsc's errors (left) are not the ones misuse.ts marks (right):\n{}",
        run.output
    );
}
