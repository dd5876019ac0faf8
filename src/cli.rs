//! The command line, mosquitto-style: which flags exist, what they mean, and how
//! they combine with the config file into one [`Config`].

use std::path::PathBuf;

use crate::config::{Config, ConfigError, ListenerConfig};

/// What the flags ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `-c FILE`.
    pub config_file: Option<PathBuf>,
    /// `-p PORT`, repeatable.
    pub ports: Vec<u16>,
    /// `-v`.
    pub verbose: bool,
    /// `-d`.
    pub daemon: bool,
    /// `--test-config`.
    pub test_config: bool,
    /// `--recover`: start past a corrupt persistence record.
    pub recover: bool,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the broker.
    Run(Options),
    /// Print this usage text and exit 0.
    Help(String),
    /// Print this version line and exit 0.
    Version(String),
}

/// The version line for `--version` and the start-up log.
pub fn version() -> String {
    format!("midge version {}", env!("CARGO_PKG_VERSION"))
}

fn spec() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optopt(
        "c",
        "config-file",
        "read the configuration from FILE",
        "FILE",
    );
    o.optmulti(
        "p",
        "port",
        "listen on 127.0.0.1:PORT (repeatable); ignored when the config file \
         defines listeners, as in mosquitto",
        "PORT",
    );
    o.optflag("v", "verbose", "debug logging (RUST_LOG overrides)");
    o.optflag("d", "daemon", "run in the background");
    o.optflag(
        "",
        "test-config",
        "check the configuration and exit (0 valid, 1 not)",
    );
    o.optflag(
        "",
        "recover",
        "start even if the persistence log has a corrupt record, keeping what precedes it",
    );
    o.optflag("h", "help", "print this help");
    o.optflag("", "version", "print the version");
    o
}

/// Parse `args` (without the program name).
pub fn parse_args(args: &[String]) -> Result<Command, String> {
    let spec = spec();
    let m = spec.parse(args).map_err(|e| e.to_string())?;
    if m.opt_present("h") {
        let brief =
            "Usage: midge [-c FILE] [-p PORT]... [-v] [-d] [--test-config] [--recover]\n       \
                     midge passwd [-c | -D] [-b] FILE USER [PASSWORD]   (see midge passwd -h)\n\n\
                     midge is an MQTT 3.1/3.1.1/5.0 broker. With no config file and no -p \
                     it listens on 127.0.0.1:1883 only.";
        return Ok(Command::Help(spec.usage(brief)));
    }
    if m.opt_present("version") {
        return Ok(Command::Version(version()));
    }
    if let Some(extra) = m.free.first() {
        return Err(format!("unexpected argument `{extra}`"));
    }
    let mut ports = Vec::new();
    for p in m.opt_strs("p") {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => ports.push(n),
            _ => return Err(format!("invalid port `{p}`")),
        }
    }
    Ok(Command::Run(Options {
        config_file: m.opt_str("c").map(PathBuf::from),
        ports,
        verbose: m.opt_present("v"),
        daemon: m.opt_present("d"),
        test_config: m.opt_present("test-config"),
        recover: m.opt_present("recover"),
    }))
}

/// The configuration the options describe, and notices to log once logging is up.
///
/// Every error of the file is reported (file:line each), not only the first.
/// Relative paths are resolved against the working directory now.
pub fn build_config(opts: &Options) -> Result<(Config, Vec<String>), Vec<ConfigError>> {
    let mut notices = Vec::new();
    let mut config = match &opts.config_file {
        Some(path) => Config::load_all(path)?,
        None => Config::default(),
    };
    if let Ok(cwd) = std::env::current_dir() {
        config.resolve_paths(&cwd);
    }
    if opts.recover {
        config.persistence_recover = true;
    }
    if config.listeners.is_empty() {
        let ports = if opts.ports.is_empty() {
            notices.push(
                "Starting in local only mode. Connections will only be possible from \
                 clients running on this machine."
                    .to_string(),
            );
            notices.push(
                "Create a configuration file which defines a listener to allow remote access."
                    .to_string(),
            );
            vec![1883]
        } else {
            opts.ports.clone()
        };
        // As mosquitto 2: ports given on the command line are loopback only,
        // and anonymous clients are then allowed.
        config.local_only = true;
        // Both loopback addresses, as mosquitto: `localhost` may resolve to
        // either. `::1` is optional: a host without IPv6 still starts.
        // Listener options given before any `listener` line are mosquitto's
        // default listener's: these are it.
        let options = config.default_listener.clone();
        config.listeners = ports
            .into_iter()
            .flat_map(|port| {
                let v6 = ListenerConfig {
                    optional: true,
                    options: options.clone(),
                    ..ListenerConfig::new(port, Some("::1".to_string()))
                };
                let v4 = ListenerConfig {
                    options: options.clone(),
                    ..ListenerConfig::new(port, Some("127.0.0.1".to_string()))
                };
                [v4, v6]
            })
            .collect();
    } else if !opts.ports.is_empty() {
        notices.push(format!(
            "-p {:?} ignored: the config file defines listeners.",
            opts.ports
        ));
    }
    Ok((config, notices))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags() {
        let Ok(Command::Run(o)) = parse_args(&args(&[
            "-c", "x.conf", "-p", "1884", "-p", "1885", "-v", "-d",
        ])) else {
            panic!("not a run command")
        };
        assert_eq!(o.config_file, Some(PathBuf::from("x.conf")));
        assert_eq!(o.ports, vec![1884, 1885]);
        assert!(o.verbose && o.daemon && !o.test_config);
        assert!(
            matches!(parse_args(&args(&["-h"])), Ok(Command::Help(h)) if h.contains("-p, --port"))
        );
        assert!(
            matches!(parse_args(&args(&["--version"])), Ok(Command::Version(v)) if v.starts_with("midge version"))
        );
        assert!(parse_args(&args(&["-p", "x"])).is_err());
        assert!(parse_args(&args(&["--bogus"])).is_err());
        assert!(parse_args(&args(&["stray"])).is_err());
    }

    #[test]
    fn no_listeners_means_loopback_1883_with_a_notice() {
        let (c, notices) = build_config(&Options::default()).expect("config");
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[1].bind_address.as_deref(), Some("::1"));
        assert!(c.listeners[1].optional && !c.listeners[0].optional);
        assert_eq!(c.listeners[0].port, 1883);
        assert_eq!(c.listeners[0].bind_address.as_deref(), Some("127.0.0.1"));
        assert!(notices[0].contains("local only mode"));
        let (c, notices) = build_config(&Options {
            ports: vec![2000, 2001],
            ..Options::default()
        })
        .expect("config");
        assert_eq!(c.listeners.len(), 4);
        assert!(notices.is_empty());
    }

    #[test]
    fn ports_are_ignored_when_the_file_has_listeners() {
        let dir = std::env::temp_dir().join(format!("midge-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let f = dir.join("m.conf");
        std::fs::write(&f, "listener 1999\n").expect("write");
        let (c, notices) = build_config(&Options {
            config_file: Some(f),
            ports: vec![2000],
            ..Options::default()
        })
        .expect("config");
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].port, 1999);
        assert!(notices[0].contains("ignored"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
