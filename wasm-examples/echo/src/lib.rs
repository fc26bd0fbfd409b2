//! `echo`: answers with the request's method, path, headers and body.

#[path = "../../common/http.rs"]
mod http;

use std::fmt::Write as _;

use wasi::http::types::{IncomingRequest, Method, ResponseOutparam};

struct Echo;

wasi::http::proxy::export!(Echo);

impl wasi::exports::http::incoming_handler::Guest for Echo {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let method = match request.method() {
            Method::Get => "GET".to_owned(),
            Method::Head => "HEAD".to_owned(),
            Method::Post => "POST".to_owned(),
            Method::Put => "PUT".to_owned(),
            Method::Delete => "DELETE".to_owned(),
            Method::Connect => "CONNECT".to_owned(),
            Method::Options => "OPTIONS".to_owned(),
            Method::Trace => "TRACE".to_owned(),
            Method::Patch => "PATCH".to_owned(),
            Method::Other(other) => other,
        };
        let mut text = format!("{method} {}\n", http::path_with_query(&request));
        for (name, value) in request.headers().entries() {
            let _ = writeln!(text, "{name}: {}", String::from_utf8_lossy(&value));
        }
        text.push('\n');
        let mut body = text.into_bytes();
        body.extend_from_slice(&http::read_body(&request));
        http::respond(out, 200, "text/plain; charset=utf-8", &body);
    }
}
