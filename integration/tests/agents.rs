//! Real coding-agent CLIs through real Envoy, authgate and the reference authorization service:
//! Claude Code, the OpenAI Codex CLI, `llm` (chat and responses, streamed and not) and aider,
//! pinned and installed by `make agents` (integration/agents/install.sh). Each runs with a
//! throwaway HOME and its outside traffic switched off; everything it sends goes to 127.0.0.1.
//! For each: an active session gets the model's answer; an expired one shows the user the re-auth
//! URL, whole, after one request and with nothing reaching the model, with the body_hold companion
//! and without it, and with a 2 MiB prompt; once the session is renewed (as a gateway renews it
//! after its owner signed in: `POST /api/sessions/renew`) the same token works again. The
//! sign-in re-auth itself, in a browser against a real IdP, is tested in `sign_in.rs`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use authgate_integration::expect::Checks;
use authgate_integration::{repo_root, AuthzOptions, AuthzService, Envoy, EnvoyConfig, Req};
use serde_json::{json, Value};

/// What the model behind the gateway answers.
const UPSTREAM_TEXT: &str = "UPSTREAM-OK";
/// Allows and expired answers are cached this long (the config's ttls plus a margin).
const TTL: Duration = Duration::from_millis(1_100);
/// No CLI run may take longer: a retry storm or a hang fails here rather than stalling CI.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// The gateway's re-auth URL (the reference service gives none).
const REAUTH_URL: &str = "https://sso.example.com/reauth";
/// The key a gateway presents to `POST /api/sessions/renew`.
const GATEWAY_KEY: &str = "gateway-key-for-tests-0123";

fn agents_dir() -> PathBuf {
    repo_root().join(".tools/agents")
}

fn plugin(companion: bool) -> Value {
    let rule = |prefix: &str, reply: &str| {
        json!({"match": {"prefix": prefix}, "requires_any": ["opaque_token"],
               "enterprise": true, "session_reply": reply})
    };
    json!({
        "opaque_tokens": "enterprise",
        "rules": [rule("/anthropic/", "anthropic"), rule("/v1/", "openai")],
        "enterprise": {"cluster": "authz", "authority": "authz.internal", "timeout_ms": 2000,
                       "upstream_headers": ["x-auth-email", "x-auth-authz-subject"],
                       "cache": {"allow_ttl_s": 1, "deny_ttl_s": 1}},
        "session": {"reauth_url": REAUTH_URL, "hold_companion": companion,
                    "message": "Your session has expired. Open {reauth_url} to sign in again, then retry."}
    })
}

