//! Request paths as rules see them and as the upstream will: `//`, `/./`, `/../`, `\`,
//! percent-encoded unreserved characters and `;` parameters must not move a request to a weaker
//! rule, whatever the HTTP connection manager normalises. The path is normalised here
//! (RFC 3986 §6.2.2: escapes of unreserved characters decoded, other escapes in upper case;
//! §5.2.4: dot segments removed; empty segments merged), and the request goes upstream with that
//! path, or is refused.
//!
//! Hand-written: URL crates normalise whole URLs for browsers (WHATWG rules, which keep `//`
//! and treat `%2e` differently) and none gives the segment-level view with `;` parameters that
//! rule matching needs.

use serde::Deserialize;

use crate::core::config_error::ConfigError;

pub mod raw {
    //! The paths section exactly as written.
    use serde::Deserialize;

    use super::Unnormalised;

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Paths {
        pub unnormalised: Option<Unnormalised>,
        pub allow_params: Option<bool>,
        pub allow_encoded_slash: Option<bool>,
    }
}

/// What to do with a request whose path is not in normalised form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unnormalised {
    /// Send it upstream with the normalised path (the one the rules judged).
    #[default]
    Rewrite,
    /// Answer 400.
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Paths {
    pub unnormalised: Unnormalised,
    /// `;` parameters are allowed: rules see each segment without them, the upstream gets them.
    pub allow_params: bool,
    /// `%2F` and `%5C` are allowed, and stay encoded (they never separate segments).
    pub allow_encoded_slash: bool,
}

impl Paths {
    pub fn compile(raw: Option<raw::Paths>) -> Paths {
        let raw = raw.unwrap_or_default();
        Paths {
            unnormalised: raw.unnormalised.unwrap_or_default(),
            allow_params: raw.allow_params.unwrap_or(false),
            allow_encoded_slash: raw.allow_encoded_slash.unwrap_or(false),
        }
    }
}

/// A path in normalised form: the one rules match (without `;` parameters) and the one the
/// upstream gets (with them). Both are the same string unless parameters are allowed and present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    pub matched: String,
    pub forwarded: String,
}

/// Why a path cannot be judged: the request is answered 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path (`*`, `http://…`, empty).
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// A control character, space, `#` or an escaped control character.
    BadCharacter,
    /// `;` while `allow_params` is off.
    Params,
    /// `%2F` or `%5C` while `allow_encoded_slash` is off.
    EncodedSlash,
}

impl PathError {
    pub fn describe(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request path must start with '/'",
            PathError::BadEscape => "the request path has a malformed percent-escape",
            PathError::BadCharacter => "the request path has a character that is not allowed",
            PathError::Params => "';' parameters are not allowed in request paths here",
            PathError::EncodedSlash => "encoded '/' or '\\' is not allowed in request paths here",
        }
    }
}

