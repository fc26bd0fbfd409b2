//! Helpers shared by the HTTP examples (pulled in with `#[path]`, so no extra crate).

// Each example uses only some of these.
#![allow(dead_code)]

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, IncomingResponse, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};
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
    let _trailers = IncomingBody::finish(body);
    data
}

/// GETs `url` (`scheme://authority[/path][?query]`) with the `wasi:http/outgoing-handler`
/// and returns its status and whole body, or the error (a `wasi:http` error code such
/// as `HttpRequestDenied`, debug-printed).
pub fn get(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = url.split_once("://").ok_or("the url needs a scheme")?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let path = if path.is_empty() {
        "/".to_owned()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };

    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&scheme)).map_err(|()| "invalid scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "invalid authority")?;
    request.set_path_with_query(Some(&path)).map_err(|()| "invalid path")?;
    let body = request.body().map_err(|()| "request body taken twice")?;
    OutgoingBody::finish(body, None).map_err(|e| describe(&e))?;

    let future = outgoing_handler::handle(request, None).map_err(|e| describe(&e))?;
    let response = loop {
        match future.get() {
            Some(Ok(Ok(response))) => break response,
            Some(Ok(Err(error))) => return Err(describe(&error)),
            Some(Err(())) => return Err("the response was already taken".to_owned()),
            None => future.subscribe().block(),
        }
    };
    Ok((response.status(), read_response_body(&response)?))
}

fn read_response_body(response: &IncomingResponse) -> Result<Vec<u8>, String> {
    let body = response.consume().map_err(|()| "response body taken twice")?;
    let mut data = Vec::new();
    {
        let stream = body.stream().map_err(|()| "response stream taken twice")?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
            }
        }
    }
    let _trailers = IncomingBody::finish(body);
    Ok(data)
}

fn describe(error: &ErrorCode) -> String {
    format!("{error:?}")
}
