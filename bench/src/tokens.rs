//! The benchmark's credentials: JWTs signed by `jsonwebtoken` with the committed fixture keys
//! (the same keys authgate and jwt_authn are configured with), written one per line for the load
//! generator.

use std::path::{Path, PathBuf};

use authgate_integration::plugin::corp_claims;
use authgate_integration::{FixtureKey, TokenBuilder};

/// `count` distinct tokens signed with `key`: each has its own `sub` and `jti`, so its SHA-256
/// (authgate's cache key) differs. Signed on every core (RSA signing is the slow part).
pub fn distinct(key: FixtureKey, count: usize) -> Vec<String> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let per_thread = count.div_ceil(threads).max(1);
    let ranges: Vec<(usize, usize)> = (0..count)
        .step_by(per_thread)
        .map(|start| (start, (start + per_thread).min(count)))
        .collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = ranges
            .iter()
            .map(|&(start, end)| {
                scope.spawn(move || (start..end).map(|i| one(key, i)).collect::<Vec<_>>())
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|_| panic!("signing tokens panicked"))
            })
            .collect()
    })
}

/// Token number `index` for `key`.
pub fn one(key: FixtureKey, index: usize) -> String {
    let subject = format!("bench-{}-{index}", key.kid());
    TokenBuilder::new(key)
        .claims(corp_claims(&subject))
        .claim("jti", format!("{}-{index}", key.kid()))
        .sign()
}

/// Writes `tokens` one per line to `<dir>/<name>.txt`.
pub fn write(dir: &Path, name: &str, tokens: &[String]) -> Result<PathBuf, String> {
    let path = dir.join(format!("{name}.txt"));
    let mut text = tokens.join("\n");
    text.push('\n');
    std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_tokens_are_distinct_and_in_order() {
        let tokens = distinct(FixtureKey::Ed1, 9);
        assert_eq!(tokens.len(), 9);
        let unique: std::collections::BTreeSet<&String> = tokens.iter().collect();
        assert_eq!(unique.len(), 9);
        for (i, token) in tokens.iter().enumerate() {
            let claims = authgate_integration::tokens::decode_payload(token).expect("payload");
            assert_eq!(claims["jti"], format!("ed-1-{i}"));
        }
    }
}
