//! The `pairchat` binary: the command line (`pairchat::cli`) → the chat on the server; runs
//! until SIGINT/SIGTERM. Exit status 2 for a bad flag or variable, 1 when the server cannot
//! start (the address is named) or its loop fails.

use std::process::ExitCode;

use pairchat::Server;
use pairchat::chat::Chat;
use pairchat::cli::{self, Command, Settings};
use pairchat::log;
use pairchat::sio::SocketIo;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = match cli::parse(&args, |k| std::env::var(k).ok()) {
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
    let Settings {
        server: config,
        chat,
        sio,
        log: log_settings,
    } = *settings;
    log::set_level(log_settings.level);
    log::set_json(log_settings.json);
    log::install_panic_hook();
    let app = SocketIo::new(Chat::new(chat), sio, config.max_payload);
    let mut server = match Server::bind(config.clone(), app) {
        Ok(s) => s,
        Err(e) => {
            let addr = format!("{}:{}", config.host, config.port);
            log::error("cannot listen", &[("addr", &addr), ("error", &e)]);
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
    match server.run() {
        Ok(()) => {
            log::info("pairchat stopped", &[]);
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error("event loop failed", &[("error", &e)]);
            ExitCode::FAILURE
        }
    }
}
