//! Helpers shared by the HTTP examples (pulled in with `#[path]`, so no extra crate).

// Each example uses only some of these.
#![allow(dead_code)]

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasi::io::streams::StreamError;

/// Largest write `blocking-write-and-flush` accepts in one call.
const CHUNK: usize = 4096;

/// Sends a complete response with `status`, a `content-type` header and `body`.
pub fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers = Fields::new();
    headers.append("content-type", content_type.as_bytes()).expect("content-type is a valid header");
    headers.append("content-length", body.len().to_string().as_bytes()).expect("content-length is a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status code");
    let outgoing = response.body().expect("response body is taken once");
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = outgoing.write().expect("body stream is taken once");
        for chunk in body.chunks(CHUNK) {
            stream.blocking_write_and_flush(chunk).expect("write response body");
        }
    }
    OutgoingBody::finish(outgoing, None).expect("finish response body");
}

/// Sends a `200 text/plain` response.
pub fn respond_text(out: ResponseOutparam, body: &str) {
    respond(out, 200, "text/plain; charset=utf-8", body.as_bytes());
}

/// The request's path and query (`/` when the host gave none).
pub fn path_with_query(request: &IncomingRequest) -> String {
    request.path_with_query().unwrap_or_else(|| "/".to_owned())
}

/// The value of query parameter `key` parsed as a number, if present and valid.
pub fn query_u64(path_with_query: &str, key: &str) -> Option<u64> {
    let (_, query) = path_with_query.split_once('?')?;
    query.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == key)?.1.parse().ok()
}

/// Reads the whole request body.
pub fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut data = Vec::new();
    let Ok(body) = request.consume() else { return data };
    {
        let Ok(stream) = body.stream() else { return data };
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => panic!("reading request body: {}", e.to_debug_string()),
            }
        }
    }
    let _trailers = wasi::http::types::IncomingBody::finish(body);
    data
}
