//! The list, watch, get and delete query parameters (`labelSelector`, `fieldSelector`,
//! `limit`, `continue`, `resourceVersion`, `timeoutSeconds`, `gracePeriodSeconds`,
//! `propagationPolicy`, ...), through the server's real router over an in-memory
//! connection. The first byte picks the resource, the second the verb; the rest is the
//! query string. Deletes are made dry runs (`dryRun=All` last: the last value wins).
//! No answer may be a 5xx, and every request must be answered.
#![no_main]

use bytes::Bytes;
use flotilla_fuzz::{cluster, request};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;

/// The bytes a query string may hold as they are; others are percent-encoded, so every
/// input is a valid URI and `&`, `=`, `%` and `+` stay the fuzzer's to place.
fn query_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

fuzz_target!(|data: &[u8]| {
    let [which, verb, query @ ..] = data else { return };
    let cluster = cluster();
    let (rt, ns, name) = &cluster.objects[usize::from(*which) % cluster.objects.len()];
    let prefix = if rt.group.is_empty() { "/api/v1".to_string() } else { format!("/apis/{}/{}", rt.group, rt.version) };
    let scope = ns.map(|ns| format!("/namespaces/{ns}")).unwrap_or_default();
    let mut query: String =
        query.iter().map(|&b| if query_byte_ok(b) { char::from(b).to_string() } else { format!("%{b:02X}") }).collect();
    let (method, path, watch) = match verb % 6 {
        0 => ("GET", format!("{prefix}{scope}/{}", rt.plural), false),
        1 => ("GET", format!("{prefix}/{}", rt.plural), false),
        2 => ("GET", format!("{prefix}/watch{scope}/{}", rt.plural), true),
        3 => ("GET", format!("{prefix}{scope}/{}/{name}", rt.plural), false),
        4 => ("DELETE", format!("{prefix}{scope}/{}/{name}", rt.plural), false),
        _ => ("DELETE", format!("{prefix}{scope}/{}", rt.plural), false),
    };
    if method == "DELETE" {
        query.push_str("&dryRun=All");
    }
    // `watch=true` in the query makes a list a watch, whose body does not end.
    let watch = watch || query.contains("watch");
    let Ok(req) = http::Request::builder().method(method).uri(format!("{path}?{query}")).body(Full::new(Bytes::new()))
    else {
        return;
    };
    let (status, body) = cluster.runtime.block_on(request(&cluster.router, req, watch));
    assert!(status < 500, "{method} {path}?{query} answered {status}: {}", String::from_utf8_lossy(&body));
});
