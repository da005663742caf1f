//! `authgate-doctor`: the filter's own core, run natively, to check a configuration before it
//! ships and to explain why a token is refused. Never prints a credential: tokens and keys appear
//! only as 12-hex SHA-256 fingerprints.
//!
//! Exit codes: 0 fine (valid / allowed / healthy), 1 the thing checked is not (invalid config,
//! token denied, service unhealthy), 2 usage error or unreadable input.

// A command-line tool: it reports errors and exits; panicking paths are not used.
mod explain;
mod info;
mod login_check;
mod probe;

use std::process::ExitCode;

use authgate::core::config::{Config, Plugin};
use sha2::{Digest, Sha256};

const USAGE: &str = "usage:
  authgate-doctor validate CONFIG.json
  authgate-doctor explain TOKEN --config CONFIG.json [--jwks FILE|URL] [--method M] [--path P]
                                [--host H] [--now UNIX_SECONDS] [--body JSON|@FILE]
  authgate-doctor probe-authz URL [--authority HOST] [--timeout-ms N]
  authgate-doctor hash-key KEY|-        (- reads the key from standard input)
  authgate-doctor info --admin http://HOST:PORT [--interval SECONDS]   (a running gateway's stats)
  authgate-doctor login-check CONFIG.json   (the login section against the identity provider)
  authgate-doctor version";

/// How a command ended: the exit code, after its output was printed.
pub enum Outcome {
    Fine,
    NotFine,
    Usage(String),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("validate") => validate(&args[1..]),
        Some("explain") => explain::run(&args[1..]),
        Some("probe-authz") => probe::run(&args[1..]),
        Some("hash-key") => hash_key(&args[1..]),
        Some("info") => info::run(&args[1..]),
        Some("login-check") => login_check::run(&args[1..]),
        Some("version") => {
            println!(
                "authgate-doctor {} ({})",
                authgate::VERSION,
                authgate::GIT_HASH
            );
            Outcome::Fine
        }
        _ => Outcome::Usage(String::new()),
    };
    match outcome {
        Outcome::Fine => ExitCode::SUCCESS,
        Outcome::NotFine => ExitCode::from(1),
        Outcome::Usage(why) => {
            if !why.is_empty() {
                eprintln!("error: {why}");
            }
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `--name value` pairs after the positional arguments.
pub fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

pub fn read_file(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// Loads and checks a plugin configuration, printing the filter's own error line on failure.
pub fn load_config(path: &str) -> Result<Config, Outcome> {
    let bytes = read_file(path).map_err(Outcome::Usage)?;
    match Plugin::parse(&bytes) {
        Ok(Plugin::Gate(config)) => Ok(*config),
        Ok(Plugin::BodyHold) => {
            println!("{path}: a body_hold companion configuration (nothing else to check)");
            Err(Outcome::Fine)
        }
        Err(error) => {
            println!("{path}: invalid configuration: {error}");
            Err(Outcome::NotFine)
        }
    }
}

fn validate(args: &[String]) -> Outcome {
    let Some(path) = args.first() else {
        return Outcome::Usage("validate needs a configuration file".to_string());
    };
    let config = match load_config(path) {
        Ok(config) => config,
        Err(outcome) => return outcome,
    };
    println!(
        "{path}: valid: {} JWT provider(s), {} rule(s), {} API key(s), enterprise {}, backoff {}",
        config.providers.len(),
        config.rules.len(),
        config.api_keys.as_ref().map_or(0, |k| k.len()),
        if config.enterprise.is_some() {
            "on"
        } else {
            "off"
        },
        if config.backoff.is_some() {
            "on"
        } else {
            "off"
        },
    );
    Outcome::Fine
}

fn hash_key(args: &[String]) -> Outcome {
    let key = match args.first().map(String::as_str) {
        Some("-") => {
            let mut text = String::new();
            if std::io::stdin().read_line(&mut text).is_err() {
                return Outcome::Usage("cannot read the key from standard input".to_string());
            }
            text.trim_end_matches(['\r', '\n']).to_string()
        }
        Some(key) => key.to_string(),
        None => return Outcome::Usage("hash-key needs a key (or - for stdin)".to_string()),
    };
    if key.is_empty() {
        return Outcome::Usage("the key is empty".to_string());
    }
    // The digest only: this is what goes into api_keys.keys[].sha256.
    println!("{}", hex::encode(Sha256::digest(key.as_bytes())));
    Outcome::Fine
}
