//! `fetcher`: `GET /?url=http://host[:port]/path` fetches the URL with the
//! `wasi:http/outgoing-handler` and answers `200` with the upstream status on the first
//! line and the upstream body after it, or `502` with the error code (`HttpRequestDenied`
//! when the pod may not reach that host).

#[path = "../../common/http.rs"]
mod http;

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, IncomingResponse, OutgoingBody, OutgoingRequest,
    ResponseOutparam, Scheme,
};
use wasi::io::streams::StreamError;

struct Fetcher;

wasi::http::proxy::export!(Fetcher);

impl wasi::exports::http::incoming_handler::Guest for Fetcher {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = http::path_with_query(&request);
        let Some(url) = query(&path, "url") else {
            http::respond(out, 400, "text/plain; charset=utf-8", b"usage: GET /?url=http://host[:port]/path\n");
            return;
        };
        match fetch(&url) {
            Ok((status, body)) => {
                let mut text = format!("{status}\n").into_bytes();
                text.extend_from_slice(&body);
                http::respond(out, 200, "text/plain; charset=utf-8", &text);
            }
            Err(error) => {
                http::respond(out, 502, "text/plain; charset=utf-8", format!("fetching {url}: {error}\n").as_bytes())
            }
        }
    }
}

/// GETs `url` and returns its status and whole body.
fn fetch(url: &str) -> Result<(u16, Vec<u8>), String> {
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
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;

    let future = outgoing_handler::handle(request, None).map_err(|e| describe(&e))?;
    let response = loop {
        match future.get() {
            Some(Ok(Ok(response))) => break response,
            Some(Ok(Err(error))) => return Err(describe(&error)),
            Some(Err(())) => return Err("the response was already taken".to_owned()),
            None => future.subscribe().block(),
        }
    };
    Ok((response.status(), read_body(&response)?))
}

fn read_body(response: &IncomingResponse) -> Result<Vec<u8>, String> {
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

/// Query parameter `key`, percent-decoded.
fn query(path_with_query: &str, key: &str) -> Option<String> {
    let (_, query) = path_with_query.split_once('?')?;
    let (_, value) = query.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == key)?;
    let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match (byte, hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(hi), Some(lo)) => {
                decoded.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                decoded.push(b' ');
                i += 1;
            }
            _ => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}
