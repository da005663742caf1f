//! `authgate-authz`: the reference authorization service (see `authz_service`), and admin commands
//! that work directly on its SQLite file (safe while the server runs: it reads the file on every
//! request).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use authgate_integration::authz_service::{
    AdminTokenSource, AuthzOptions, AuthzService, AuthzStore, DEFAULT_SESSION_TTL_S,
};
use serde_json::json;

const USAGE: &str = "\
usage:
  authgate-authz serve --db PATH [--port 8083] [--host 127.0.0.1] [--public-url URL]
                       [--admin-token T] [--session-ttl-s 3600] [--gateway-key K]
  authgate-authz create-token --db PATH --email E [--session-ttl-s 3600]
  authgate-authz expire  --db PATH --sha256 H
  authgate-authz revoke  --db PATH --sha256 H
  authgate-authz restore --db PATH --sha256 H
  authgate-authz subject --db PATH --id ID --allowed true|false [--reason R]
  authgate-authz admin-token --db PATH

serve: answers POST /api/authorize, POST /api/sessions/renew, GET /health and /admin/...
  on --host:--port. An expired session's answer carries no re-auth link: nothing renews a
  session but POST /api/sessions/renew, from a gateway that signed the token's owner in.
  --public-url is the URL the service is reached at (default http://127.0.0.1:PORT).
  /admin/ always needs `authorization: Bearer <admin token>` and JSON bodies, and answers
  only Host values naming this service (127.0.0.1/localhost/[::1]/--host with the port, and
  --public-url's host). The admin token is --admin-token, or AUTHGATE_AUTHZ_ADMIN_TOKEN (keeps
  it out of `ps`); with neither, one is generated at the first start, printed once, and kept
  in the database as a SHA-256 digest.
  POST /api/sessions/renew needs `x-authgate-gateway-key: K`, K from --gateway-key or
  AUTHGATE_GATEWAY_KEY; without one, renewal is off.
create-token: prints {\"token\": ..., \"token_sha256\": ...}; only the digest is stored.
admin-token: replaces the stored admin token with a new one and prints it (a running server
  takes the new one, and no longer the old, from its next request).";

const ADMIN_TOKEN_ENV: &str = "AUTHGATE_AUTHZ_ADMIN_TOKEN";
const GATEWAY_KEY_ENV: &str = "AUTHGATE_GATEWAY_KEY";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(&args[0], &args[1..]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("authgate-authz: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("authgate-authz: {message}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(String),
    Runtime(String),
}

fn run(command: &str, args: &[String]) -> Result<(), Failure> {
    match command {
        "serve" => {
            let mut flags = Flags::parse(
                args,
                &[
                    "db",
                    "port",
                    "host",
                    "public-url",
                    "admin-token",
                    "session-ttl-s",
                    "gateway-key",
                ],
            )?;
            let db = flags.db()?;
            let port = flags.number("port")?.unwrap_or(8083);
            let port = u16::try_from(port).map_err(|_| usage(format!("--port {port}")))?;
            let host: IpAddr = match flags.take("host") {
                Some(text) => text
                    .parse()
                    .map_err(|_| usage(format!("--host {text} is not an IP address")))?,
                None => IpAddr::from([127, 0, 0, 1]),
            };
            let options = AuthzOptions {
                port: Some(port),
                public_url: flags.take("public-url"),
                admin_token: flags
                    .take("admin-token")
                    .or_else(|| std::env::var(ADMIN_TOKEN_ENV).ok()),
                session_ttl_s: flags
                    .number("session-ttl-s")?
                    .unwrap_or(DEFAULT_SESSION_TTL_S),
                gateway_key: flags
                    .take("gateway-key")
                    .or_else(|| std::env::var(GATEWAY_KEY_ENV).ok()),
            };
            let service = AuthzService::serve(&db, host, options).map_err(Failure::Runtime)?;
            // The first line is read by bench/ for the port: keep its shape.
            println!(
                "authgate-authz: serving {} on {host}:{} (public URL {}, admin bearer token)",
                db.display(),
                service.port(),
                service.public_url(),
            );
            let admin_url = format!("http://127.0.0.1:{}/admin", service.port());
            match service.admin_token_source() {
                AdminTokenSource::Configured => println!(
                    "authgate-authz: admin API token: the one given (--admin-token or \
                     {ADMIN_TOKEN_ENV})"
                ),
                AdminTokenSource::Generated(token) => {
                    println!(
                        "authgate-authz: admin API token (generated now; only its digest is \
                         stored, so this is the one time it is shown): {token}"
                    );
                    println!(
                        "authgate-authz:   curl -H 'authorization: Bearer {token}' \
                         -H 'content-type: application/json' -d '{{\"email\": \"you@example.com\"}}' \
                         {admin_url}/tokens"
                    );
                }
                AdminTokenSource::Stored => println!(
                    "authgate-authz: admin API token: the one printed at the first start (only its \
                     digest is stored); `authgate-authz admin-token --db {}` makes a new one",
                    db.display()
                ),
            }
            loop {
                std::thread::park();
            }
        }
        "create-token" => {
            let mut flags = Flags::parse(args, &["db", "email", "session-ttl-s"])?;
            let store = open(&flags.db()?)?;
            let email = flags.required("email")?;
            let ttl = flags
                .number("session-ttl-s")?
                .unwrap_or(DEFAULT_SESSION_TTL_S);
            let issued = store.create_token(&email, ttl).map_err(Failure::Runtime)?;
            println!(
                "{}",
                json!({"token": issued.token, "token_sha256": issued.token_sha256})
            );
            Ok(())
        }
        "expire" | "revoke" | "restore" => {
            let mut flags = Flags::parse(args, &["db", "sha256"])?;
            let store = open(&flags.db()?)?;
            let sha256 = flags.required("sha256")?;
            let changed = match command {
                "expire" => store.expire(&sha256),
                "revoke" => store.revoke(&sha256),
                _ => store.restore(&sha256),
            }
            .map_err(Failure::Runtime)?;
            if !changed {
                return Err(Failure::Runtime(format!("no token with sha256 {sha256}")));
            }
            println!("{command}: {sha256}");
            Ok(())
        }
        "subject" => {
            let mut flags = Flags::parse(args, &["db", "id", "allowed", "reason"])?;
            let store = open(&flags.db()?)?;
            let id = flags.required("id")?;
            let allowed = match flags.required("allowed")?.as_str() {
                "true" => true,
                "false" => false,
                other => return Err(usage(format!("--allowed {other}: use true or false"))),
            };
            let reason = flags.take("reason");
            store
                .set_subject(&id, allowed, reason.as_deref())
                .map_err(Failure::Runtime)?;
            println!("subject {id}: allowed={allowed}");
            Ok(())
        }
        "admin-token" => {
            let mut flags = Flags::parse(args, &["db"])?;
            let store = open(&flags.db()?)?;
            let token = store.rotate_admin_token().map_err(Failure::Runtime)?;
            println!("{}", json!({"admin_token": token}));
            Ok(())
        }
        other => Err(usage(format!("unknown command {other:?}"))),
    }
}

fn usage(message: String) -> Failure {
    Failure::Usage(message)
}

fn open(db: &std::path::Path) -> Result<AuthzStore, Failure> {
    AuthzStore::open(db).map_err(Failure::Runtime)
}

/// `--name value` pairs, each name at most once and from a known set.
struct Flags(BTreeMap<String, String>);

impl Flags {
    fn parse(args: &[String], known: &[&str]) -> Result<Flags, Failure> {
        let mut values = BTreeMap::new();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let Some(name) = arg.strip_prefix("--").filter(|n| known.contains(n)) else {
                return Err(usage(format!("unexpected argument {arg:?}")));
            };
            let Some(value) = rest.next() else {
                return Err(usage(format!("{arg} needs a value")));
            };
            if values.insert(name.to_string(), value.clone()).is_some() {
                return Err(usage(format!("{arg} given twice")));
            }
        }
        Ok(Flags(values))
    }

    fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    fn required(&mut self, name: &str) -> Result<String, Failure> {
        self.take(name)
            .ok_or_else(|| usage(format!("--{name} is required")))
    }

    fn db(&mut self) -> Result<PathBuf, Failure> {
        self.required("db").map(PathBuf::from)
    }

    fn number(&mut self, name: &str) -> Result<Option<u64>, Failure> {
        self.take(name)
            .map(|text| {
                text.parse()
                    .map_err(|_| usage(format!("--{name} {text} is not a whole number")))
            })
            .transpose()
    }
}
