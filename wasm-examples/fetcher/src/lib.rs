//! `fetcher`: `GET /?url=http://host[:port]/path` fetches the URL with the
//! `wasi:http/outgoing-handler` and answers `200` with the upstream status on the first
//! line and the upstream body after it, or `502` with the error code (`HttpRequestDenied`
//! when the pod may not reach that host).

#[path = "../../common/http.rs"]
mod http;

use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Fetcher;

wasi::http::proxy::export!(Fetcher);

impl wasi::exports::http::incoming_handler::Guest for Fetcher {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = http::path_with_query(&request);
        let Some(url) = query(&path, "url") else {
            http::respond(out, 400, "text/plain; charset=utf-8", b"usage: GET /?url=http://host[:port]/path\n");
            return;
        };
        match http::get(&url) {
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
