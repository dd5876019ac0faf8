//! The `midge` command: flags, config, logging, then hand over to the server.

use std::process::ExitCode;

use log::{error, info, warn};

use midge::cli::{self, Command};
use midge::config::LogDest;

/// The system allocator, counted when `memory_limit` is set (src/alloc.rs).
#[global_allocator]
static ALLOCATOR: midge::alloc::Counting = midge::alloc::Counting;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("passwd") {
        // `midge passwd ...`: the mosquitto_passwd equivalent.
        return ExitCode::from(midge::auth::passwd_tool::run(&args[1..]) as u8);
    }
    let opts = match cli::parse_args(&args) {
        Ok(Command::Run(o)) => o,
        Ok(Command::Help(h)) => {
            print!("{h}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version(v)) => {
            println!("{v}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("midge: {e}\nTry `midge -h` for the flags.");
            return ExitCode::FAILURE;
        }
    };
    let (mut config, mut notices) = match cli::build_config(&opts) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("Error: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    if opts.test_config {
        // Everything start-up would load or bind, all problems in one run.
        let problems = midge::server::check::check(&config);
        if problems.is_empty() {
            println!("config OK: {} listener(s)", config.listeners.len());
            return ExitCode::SUCCESS;
        }
        for p in &problems {
            eprintln!("Error: {p}");
        }
        return ExitCode::FAILURE;
    }
    if opts.daemon {
        // Detached, stdout and stderr are /dev/null: log to syslog instead
        // unless the file names a destination that survives.
        let survives = config
            .log_dests
            .iter()
            .any(|d| !matches!(d, LogDest::Stdout | LogDest::Stderr));
        if !survives {
            config.log_dests = vec![LogDest::Syslog];
            notices.push("Running as a daemon: logging to syslog.".to_string());
        }
        // Fail here, where the user still sees it, rather than after detaching.
        let problems = midge::server::check::check(&config);
        if !problems.is_empty() {
            for p in &problems {
                eprintln!("Error: {p}");
            }
            return ExitCode::FAILURE;
        }
    }
    let sink = match midge::logging::open(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if opts.daemon {
        if let Err(e) = midge::sys::daemonize() {
            eprintln!("Error: unable to daemonise: {e}.");
            return ExitCode::FAILURE;
        }
    }
    // After the fork: the log writer is a thread, and threads do not survive it.
    midge::logging::init(opts.verbose, &config, sink);
    info!(target: midge::logging::NOTICE, "{} starting", cli::version());
    if let Some(f) = &opts.config_file {
        info!(target: midge::logging::NOTICE, "Config loaded from {}.", f.display());
    } else {
        info!("Using default config.");
    }
    for n in &notices {
        info!("{n}");
    }
    if let Some(p) = &config.pid_file {
        if let Err(e) = midge::sys::write_pid_file(p) {
            error!("Error: unable to write pid file {}: {e}.", p.display());
            midge::logging::flush();
            return ExitCode::FAILURE;
        }
    }
    match midge::sys::raise_fd_limit() {
        Ok(n) => info!(
            "Open file limit {n}: up to about {} clients.",
            n.saturating_sub(16)
        ),
        Err(e) => warn!("Unable to raise the open file limit: {e}."),
    }
    let pid_file = config.pid_file.clone();
    let result = midge::server::run(config);
    let code = match result {
        Ok(()) => {
            info!(target: midge::logging::NOTICE, "{} terminating", cli::version());
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("Error: {e}.");
            ExitCode::FAILURE
        }
    };
    midge::logging::flush();
    // Last: a supervisor that sees the pid file gone may rely on the log
    // being complete.
    if let Some(p) = pid_file {
        let _ = std::fs::remove_file(p);
    }
    code
}
