//! The client's address: the downstream connection's, or taken from `x-forwarded-for` behind
//! trusted proxies, the way Envoy's `xff_num_trusted_hops` does.

use std::net::{IpAddr, Ipv6Addr};

use crate::core::config_error::ConfigError;
use crate::core::request::Request;

pub mod raw {
    //! The client_ip section exactly as written.
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ClientIp {
        pub from: String,
        pub trusted_hops: Option<u32>,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientIpSource {
    /// The downstream connection's address.
    #[default]
    Source,
    /// The (N+1)-th address from the right of `x-forwarded-for` (0 = the rightmost, the one
    /// the nearest proxy appended); the connection's address when the header is shorter.
    ForwardedFor { trusted_hops: u32 },
}

impl ClientIpSource {
    pub fn compile(raw: Option<raw::ClientIp>) -> Result<ClientIpSource, ConfigError> {
        let Some(raw) = raw else {
            return Ok(ClientIpSource::Source);
        };
        match (raw.from.as_str(), raw.trusted_hops) {
            ("source", None) => Ok(ClientIpSource::Source),
            ("source", Some(_)) => Err(ConfigError::new(
                "client_ip.trusted_hops",
                "only applies with \"from\": \"x-forwarded-for\"",
            )),
            ("x-forwarded-for", hops) => Ok(ClientIpSource::ForwardedFor {
                trusted_hops: hops.unwrap_or(0),
            }),
            (other, _) => Err(ConfigError::new(
                "client_ip.from",
                format!("unknown source {other:?}; expected \"source\" or \"x-forwarded-for\""),
            )),
        }
    }

    pub fn client_ip(self, request: &Request<'_>) -> Option<IpAddr> {
        let from_header = match self {
            ClientIpSource::Source => None,
            ClientIpSource::ForwardedFor { trusted_hops } => {
                forwarded_for(request, trusted_hops).and_then(parse_address)
            }
        };
        from_header.or_else(|| request.source_address().and_then(parse_address))
    }
}

fn forwarded_for<'a>(request: &Request<'a>, trusted_hops: u32) -> Option<&'a str> {
    let entries: Vec<&str> = request
        .headers()
        .filter(|(name, _)| *name == "x-forwarded-for")
        .flat_map(|(_, value)| value.split(','))
        .map(str::trim)
        .collect();
    let from_right = usize::try_from(trusted_hops).ok()?;
    let index = entries.len().checked_sub(from_right.checked_add(1)?)?;
    entries.get(index).copied()
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80`; IPv4-mapped IPv6 reads as IPv4.
pub fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let ip = if let Ok(ip) = text.parse::<IpAddr>() {
        ip
    } else if let Some(rest) = text.strip_prefix('[') {
        rest.split_once(']')?.0.parse().ok()?
    } else {
        let (host, port) = text.rsplit_once(':')?;
        port.parse::<u16>().ok()?;
        host.parse().ok()?
    };
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    })
}

/// The unit the backoff counts failures for: one IPv4 address, or one IPv6 /64 (a single host
/// usually holds a whole /64, so counting per address would let it rotate freely).
pub fn backoff_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            format!("{}/64", Ipv6Addr::from(segments))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_counts_trusted_hops_from_the_right() {
        let h = [
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
            ("x-forwarded-for", "10.0.0.1"),
        ];
        let r = Request::new(&h).with_source_address(Some("127.0.0.1:5000"));
        let pick = |hops| {
            ClientIpSource::ForwardedFor { trusted_hops: hops }
                .client_ip(&r)
                .map(|ip| ip.to_string())
        };
        assert_eq!(pick(0).as_deref(), Some("10.0.0.1"));
        assert_eq!(pick(1).as_deref(), Some("203.0.113.7"));
        assert_eq!(pick(2).as_deref(), Some("6.6.6.6"));
        // Shorter than promised: the connection's address, never a spoofable entry.
        assert_eq!(pick(3).as_deref(), Some("127.0.0.1"));
        assert_eq!(
            ClientIpSource::Source
                .client_ip(&r)
                .map(|ip| ip.to_string())
                .as_deref(),
            Some("127.0.0.1")
        );
    }

    #[test]
    fn addresses_with_ports_and_v6_prefixes() {
        let parse = |t| parse_address(t).map(backoff_key);
        assert_eq!(
            parse("[2001:db8:1:2:3:4:5:6]:443").as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            parse("2001:db8:1:2::9").as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(parse("::ffff:192.0.2.1").as_deref(), Some("192.0.2.1"));
        assert_eq!(parse("192.0.2.1:8080").as_deref(), Some("192.0.2.1"));
        assert_eq!(parse("not-an-ip"), None);
        assert_eq!(parse("unknown:80"), None);
    }

    #[test]
    fn config_validation() {
        let compile = |json: serde_json::Value| {
            ClientIpSource::compile(Some(serde_json::from_value(json).unwrap()))
        };
        assert_eq!(
            compile(serde_json::json!({"from": "x-forwarded-for", "trusted_hops": 1})),
            Ok(ClientIpSource::ForwardedFor { trusted_hops: 1 })
        );
        assert_eq!(
            compile(serde_json::json!({"from": "xff"}))
                .unwrap_err()
                .path,
            "client_ip.from"
        );
    }
}