/// Normalises `path` (the part of `:path` before any `?`).
pub fn normalise(path: &str, options: Paths) -> Result<Normalised, PathError> {
    if !path.starts_with(['/', '\\']) {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(path, options)?;
    if !options.allow_params && decoded.contains(';') {
        return Err(PathError::Params);
    }
    // Segments between separators, each with its name (without parameters); empty ones (`//`)
    // are merged away.
    let mut kept: Vec<(&str, &str)> = Vec::new();
    let raw_segments: Vec<&str> = decoded.split(['/', '\\']).skip(1).collect();
    let last = raw_segments.len().saturating_sub(1);
    // A path that ends with a separator, or with a dot segment, names a directory.
    let mut trailing_slash = false;
    for (i, segment) in raw_segments.iter().enumerate() {
        let name = if options.allow_params {
            segment.split(';').next().unwrap_or("")
        } else {
            segment
        };
        match name {
            _ if segment.is_empty() => {}
            "." => {}
            ".." => {
                kept.pop();
            }
            _ => {
                kept.push((segment, name));
                continue;
            }
        }
        if i == last {
            trailing_slash = true;
        }
    }
    let join = |parts: &mut dyn Iterator<Item = &str>| {
        let mut out = String::with_capacity(path.len());
        let mut any = false;
        for part in parts {
            out.push('/');
            out.push_str(part);
            any = true;
        }
        if trailing_slash || !any {
            out.push('/');
        }
        out
    };
    let forwarded_path = join(&mut kept.iter().map(|(segment, _)| *segment));
    // A segment that is only parameters (`/;x/`) names nothing a rule could see.
    let matched_path = if options.allow_params {
        join(&mut kept.iter().map(|(_, name)| *name).filter(|n| !n.is_empty()))
    } else {
        forwarded_path.clone()
    };
    Ok(Normalised {
        matched: matched_path,
        forwarded: forwarded_path,
    })
}

/// Decodes escapes of unreserved characters (RFC 3986 §2.3), writes every other escape in upper
/// case, and refuses malformed escapes, control characters, spaces and `#`.
fn decode_unreserved(path: &str, options: Paths) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let value = hex_value(hex[0])
                .zip(hex_value(hex[1]))
                .map(|(high, low)| high << 4 | low)
                .ok_or(PathError::BadEscape)?;
            if is_unreserved(value) {
                out.push(value);
            } else if value < 0x20 || value == 0x7f {
                return Err(PathError::BadCharacter);
            } else if (value == b'/' || value == b'\\') && !options.allow_encoded_slash {
                return Err(PathError::EncodedSlash);
            } else {
                out.push(b'%');
                out.extend(hex.iter().map(u8::to_ascii_uppercase));
            }
            i += 3;
            continue;
        }
        if byte <= 0x20 || byte == 0x7f || byte == b'#' {
            return Err(PathError::BadCharacter);
        }
        out.push(byte);
        i += 1;
    }
    // Only ASCII was changed, at character boundaries, so the bytes are still UTF-8.
    String::from_utf8(out).map_err(|_| PathError::BadCharacter)
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// A rule's `match.path` or `match.prefix` must be written in normalised form, or it could never
/// match (requests are normalised before matching).
pub fn check_pattern(at: &str, pattern: &str) -> Result<(), ConfigError> {
    let options = Paths {
        allow_params: true,
        allow_encoded_slash: true,
        ..Paths::default()
    };
    match normalise(pattern, options) {
        Ok(normalised) if normalised.forwarded == pattern && !pattern.contains('\\') => Ok(()),
        Ok(normalised) => Err(ConfigError::new(
            at,
            format!(
                "requests are matched in normalised form, so this never matches; write {:?}",
                normalised.forwarded
            ),
        )),
        Err(error) => Err(ConfigError::new(at, error.describe())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, PathError> {
        normalise(path, Paths::default()).map(|n| n.forwarded)
    }

    #[test]
    fn rfc_3986_dot_segment_examples() {
        // RFC 3986 §5.2.4 and §5.4 (the absolute-path cases).
        assert_eq!(norm("/a/b/c/./../../g").as_deref(), Ok("/a/g"));
        assert_eq!(norm("/a/b/c/./g").as_deref(), Ok("/a/b/c/g"));
        assert_eq!(norm("/a/b/c/../g").as_deref(), Ok("/a/b/g"));
        assert_eq!(norm("/a/b/c/.").as_deref(), Ok("/a/b/c/"));
        assert_eq!(norm("/a/b/c/..").as_deref(), Ok("/a/b/"));
        assert_eq!(norm("/../g").as_deref(), Ok("/g"));
        assert_eq!(norm("/../../../g").as_deref(), Ok("/g"));
        assert_eq!(norm("/a/g.").as_deref(), Ok("/a/g."));
        assert_eq!(norm("/a/.g").as_deref(), Ok("/a/.g"));
        assert_eq!(norm("/a/g..").as_deref(), Ok("/a/g.."));
        assert_eq!(norm("/a/./g/.").as_deref(), Ok("/a/g/"));
        assert_eq!(norm("/").as_deref(), Ok("/"));
        assert_eq!(norm("/..").as_deref(), Ok("/"));
        assert_eq!(norm("/.").as_deref(), Ok("/"));
    }

    #[test]
    fn tricks_that_reach_a_weaker_rule_are_undone() {
        for (raw, want) in [
            ("//v1/admin", "/v1/admin"),
            ("/v1//admin", "/v1/admin"),
            ("/v1/./admin", "/v1/admin"),
            ("/v1/x/../admin", "/v1/admin"),
            ("/v1/%61dmin", "/v1/admin"),
            ("/v1/%2e%2e/v1/admin", "/v1/admin"),
            ("/v1/%2E/admin", "/v1/admin"),
            ("/public/..\\v1\\admin", "/v1/admin"),
            ("\\v1\\admin", "/v1/admin"),
            ("/v1/admin/", "/v1/admin/"),
            ("/v1/a%7e%5f%2d", "/v1/a~_-"),
        ] {
            assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn other_escapes_stay_encoded_in_upper_case() {
        assert_eq!(norm("/files/a%20b%3f").as_deref(), Ok("/files/a%20b%3F"));
        assert_eq!(norm("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(norm("/café").as_deref(), Ok("/café"));
    }

    #[test]
    fn refused_paths() {
        assert_eq!(norm(""), Err(PathError::NotAbsolute));
        assert_eq!(norm("*"), Err(PathError::NotAbsolute));
        assert_eq!(norm("http://h/x"), Err(PathError::NotAbsolute));
        assert_eq!(norm("/a%2"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%00"), Err(PathError::BadCharacter));
        assert_eq!(norm("/a b"), Err(PathError::BadCharacter));
        assert_eq!(norm("/a#frag"), Err(PathError::BadCharacter));
        assert_eq!(norm("/v1/admin;x=1"), Err(PathError::Params));
        assert_eq!(norm("/v1/%2fadmin"), Err(PathError::EncodedSlash));
        assert_eq!(norm("/v1/%5Cadmin"), Err(PathError::EncodedSlash));
    }

    #[test]
    fn allowed_params_are_kept_upstream_and_ignored_by_rules() {
        let options = Paths {
            allow_params: true,
            ..Paths::default()
        };
        let n = normalise("/v1;x=1/admin;jsessionid=2", options).unwrap();
        assert_eq!(n.matched, "/v1/admin");
        assert_eq!(n.forwarded, "/v1;x=1/admin;jsessionid=2");
        // A dot segment with parameters is still a dot segment (Tomcat's `..;`).
        let n = normalise("/public/..;/v1/admin", options).unwrap();
        assert_eq!(
            (n.matched.as_str(), n.forwarded.as_str()),
            ("/v1/admin", "/v1/admin")
        );
        let n = normalise("/v1/;x/admin", options).unwrap();
        assert_eq!(
            (n.matched.as_str(), n.forwarded.as_str()),
            ("/v1/admin", "/v1/;x/admin")
        );
    }

    #[test]
    fn allowed_encoded_slashes_stay_encoded() {
        let options = Paths {
            allow_encoded_slash: true,
            ..Paths::default()
        };
        let n = normalise("/repos/a%2fb/..", options).unwrap();
        assert_eq!(n.forwarded, "/repos/");
        let n = normalise("/repos/a%2fb", options).unwrap();
        assert_eq!(n.forwarded, "/repos/a%2Fb");
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for raw in [
            "//a/./b/../c%41/",
            "/x/..",
            "/%7e/%2e%2e/y",
            "/a\\b/../../c",
        ] {
            let once = norm(raw).unwrap();
            assert_eq!(norm(&once).unwrap(), once, "{raw}");
        }
    }

    #[test]
    fn patterns_must_be_normalised() {
        assert!(check_pattern("p", "/v1/").is_ok());
        assert!(check_pattern("p", "/files/a%3F").is_ok());
        assert!(check_pattern("p", "/v1//x").is_err());
        assert!(check_pattern("p", "/v1/./x").is_err());
        assert!(check_pattern("p", "/files/a%3f").is_err());
        assert!(check_pattern("p", "/v1/%61").is_err());
    }
}
