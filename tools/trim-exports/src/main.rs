//! `authgate-trim-exports IN OUT NAME...`: copies the Wasm module IN to OUT without the exports
//! NAME... (every other section is copied byte for byte).
//!
//! Why: the proxy-wasm Rust SDK exports every callback, and Envoy calls each exported one for
//! every request (response headers, body, trailers, log, done...), each a host-to-Wasm call that
//! costs about as much as the filter's own work on a cached token. Envoy skips a callback the
//! module does not export (proxy-wasm-cpp-host checks for the function before calling it), so
//! removing the exports of callbacks the filter leaves at their defaults removes those calls.

use std::process::ExitCode;

use wasm_encoder::{ExportKind, ExportSection, Module, RawSection};
use wasmparser::{ExternalKind, Parser, Payload};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, drop @ ..] = args.as_slice() else {
        eprintln!("usage: authgate-trim-exports IN OUT NAME...");
        return ExitCode::from(2);
    };
    match trim(input, output, drop) {
        Ok(removed) => {
            println!("{output}: removed exports {}", removed.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("authgate-trim-exports: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the trimmed module; the names it removed. Every name in `drop` must be exported.
fn trim(input: &str, output: &str, drop: &[String]) -> Result<Vec<String>, String> {
    let wasm = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
    let (trimmed, removed) = trim_bytes(&wasm, drop)?;
    let missing: Vec<&String> = drop.iter().filter(|n| !removed.contains(n)).collect();
    if !missing.is_empty() {
        return Err(format!("{input} does not export {missing:?}"));
    }
    wasmparser::validate(&trimmed).map_err(|e| format!("trimmed module is invalid: {e}"))?;
    let temporary = format!("{output}.tmp");
    std::fs::write(&temporary, &trimmed).map_err(|e| format!("{temporary}: {e}"))?;
    std::fs::rename(&temporary, output).map_err(|e| format!("{output}: {e}"))?;
    Ok(removed)
}

fn trim_bytes(wasm: &[u8], drop: &[String]) -> Result<(Vec<u8>, Vec<String>), String> {
    let mut module = Module::new();
    let mut removed = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| e.to_string())?;
        if let Payload::ExportSection(reader) = &payload {
            let mut exports = ExportSection::new();
            for export in reader.clone() {
                let export = export.map_err(|e| e.to_string())?;
                if drop.iter().any(|n| n == export.name) {
                    removed.push(export.name.to_string());
                    continue;
                }
                exports.export(export.name, kind(export.kind), export.index);
            }
            module.section(&exports);
            continue;
        }
        // Everything else is copied as it is: the header is written by `Module`, and the code
        // section's entries come as their own payloads inside the section copied whole.
        if let Some((id, range)) = payload.as_section() {
            module.section(&RawSection {
                id,
                data: &wasm[range],
            });
        }
    }
    Ok((module.finish(), removed))
}

fn kind(kind: ExternalKind) -> ExportKind {
    match kind {
        ExternalKind::Func => ExportKind::Func,
        ExternalKind::Table => ExportKind::Table,
        ExternalKind::Memory => ExportKind::Memory,
        ExternalKind::Global => ExportKind::Global,
        ExternalKind::Tag => ExportKind::Tag,
    }
}