/// `integration/agents/llm_upstream.py`: the model, answering every request with UPSTREAM_TEXT.
struct Model {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Model {
    fn start(dir: &Path) -> Model {
        let log = dir.join("model.jsonl");
        let port_file = dir.join("model.port");
        let child = Command::new(repo_root().join(".venv/bin/python"))
            .arg(repo_root().join("integration/agents/llm_upstream.py"))
            .args(["--text", UPSTREAM_TEXT, "--log"])
            .arg(&log)
            .arg("--port-file")
            .arg(&port_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the model stub: {e}"));
        let started = Instant::now();
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                break port;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the model stub did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Model { child, port, log }
    }

    /// Requests that reached the model.
    fn requests(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|log| log.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reference service, the model, and two gateways: with the companion and without it.
struct Stack {
    with_companion: Envoy,
    without_companion: Envoy,
    service: AuthzService,
    model: Model,
    /// Last: removed once everything using it has stopped.
    _dir: tempfile::TempDir,
}

impl Stack {
    fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let service = AuthzService::start_with(
            &dir.path().join("authz.sqlite"),
            AuthzOptions {
                gateway_key: Some(GATEWAY_KEY.to_string()),
                ..AuthzOptions::default()
            },
        );
        let model = Model::start(dir.path());
        let envoy = |companion: bool| {
            let mut config =
                EnvoyConfig::new(&plugin(companion), model.port).cluster("authz", service.port());
            if companion {
                config = config.hold_companion();
            }
            Envoy::start(&config).unwrap_or_else(|e| panic!("starting envoy: {e}"))
        };
        Stack {
            with_companion: envoy(true),
            without_companion: envoy(false),
            _dir: dir,
            service,
            model,
        }
    }

    /// The re-auth URL the gateway gives for this (expired) token, as a client gets it: its
    /// configured one, since the service gives none.
    fn reauth_url(&self, token: &str) -> String {
        let reply = Req::post(self.with_companion.url("/v1/chat/completions"))
            .bearer(token)
            .json(&json!({"model": "m", "messages": []}))
            .send();
        let url = reply.header("x-auth-reauth-url").unwrap_or("").to_string();
        assert_eq!(url, REAUTH_URL, "not the gateway's re-auth URL: {reply}");
        url
    }
}

#[derive(Clone, Copy, Debug)]
enum Agent {
    Claude,
    Codex,
    Llm { responses: bool, stream: bool },
    Aider,
}

#[derive(Clone, Copy)]
enum Prompt {
    Short,
    /// About 2 MiB (1 MiB for Codex, its own limit), as a long agent session sends: given on
    /// standard input (or a file).
    Long,
}

struct Ran {
    /// Standard output and error, without terminal escapes.
    text: String,
    took: Duration,
}

/// Runs one CLI turn against `gateway` with `token`; panics if it does not finish in time.
fn run(agent: Agent, gateway: &Envoy, token: &str, prompt: Prompt) -> Ran {
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let home = scratch.path();
    let tools = agents_dir();
    let short = "Say hello.";
    // Codex refuses a prompt over 1,048,576 characters itself: it gets just under that.
    let lines = match agent {
        Agent::Codex => 49_000,
        _ => 100_000,
    };
    let long = format!(
        "Summarise this log:\n{}",
        "line of build output\n".repeat(lines)
    );
    let prompt_text = match prompt {
        Prompt::Short => short.to_string(),
        Prompt::Long => long,
    };
    // Nothing from the developer's environment (keys, endpoints, proxies) leaks in.
    let base = |program: PathBuf| {
        let mut command = Command::new(program);
        for name in [
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "OPENAI_API_BASE",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "CODEX_HOME",
            "LLM_USER_PATH",
        ] {
            command.env_remove(name);
        }
        command
            .env("HOME", home)
            .env("TERM", "dumb")
            .env("NO_COLOR", "1");
        command
    };
    let mut command;
    let mut stdin_text = None;
    match agent {
        Agent::Claude => {
            command = base(tools.join("npm/node_modules/.bin/claude"));
            command
                .env("ANTHROPIC_BASE_URL", gateway.url("/anthropic"))
                .env("ANTHROPIC_AUTH_TOKEN", token)
                .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
                .env("DISABLE_AUTOUPDATER", "1")
                .arg("-p");
            match prompt {
                Prompt::Short => {
                    command.arg(short);
                }
                Prompt::Long => stdin_text = Some(prompt_text),
            }
        }
        Agent::Codex => {
            let codex_home = home.join(".codex");
            write(
                &codex_home.join("config.toml"),
                &format!(
                    "model = \"gpt-agent\"\nmodel_provider = \"gateway\"\n\
                     check_for_update_on_startup = false\n\
                     [analytics]\nenabled = false\n[feedback]\nenabled = false\n\
                     [features]\nplugins = false\n\
                     [model_providers.gateway]\nname = \"gateway\"\nbase_url = \"{}\"\n\
                     env_key = \"AUTHGATE_AGENT_TOKEN\"\nwire_api = \"responses\"\n\
                     stream_max_retries = 0\nrequest_max_retries = 0\n",
                    gateway.url("/v1")
                ),
            );
            command = base(tools.join("npm/node_modules/.bin/codex"));
            command
                .env("CODEX_HOME", &codex_home)
                .env("AUTHGATE_AGENT_TOKEN", token)
                .args(["exec", "--skip-git-repo-check"]);
            match prompt {
                Prompt::Short => {
                    command.arg(short);
                }
                Prompt::Long => {
                    command.arg("-");
                    stdin_text = Some(prompt_text);
                }
            }
        }
        Agent::Llm { responses, stream } => {
            let user = home.join("llm");
            write(
                &user.join("extra-openai-models.yaml"),
                &format!(
                    "- model_id: gateway-chat\n  model_name: gpt-agent\n  api_base: {0}\n  \
                     api_key_name: gateway\n\
                     - model_id: gateway-responses\n  model_name: gpt-agent\n  api_base: {0}\n  \
                     api_key_name: gateway\n  responses: true\n",
                    gateway.url("/v1")
                ),
            );
            write(
                &user.join("keys.json"),
                &json!({"gateway": token}).to_string(),
            );
            command = base(tools.join("venv/bin/llm"));
            command.env("LLM_USER_PATH", &user).args([
                "-m",
                if responses {
                    "gateway-responses"
                } else {
                    "gateway-chat"
                },
            ]);
            if !stream {
                command.arg("--no-stream");
            }
            match prompt {
                Prompt::Short => {
                    command.arg(short);
                }
                Prompt::Long => stdin_text = Some(prompt_text),
            }
        }
        Agent::Aider => {
            let metadata = home.join("model-metadata.json");
            write(
                &metadata,
                &json!({"openai/gpt-agent": {"max_tokens": 8192, "max_input_tokens": 2_000_000,
                        "max_output_tokens": 8192, "input_cost_per_token": 0,
                        "output_cost_per_token": 0, "litellm_provider": "openai", "mode": "chat"}})
                .to_string(),
            );
            command = base(tools.join("venv-aider/bin/aider"));
            command
                .current_dir(home)
                .env("OPENAI_API_BASE", gateway.url("/v1"))
                .env("OPENAI_API_KEY", token)
                .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                .args(["--model", "openai/gpt-agent", "--model-metadata-file"])
                .arg(&metadata)
                .args([
                    "--yes-always",
                    "--no-git",
                    "--no-check-update",
                    "--no-show-release-notes",
                    "--analytics-disable",
                    "--no-auto-commits",
                    "--no-pretty",
                    "--no-fancy-input",
                    "--no-show-model-warnings",
                    "--map-tokens",
                    "0",
                ]);
            match prompt {
                Prompt::Short => {
                    command.args(["--message", short]);
                }
                Prompt::Long => {
                    let file = home.join("prompt.txt");
                    write(&file, &prompt_text);
                    command.arg("--message-file").arg(file);
                }
            }
        }
    }
    command
        .stdin(if stdin_text.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!("starting {agent:?} (install the agent CLIs with `make agents`): {e}")
    });
    if let (Some(text), Some(mut input)) = (stdin_text, child.stdin.take()) {
        std::thread::spawn(move || {
            let _ = input.write_all(text.as_bytes());
        });
    }
    // Read both pipes while waiting, so a chatty CLI never blocks on a full pipe.
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = stdout {
            let _ = std::io::Read::read_to_end(&mut pipe, &mut buf);
        }
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = stderr {
            let _ = std::io::Read::read_to_end(&mut pipe, &mut buf);
        }
        buf
    });
    loop {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{agent:?} did not finish within {RUN_TIMEOUT:?} (retrying, or waiting for input?)"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    let mut text = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    text.push('\n');
    text.push_str(&String::from_utf8_lossy(&err.join().unwrap_or_default()));
    Ran {
        text: strip_escapes(&text),
        took,
    }
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Drops terminal escape sequences (colours, cursor moves) a CLI may print anyway.
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// How many session-expired replies a gateway gave (one per request the CLI sent it).
fn expired_replies(gateway: &Envoy) -> u64 {
    gateway.stat("authgate.session_expired")
}

/// One CLI through the whole flow; `variants` are the agents run on expired sessions (llm:
/// chat and responses, streamed and not).
fn the_whole_flow(first: Agent, variants: &[Agent]) {
    let stack = Stack::start();
    let (token, sha) = stack.service.create_token("alice@example.com", 3600);
    let mut checks = Checks::new();

    let ran = run(first, &stack.with_companion, &token, Prompt::Short);
    checks.check(
        &format!("{first:?}: an active session gets the model's answer"),
        ran.text
            .contains(UPSTREAM_TEXT)
            .then_some(())
            .ok_or(format!("it showed:\n{}", ran.text)),
    );

    stack.service.expire(&sha);
    std::thread::sleep(TTL);
    let url = stack.reauth_url(&token);
    for (label, gateway) in [
        ("with the companion", &stack.with_companion),
        ("without the companion", &stack.without_companion),
    ] {
        for agent in variants {
            let model_before = stack.model.requests();
            let replies_before = expired_replies(gateway);
            let ran = run(*agent, gateway, &token, Prompt::Short);
            let replies = expired_replies(gateway) - replies_before;
            checks.check(
                &format!("{agent:?} {label}: the user sees the whole re-auth URL"),
                ran.text
                    .contains(&url)
                    .then_some(())
                    .ok_or(format!("wanted {url}; it showed:\n{}", ran.text)),
            );
            checks.check(
                &format!("{agent:?} {label}: one request, nothing reaches the model"),
                (replies == 1 && stack.model.requests() == model_before)
                    .then_some(())
                    .ok_or(format!(
                        "{replies} requests, {} reached the model, in {:?}",
                        stack.model.requests() - model_before,
                        ran.took
                    )),
            );
        }
    }

    let model_before = stack.model.requests();
    let ran = run(first, &stack.with_companion, &token, Prompt::Long);
    checks.check(
        &format!("{first:?} with a long prompt: the URL, nothing upstream"),
        (ran.text.contains(&url) && stack.model.requests() == model_before)
            .then_some(())
            .ok_or(format!("it showed:\n{}", ran.text)),
    );

    // The owner signs in again: here, the renewal a gateway asks for once the owner signed in
    // (the browser sign-in that leads to it is in sign_in.rs).
    let renewal = stack
        .service
        .renew_as_gateway(GATEWAY_KEY, &sha, "ticket-1");
    checks.check(
        "the session is renewed for its owner",
        (renewal.status == 200 && renewal.json().is_some_and(|b| b["renewed"] == true))
            .then_some(())
            .ok_or(format!("{renewal}")),
    );
    std::thread::sleep(TTL);
    let ran = run(first, &stack.with_companion, &token, Prompt::Short);
    checks.check(
        &format!("{first:?}: after the renewal the same token gets the model's answer"),
        ran.text
            .contains(UPSTREAM_TEXT)
            .then_some(())
            .ok_or(format!("it showed:\n{}", ran.text)),
    );
    checks.finish();
}

#[test]
fn claude_code() {
    the_whole_flow(Agent::Claude, &[Agent::Claude]);
}

#[test]
fn codex() {
    the_whole_flow(Agent::Codex, &[Agent::Codex]);
}

#[test]
fn llm_chat_and_responses_streamed_and_not() {
    let all: Vec<Agent> = [(false, true), (false, false), (true, true), (true, false)]
        .into_iter()
        .map(|(responses, stream)| Agent::Llm { responses, stream })
        .collect();
    the_whole_flow(all[0], &all);
}

#[test]
fn aider() {
    the_whole_flow(Agent::Aider, &[Agent::Aider]);
}
