//! Every call into the Envoy host lives here. Failures are logged and turned into safe
//! defaults; nothing in this file panics.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};

use crate::core::replies::Reply;

pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

pub fn debug_enabled() -> bool {
    matches!(
        hostcalls::get_log_level(),
        Ok(LogLevel::Trace | LogLevel::Debug)
    )
}

/// Randomness from the host (WASI `random_get`); 0 if it fails, which only makes the token
/// cache's bucket hash predictable, never the cache wrong.
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0,
    }
}

/// 32 bytes from the host's random source; None if it fails.
pub fn random_bytes() -> Option<[u8; 32]> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).ok().map(|()| bytes)
}

pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn set_tick_period(period: Duration) {
    if hostcalls::set_tick_period(period).is_err() {
        log(LogLevel::Error, "authgate: could not set the tick period");
    }
}

pub fn plugin_configuration(size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
        .ok()
        .flatten()
}

#[link(wasm_import_module = "env")]
extern "C" {
    // The SDK declares this import too, but its reader panics on header bytes outside UTF-8.
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// The request headers as the host serializes them (decoded by `core::header_pairs`); empty if
/// the host has none to give.
pub fn request_header_block() -> Vec<u8> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer to `size` bytes it allocated through the SDK's
    // `proxy_on_memory_allocate` (a boxed `[u8]` of exactly that length), and hands their
    // ownership to us; the SDK's own readers take them back the same way.
    unsafe {
        let status = proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size);
        if status != Status::Ok || data.is_null() {
            return Vec::new();
        }
        Vec::from_raw_parts(data, size, size)
    }
}

/// The downstream connection's address (`ip:port`).
pub fn source_address() -> Option<String> {
    hostcalls::get_property(vec!["source", "address"])
        .ok()
        .flatten()
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// The request body buffered so far (the effective context's).
pub fn request_body(size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
        .ok()
        .flatten()
}

/// Drops the first `size` bytes of the buffered request body (scanned, never forwarded).
pub fn clear_request_body(size: usize) {
    let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, size, &[]);
}

/// The upstream response's status (in the response-headers callback).
pub fn response_status() -> Option<u16> {
    let status = header_value(MapType::HttpResponseHeaders, ":status")?;
    std::str::from_utf8(&status).ok()?.parse().ok()
}

/// Whether the request has this header (its value is never read: it may not be UTF-8).
pub fn has_request_header(name: &str) -> bool {
    header_value(MapType::HttpRequestHeaders, name).is_some()
}

/// A request header's value, when it is valid UTF-8 (and the host lends the header map).
pub fn request_header(name: &str) -> Option<String> {
    let bytes = header_value(MapType::HttpRequestHeaders, name)?;
    String::from_utf8(bytes).ok()
}

#[link(wasm_import_module = "env")]
extern "C" {
    // The SDK declares these imports too, but its wrappers panic on any status but Ok: Envoy
    // answers BadArgument for a filter that already let the headers go on.
    fn proxy_get_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    fn proxy_remove_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
    ) -> Status;
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_add_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
}

fn header_value(map: MapType, name: &str) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: as in `request_header_block`: the host hands over `size` bytes it allocated
    // through the SDK's allocator.
    unsafe {
        let status =
            proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size);
        if status != Status::Ok || data.is_null() {
            return None;
        }
        Some(Vec::from_raw_parts(data, size, size))
    }
}

/// Header changes never panic: one the host refuses leaves the request as it is.
pub fn remove_request_header(name: &str) {
    // SAFETY: the pointer and length describe `name`, borrowed for the call.
    let _ = unsafe {
        proxy_remove_header_map_value(MapType::HttpRequestHeaders, name.as_ptr(), name.len())
    };
}

type WriteHeader = unsafe extern "C" fn(MapType, *const u8, usize, *const u8, usize) -> Status;

fn write_request_header(write: WriteHeader, name: &str, value: &str) {
    // SAFETY: both pointers and lengths describe borrowed strings, for the call only.
    let _ = unsafe {
        write(
            MapType::HttpRequestHeaders,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
}

pub fn set_request_header(name: &str, value: &str) {
    write_request_header(proxy_replace_header_map_value, name, value);
}

/// Adds a value (another line when the header is there already).
pub fn add_request_header(name: &str, value: &str) {
    write_request_header(proxy_add_header_map_value, name, value);
}

pub fn send_reply(reply: &Reply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let _ = hostcalls::send_http_response(
        u32::from(reply.status),
        headers,
        Some(reply.body.as_bytes()),
    );
}

pub fn resume_request() {
    let _ = hostcalls::resume_http_request();
}

/// Makes later host calls act on another context (a paused request, from the root context).
pub fn set_effective_context(context_id: u32) -> bool {
    hostcalls::set_effective_context(context_id).is_ok()
}

pub fn dispatch_get(cluster: &str, authority: &str, path: &str, timeout: Duration) -> Option<u32> {
    let headers = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", authority),
        ("accept", "application/json"),
        ("user-agent", "authgate"),
    ];
    hostcalls::dispatch_http_call(cluster, headers, None, vec![], timeout).ok()
}

/// POSTs JSON to a cluster; the token identifies the answer. None when the host refused the call.
pub fn dispatch_post(
    cluster: &str,
    authority: &str,
    path: &str,
    body: &[u8],
    request_id: Option<&str>,
    timeout: Duration,
) -> Option<u32> {
    let mut headers = vec![
        (":method", "POST"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/json"),
        ("accept", "application/json"),
        ("user-agent", "authgate"),
    ];
    if let Some(id) = request_id {
        headers.push(("x-request-id", id));
    }
    hostcalls::dispatch_http_call(cluster, headers, Some(body), vec![], timeout).ok()
}

/// A call with headers the core built (`:method`, `:path`, `:authority` among them).
pub fn dispatch(
    cluster: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
) -> Option<u32> {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    hostcalls::dispatch_http_call(cluster, headers, Some(body), vec![], timeout).ok()
}

/// Status and body of the callout response being delivered now; None if the body is too big.
pub fn callout_response(body_size: usize, max_body: usize) -> (u16, Option<Vec<u8>>) {
    let status = header_value(MapType::HttpCallResponseHeaders, ":status")
        .and_then(|s| std::str::from_utf8(&s).ok()?.parse().ok())
        .unwrap_or(0);
    if body_size > max_body {
        return (status, None);
    }
    let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default();
    (status, Some(body))
}

pub fn shared_get(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

/// Compare-and-swap write; `cas` None writes unconditionally. False when another VM won.
pub fn shared_set(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    hostcalls::set_shared_data(key, Some(value), cas).is_ok()
}

pub fn define_counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

pub fn define_gauge(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Gauge, name).ok()
}

/// Adds `delta` (possibly negative) to a gauge or counter.
pub fn add_to_metric(metric_id: u32, delta: i64) {
    let _ = hostcalls::increment_metric(metric_id, delta);
}

pub fn define_histogram(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Histogram, name).ok()
}

pub fn record(metric_id: u32, value: u64) {
    let _ = hostcalls::record_metric(metric_id, value);
}

pub fn increment_by(metric_id: u32, count: u64) {
    let _ = hostcalls::increment_metric(metric_id, i64::try_from(count).unwrap_or(i64::MAX));
}
