//! MCP requests as rules see them: the JSON-RPC call(s) in a request body (a batch holds at most
//! 32), the `Mcp-Method`/`Mcp-Name` headers that must agree with the body (a name may arrive
//! wrapped as `=?base64?…?=`), and `match.mcp` (methods, and tool names as globs). A request is
//! never judged on its headers alone: the engine asks for the body (`Step::ReadBody`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::core::policy::NameGlob;
use crate::core::replies::Reply;

/// The most calls a batch may hold.
pub const MAX_BATCH: usize = 32;

/// One JSON-RPC call: its method and, for the methods that name a tool, prompt or resource,
/// that name (`params.uri` for `resources/…`, else `params.name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpError {
    NotJsonRpc(&'static str),
    BatchTooLarge,
    /// The headers say one thing and the body another.
    Mismatch(&'static str),
}

impl McpError {
    fn message(&self) -> &'static str {
        match self {
            McpError::NotJsonRpc(why) | McpError::Mismatch(why) => why,
            McpError::BatchTooLarge => "a batch holds at most 32 calls",
        }
    }

    /// A JSON-RPC-shaped 400 (error code -32600, invalid request).
    pub fn reply(&self) -> Reply {
        jsonrpc_error(400, -32600, self.message())
    }
}

/// A JSON-RPC-shaped error reply (no request id can be known: the body is not read).
fn jsonrpc_error(status: u16, code: i32, message: &str) -> Reply {
    Reply {
        status,
        headers: vec![("content-type".to_string(), "application/json".to_string())],
        body: json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}})
            .to_string(),
    }
}

/// A body past `mcp.max_body_bytes`: 413.
pub fn too_large(max_bytes: usize) -> Reply {
    jsonrpc_error(
        413,
        -32600,
        &format!(
            "the request body exceeds the gateway's limit of {max_bytes} bytes for MCP requests"
        ),
    )
}

/// The body did not arrive in time: 408.
pub fn too_slow() -> Reply {
    jsonrpc_error(408, -32600, "the request body did not arrive in time")
}

/// The body cannot be read here (no body_hold companion in this VM, or too many held): 503.
pub fn unreadable(why: &str) -> Reply {
    let mut reply = jsonrpc_error(503, -32603, why);
    reply
        .headers
        .push(("retry-after".to_string(), "1".to_string()));
    reply
}

/// The calls in a request body: one object, or a batch (an array of 1 to 32). JSON-RPC
/// responses a client posts back (to a server's sampling or elicitation request) are no calls.
/// A body that repeats a member name anywhere is refused: parsers disagree on which one counts.
pub fn calls(body: &[u8]) -> Result<Vec<Call>, McpError> {
    let value = crate::core::json_strict::parse(body).ok_or(McpError::NotJsonRpc(
        "the body is not JSON (or repeats a member name)",
    ))?;
    let items = match value {
        Value::Array(items) if items.is_empty() => {
            return Err(McpError::NotJsonRpc("an empty batch"))
        }
        Value::Array(items) if items.len() > MAX_BATCH => return Err(McpError::BatchTooLarge),
        Value::Array(items) => items,
        single => vec![single],
    };
    let mut calls = Vec::with_capacity(items.len());
    for item in &items {
        let Some(object) = item.as_object() else {
            return Err(McpError::NotJsonRpc("a JSON-RPC message is an object"));
        };
        let method = match object.get("method") {
            Some(Value::String(method)) => method,
            None if object.contains_key("result") || object.contains_key("error") => continue,
            _ => return Err(McpError::NotJsonRpc("a JSON-RPC call needs a method")),
        };
        // The member the MCP spec mirrors into `Mcp-Name`: a resource's `uri`, else `name`.
        let key = if method.starts_with("resources/") {
            "uri"
        } else {
            "name"
        };
        let name = match object.get("params") {
            None | Some(Value::Null) => None,
            Some(Value::Object(params)) => match params.get(key) {
                None => None,
                Some(Value::String(name)) => Some(name.clone()),
                Some(_) => return Err(McpError::NotJsonRpc("params.name is not a string")),
            },
            Some(_) => return Err(McpError::NotJsonRpc("params is not an object")),
        };
        calls.push(Call {
            method: method.clone(),
            name,
        });
    }
    Ok(calls)
}

/// An `Mcp-Name` value as sent: plain, or `=?base64?<base64 of UTF-8>?=`.
pub fn header_name(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(encoded) => STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(value.to_string()),
    }
}

