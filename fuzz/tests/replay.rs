//! Replays the committed seeds (`corpus/<target>/`) and every saved crash
//! (`regressions/<target>/`) through the fuzz targets' checks, on stable Rust without libFuzzer:
//! `cargo test --manifest-path fuzz/Cargo.toml`. A regression that still panics fails here.

use std::fs;
use std::panic;
use std::path::Path;

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 10] = [
    ("jwt_inspect", authgate_fuzz::check_jwt_inspect),
    ("jwt_verify", authgate_fuzz::check_jwt_verify),
    ("config_parse", authgate_fuzz::check_config_parse),
    ("jwks_parse", authgate_fuzz::check_jwks_parse),
    ("authz_answer", authgate_fuzz::check_authz_answer),
    ("llm_reply", authgate_fuzz::check_llm_reply),
    ("decide", authgate_fuzz::decide::check_decide_bytes),
    ("rsa_modpow", authgate_fuzz::check_rsa_modpow),
    ("header_pairs", authgate_fuzz::check_header_pairs),
    ("path_normalise", authgate_fuzz::check_path_normalise),
];

fn replay(kind: &str) -> (usize, Vec<String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(kind);
    let mut ran = 0;
    let mut failures = Vec::new();
    for (target, check) in TARGETS {
        let Ok(entries) = fs::read_dir(root.join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for path in paths {
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".md"))
            {
                continue;
            }
            let data = fs::read(&path).unwrap_or_default();
            ran += 1;
            if panic::catch_unwind(|| check(&data)).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    (ran, failures)
}

#[test]
fn seed_corpus_passes_every_check() {
    let (ran, failures) = replay("corpus");
    assert!(ran > 0, "no seeds found");
    assert!(failures.is_empty(), "seeds that fail: {failures:#?}");
}

/// Saved crashes (`regressions/<target>/`): none may fail again once its bug is fixed.
#[test]
fn regressions_no_longer_crash() {
    let (_, failures) = replay("regressions");
    assert!(
        failures.is_empty(),
        "regressions that still fail: {failures:#?}"
    );
}

/// Every target's fixed configuration and fixture material loads, and the seeds exist.
#[test]
fn every_target_has_seeds() {
    for (target, _) in TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let count = fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert!(count > 0, "no seeds in {}", dir.display());
    }
}

/// Which outcomes a `decide` corpus reaches: `FUZZ_TALLY_DIR=fuzz/work/decide cargo test
/// --release --manifest-path fuzz/Cargo.toml -- --ignored decide_tally --nocapture`.
#[test]
#[ignore = "a report, not a check"]
fn decide_tally() {
    let dir = std::env::var("FUZZ_TALLY_DIR").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus/decide")
            .display()
            .to_string()
    });
    let mut inputs = 0;
    for entry in fs::read_dir(&dir).expect("corpus dir").flatten() {
        authgate_fuzz::decide::check_decide_bytes(&fs::read(entry.path()).unwrap_or_default());
        inputs += 1;
    }
    println!("{inputs} inputs from {dir}");
    for (kind, n) in authgate_fuzz::decide::tally() {
        println!("{n:>8}  {kind}");
    }
}

/// Prints what a `decide` input decodes to: `FUZZ_SHOW=path cargo test --manifest-path
/// fuzz/Cargo.toml -- --ignored decide_show --nocapture`.
#[test]
#[ignore = "a debugging aid"]
fn decide_show() {
    use arbitrary::{Arbitrary, Unstructured};
    let path = std::env::var("FUZZ_SHOW").expect("FUZZ_SHOW=path");
    let data = fs::read(path).expect("input");
    let input = authgate_fuzz::decide::DecideInput::arbitrary_take_rest(Unstructured::new(&data));
    println!("{input:#?}");
}

/// Picks a few `decide` inputs that together reach every outcome a corpus reaches (greedy set
/// cover over the tally's keys): how `corpus/decide/` was chosen from a run's working corpus.
/// `FUZZ_TALLY_DIR=fuzz/work/decide cargo test --release --manifest-path fuzz/Cargo.toml --
/// --ignored decide_pick_seeds --nocapture`
#[test]
#[ignore = "a tool, not a check"]
fn decide_pick_seeds() {
    use std::collections::{BTreeMap, BTreeSet};
    let dir = std::env::var("FUZZ_TALLY_DIR").expect("FUZZ_TALLY_DIR=dir");
    let mut reached: Vec<(String, BTreeSet<String>, usize)> = Vec::new();
    let mut before: BTreeMap<String, usize> = authgate_fuzz::decide::tally();
    for entry in fs::read_dir(&dir).expect("corpus dir").flatten() {
        let data = fs::read(entry.path()).unwrap_or_default();
        authgate_fuzz::decide::check_decide_bytes(&data);
        let after = authgate_fuzz::decide::tally();
        let keys = after
            .iter()
            .filter(|(k, n)| before.get(*k).copied().unwrap_or(0) < **n)
            .map(|(k, _)| k.clone())
            .collect();
        reached.push((entry.path().display().to_string(), keys, data.len()));
        before = after;
    }
    let mut uncovered: BTreeSet<String> = reached.iter().flat_map(|r| r.1.clone()).collect();
    while !uncovered.is_empty() {
        let Some(best) = reached
            .iter()
            .max_by_key(|r| (r.1.intersection(&uncovered).count(), usize::MAX - r.2))
        else {
            break;
        };
        let gained: Vec<_> = best.1.intersection(&uncovered).cloned().collect();
        if gained.is_empty() {
            break;
        }
        println!("{}\t{} bytes\t{gained:?}", best.0, best.2);
        for key in gained {
            uncovered.remove(&key);
        }
    }
}
