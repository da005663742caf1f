//! The host's serialized header map (proxy-wasm ABI): a little-endian u32 count, then a u32
//! name length and a u32 value length per header, then each name and value followed by a NUL.
//!
//! Hand-written instead of the SDK's reader for two reasons: the SDK unwraps `String::from_utf8`
//! on every value, so one header byte outside UTF-8 (HTTP allows obs-text, 0x80–0xFF) panics and
//! kills the VM; and it allocates two strings per header on every request. Here valid UTF-8 is
//! borrowed as it is, and anything else is decoded lossily (a credential spelled that way fails
//! to verify like any other wrong credential; a spoofed identity header keeps its name, so it is
//! still removed).

use std::borrow::Cow;

pub type Pair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The pairs in `bytes`, in order. None when the block is truncated or inconsistent.
pub fn decode(bytes: &[u8]) -> Option<Vec<Pair<'_>>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = usize::try_from(read_u32(bytes, 0)?).ok()?;
    let sizes_end = count.checked_mul(8)?.checked_add(4)?;
    let sizes = bytes.get(4..sizes_end)?;
    let mut pairs = Vec::with_capacity(count);
    let mut at = sizes_end;
    for entry in sizes.chunks_exact(8) {
        let name_len = usize::try_from(read_u32(entry, 0)?).ok()?;
        let value_len = usize::try_from(read_u32(entry, 4)?).ok()?;
        let (name, next) = field(bytes, at, name_len)?;
        let (value, next) = field(bytes, next, value_len)?;
        at = next;
        pairs.push((name, value));
    }
    // Bytes after the last field mean the sizes do not describe the block.
    (at == bytes.len()).then_some(pairs)
}

/// The pairs as plain string slices, for [`crate::core::request::Request`].
pub fn as_strs<'p>(pairs: &'p [Pair<'_>]) -> Vec<(&'p str, &'p str)> {
    pairs
        .iter()
        .map(|(n, v)| (n.as_ref(), v.as_ref()))
        .collect()
}

/// The block the host would send for these pairs (for tests and benchmarks).
pub fn encode(pairs: &[(&str, &str)]) -> Vec<u8> {
    encode_bytes(
        &pairs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect::<Vec<_>>(),
    )
}

pub fn encode_bytes(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let push_len = |out: &mut Vec<u8>, len: usize| {
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    };
    push_len(&mut out, pairs.len());
    for (n, v) in pairs {
        push_len(&mut out, n.len());
        push_len(&mut out, v.len());
    }
    for (n, v) in pairs {
        out.extend_from_slice(n);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

/// `len` bytes at `at`, then the NUL after them; the text and where the next field starts.
fn field(bytes: &[u8], at: usize, len: usize) -> Option<(Cow<'_, str>, usize)> {
    let end = at.checked_add(len)?;
    let raw = bytes.get(at..end)?;
    if bytes.get(end) != Some(&0) {
        return None;
    }
    // `from_utf8` first: its ASCII fast path is several times quicker than the lossy decoder.
    let text = match std::str::from_utf8(raw) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(raw),
    };
    Some((text, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_pairs_in_order_borrowing_utf8() {
        let block = encode_bytes(&[
            (b":path", b"/a"),
            (b"x-empty", b""),
            (b"x-note", "café".as_bytes()),
        ]);
        let pairs = decode(&block).unwrap();
        assert_eq!(
            as_strs(&pairs),
            vec![(":path", "/a"), ("x-empty", ""), ("x-note", "café")]
        );
        assert!(pairs
            .iter()
            .all(|(n, v)| matches!((n, v), (Cow::Borrowed(_), Cow::Borrowed(_)))));
        assert_eq!(decode(&[]).unwrap(), Vec::<Pair<'_>>::new());
    }

    #[test]
    fn bytes_outside_utf8_are_replaced_not_fatal() {
        let block = encode_bytes(&[
            (b"authorization", b"Bearer \xff\xfe.a.b"),
            (b"x-auth-roles", b"\x80"),
        ]);
        let pairs = decode(&block).unwrap();
        assert_eq!(
            as_strs(&pairs),
            vec![
                ("authorization", "Bearer \u{fffd}\u{fffd}.a.b"),
                ("x-auth-roles", "\u{fffd}")
            ]
        );
    }

    #[test]
    fn truncated_or_inconsistent_blocks_are_refused() {
        let block = encode_bytes(&[(b"a", b"b"), (b"cc", b"dd")]);
        for cut in 1..block.len() {
            assert_eq!(decode(&block[..cut]), None, "cut at {cut}");
        }
        let mut no_nul = block.clone();
        let last = no_nul.len() - 1;
        no_nul[last] = b'x';
        assert_eq!(decode(&no_nul), None);
        // A count far beyond the bytes present; bytes after the last field.
        assert_eq!(decode(&u32::MAX.to_le_bytes()), None);
        let mut trailing = block.clone();
        trailing.push(0);
        assert_eq!(decode(&trailing), None);
    }
}
