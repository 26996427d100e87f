//! The `pairchat` binary: the command line (`pairchat::cli`) → the chat on the server; runs
//! until SIGINT/SIGTERM.
//!
//! Exit status (also in `--help` and README.md): 0 after a graceful stop; 2 when the command
//! line or environment is wrong as written (a bad value, an unknown flag, settings that
//! contradict each other: retrying cannot help); 1 when the server cannot start with what was
//! asked (an address in use or not on this machine, a host that does not resolve, a refused
//! permission, an I/O error) or its loop fails, or a second signal cuts the stop short. Every
//! error is one line naming the flag or variable at fault, and the address if there is one.

use std::process::ExitCode;

use pairchat::Server;
use pairchat::chat::Chat;
use pairchat::cli::{self, Command, Settings};
use pairchat::cluster::{ClusterChat, ClusterConfig};
use pairchat::log;
use pairchat::sio::{App, SocketIo};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut settings = match cli::parse(&args, |k| std::env::var(k).ok()) {
        Ok(Command::Run(s)) => s,
        Ok(Command::Help) => {
            print!("{}", cli::help());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("pairchat {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pairchat: {e}");
            return ExitCode::from(2);
        }
    };
    log::set_level(settings.log.level);
    log::set_json(settings.log.json);
    log::install_panic_hook();
    pairchat::sys::keep_large_allocations_apart();
    let chat = std::mem::take(&mut settings.chat);
    match settings.redis.take() {
        None => serve(*settings, Chat::new(chat)),
        Some(mut redis) => {
            redis.timeout = settings.redis_timeout;
            let advertise = settings.advertise.clone().unwrap_or_default();
            log::info("cluster mode", &[("redis", &redis.display())]);
            let recovery = settings.sio.recovery.clone();
            let cluster = ClusterConfig {
                redis,
                advertise,
                recovery,
            };
            let chat = ClusterChat::new(chat, cluster);
            settings.server.sid_prefix = chat.node().to_string();
            // A client back on another node claims its socket from the pid's node.
            settings.sio.pid_prefix = chat.node().to_string();
            // A shared port reaches any of the processes on it: relays need one of their own.
            settings.server.relay_listener = settings.server.reuse_port;
            serve(*settings, chat)
        }
    }
}

/// Runs the application on the server until stopped.
fn serve<A: App>(mut settings: Settings, chat: A) -> ExitCode {
    let app = SocketIo::new(
        chat,
        std::mem::take(&mut settings.sio),
        settings.server.max_payload,
    );
    let mut server = match Server::bind(settings.server.clone(), app) {
        Ok(s) => s,
        Err(e) => {
            // Whatever the log level: a server that does not start says why.
            let msg = match e.setting() {
                Some(setting) => format!("cannot start: {}: {e}", settings.named(setting)),
                None => format!("cannot start: {e}"),
            };
            log::always(&msg, &[]);
            return ExitCode::FAILURE;
        }
    };
    server.stop_on_signals();
    if let Some(addr) = server.metrics_addr() {
        log::info(&format!("metrics on {addr}"), &[]);
    }
    // The address ends the line: scripts and tests read it from there.
    log::info(
        &format!(
            "pairchat {} listening on {}",
            env!("CARGO_PKG_VERSION"),
            server.local_addr()
        ),
        &[],
    );
    log::info(
        "memory budget",
        &[(
            "max_memory",
            &pairchat::memory::show_size(settings.max_memory),
        )],
    );
    match server.run() {
        Ok(()) => {
            log::info("pairchat stopped", &[]);
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::always("event loop failed", &[("error", &e)]);
            ExitCode::FAILURE
        }
    }
}
