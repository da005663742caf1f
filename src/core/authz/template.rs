//! Templates for the OpenFGA dialect: strings with `{placeholders}` filled from the subject and
//! the request.

use crate::core::authz::service::CallInput;
use crate::core::config_error::ConfigError;

/// A string with `{placeholders}` filled from the subject and request, checked at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    SubjectId,
    SubjectKind,
    SubjectIssuer,
    UserEmail,
    ClientIp,
    Method,
    Host,
    Path,
    McpMethod,
    McpName,
}

impl Template {
    /// Whether the rendered text depends on the client's address.
    pub(crate) fn uses_client_ip(&self) -> bool {
        self.0.contains(&Part::ClientIp)
    }

    pub(crate) fn parse(text: &str, at: &str) -> Result<Template, ConfigError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| ConfigError::new(at, "unclosed '{' in template"))?;
            let name = &rest[open + 1..open + close];
            parts.push(match name {
                "subject.id" => Part::SubjectId,
                "subject.kind" => Part::SubjectKind,
                "subject.issuer" => Part::SubjectIssuer,
                "user_email" | "subject.email" => Part::UserEmail,
                "client_ip" => Part::ClientIp,
                "request.method" => Part::Method,
                "request.host" => Part::Host,
                "request.path" => Part::Path,
                "mcp.method" => Part::McpMethod,
                "mcp.name" => Part::McpName,
                other => {
                    return Err(ConfigError::new(
                        at,
                        format!(
                            "unknown placeholder {{{other}}}; use subject.id, subject.kind, \
                             subject.issuer, user_email, client_ip, request.method, request.host, \
                             request.path, mcp.method or mcp.name"
                        ),
                    ))
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if parts.is_empty() {
            return Err(ConfigError::new(at, "must not be empty"));
        }
        Ok(Template(parts))
    }

    pub(crate) fn render(&self, call: &CallInput<'_>) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::SubjectId => out.push_str(call.subject_id()),
                Part::SubjectKind => out.push_str(call.kind.name()),
                Part::SubjectIssuer => out.push_str(call.issuer().unwrap_or("")),
                Part::UserEmail => out.push_str(call.email().unwrap_or("")),
                Part::ClientIp => {
                    if let Some(ip) = call.client_ip {
                        out.push_str(&ip.to_string());
                    }
                }
                Part::Method => out.push_str(call.method),
                Part::Host => out.push_str(call.host),
                Part::Path => out.push_str(call.path),
                // Empty when no MCP rule judged the request.
                Part::McpMethod => out.push_str(call.mcp.map_or("", |c| c.method.as_str())),
                Part::McpName => {
                    out.push_str(call.mcp.and_then(|c| c.name.as_deref()).unwrap_or(""))
                }
            }
        }
        out
    }
}