/// The headers, where sent, must say what the body says: a single call's method and name.
/// Clients that send none are judged on the body alone.
pub fn check_headers(
    calls: &[Call],
    method: Option<&str>,
    name: Option<&str>,
) -> Result<(), McpError> {
    if method.is_none() && name.is_none() {
        return Ok(());
    }
    let [call] = calls else {
        return Err(McpError::Mismatch(
            "Mcp-Method and Mcp-Name name one call, not a batch",
        ));
    };
    if method.is_some_and(|m| m != call.method) {
        return Err(McpError::Mismatch(
            "Mcp-Method does not match the body's method",
        ));
    }
    if let Some(name) = name {
        let decoded = header_name(name).ok_or(McpError::Mismatch("Mcp-Name is not valid"))?;
        if call.name.as_deref() != Some(decoded.as_str()) {
            return Err(McpError::Mismatch(
                "Mcp-Name does not match the body's name",
            ));
        }
    }
    Ok(())
}

/// A rule's `match.mcp`: methods (exact), and names as globs (any name when none listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpMatch {
    pub methods: Vec<String>,
    pub names: Vec<NameGlob>,
}

impl McpMatch {
    pub fn matches(&self, call: &Call) -> bool {
        (self.methods.is_empty() || self.methods.contains(&call.method))
            && (self.names.is_empty()
                || call
                    .name
                    .as_deref()
                    .is_some_and(|name| self.names.iter().any(|glob| glob.matches(name))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools_call(name: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": name, "arguments": {}}})
    }

    #[test]
    fn calls_headers_and_matches() {
        let one = calls(tools_call("deploy_prod").to_string().as_bytes()).unwrap();
        assert_eq!(
            one,
            vec![Call {
                method: "tools/call".into(),
                name: Some("deploy_prod".into())
            }]
        );
        let batch = json!([tools_call("a"), {"jsonrpc": "2.0", "method": "tools/list", "id": 2}]);
        assert_eq!(calls(batch.to_string().as_bytes()).unwrap().len(), 2);
        let too_many: Vec<Value> = (0..33).map(|i| tools_call(&format!("t{i}"))).collect();
        assert_eq!(
            calls(json!(too_many).to_string().as_bytes()),
            Err(McpError::BatchTooLarge)
        );
        assert!(calls(b"[]").is_err() && calls(b"{").is_err() && calls(br#"{"id": 1}"#).is_err());
        // A name said twice means what each parser picks: refused.
        let twice =
            br#"{"method": "tools/call", "params": {"name": "read", "name": "deploy_prod"}}"#;
        assert!(calls(twice).is_err());
        assert!(calls(br#"{"method": "tools/call", "params": {"name": 7}}"#).is_err());
        // A resource is named by its uri, whatever else params holds.
        let read =
            br#"{"method": "resources/read", "params": {"uri": "file:///a", "name": "deploy_x"}}"#;
        assert_eq!(calls(read).unwrap()[0].name.as_deref(), Some("file:///a"));
        // A response posted back is no call; a batch of them holds none.
        assert_eq!(
            calls(br#"{"jsonrpc": "2.0", "id": 3, "result": {}}"#),
            Ok(vec![])
        );

        assert_eq!(check_headers(&one, None, None), Ok(()));
        assert_eq!(
            check_headers(&one, Some("tools/call"), Some("deploy_prod")),
            Ok(())
        );
        let wrapped = format!("=?base64?{}?=", STANDARD.encode("deploy_prod"));
        assert_eq!(
            check_headers(&one, Some("tools/call"), Some(&wrapped)),
            Ok(())
        );
        assert!(check_headers(&one, Some("tools/list"), None).is_err());
        assert!(check_headers(&one, Some("tools/call"), Some("read_docs")).is_err());
        assert!(check_headers(&one, None, Some("=?base64?%%?=")).is_err());
        let batch = calls(
            json!([tools_call("a"), tools_call("b")])
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert!(check_headers(&batch, Some("tools/call"), None).is_err());

        let deploy = McpMatch {
            methods: vec!["tools/call".into()],
            names: vec![NameGlob::new("deploy_*").unwrap()],
        };
        assert!(deploy.matches(&one[0]));
        assert!(!deploy.matches(&Call {
            method: "tools/call".into(),
            name: Some("read".into())
        }));
        assert!(!deploy.matches(&Call {
            method: "tools/list".into(),
            name: None
        }));
        assert!(!deploy.matches(&Call {
            method: "tools/call".into(),
            name: Some("deploy_".into())
        }));
        let reply = McpError::Mismatch("x").reply();
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            (reply.status, body["error"]["code"].clone()),
            (400, json!(-32600))
        );
    }
}
