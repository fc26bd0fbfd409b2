//! `echo`: answers with the request's method, path, headers and body; and, under `/fs/`,
//! reads and writes files through the WASI filesystem (the pod's preopened directories):
//!
//! - `GET /fs/<path>`: `200` with the contents of `/<path>`, or `404` with the error;
//! - `PUT /fs/<path>`: writes the body to `/<path>`: `201`, or `403` (read-only or not
//!   permitted) / `500` with the error.

#[path = "../../common/http.rs"]
mod http;

use std::fmt::Write as _;
use std::io::ErrorKind;

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
        let path_with_query = http::path_with_query(&request);
        let path = path_with_query.split_once('?').map_or(path_with_query.as_str(), |(path, _)| path);
        if let Some(file) = path.strip_prefix("/fs/") {
            let file = format!("/{file}");
            match method.as_str() {
                "GET" => read_file(out, &file),
                "PUT" => write_file(out, &file, &http::read_body(&request)),
                _ => http::respond(out, 405, "text/plain; charset=utf-8", b"use GET or PUT under /fs/\n"),
            }
            return;
        }
        let mut text = format!("{method} {path_with_query}\n");
        for (name, value) in request.headers().entries() {
            let _ = writeln!(text, "{name}: {}", String::from_utf8_lossy(&value));
        }
        text.push('\n');
        let mut body = text.into_bytes();
        body.extend_from_slice(&http::read_body(&request));
        http::respond(out, 200, "text/plain; charset=utf-8", &body);
    }
}

fn read_file(out: ResponseOutparam, file: &str) {
    match std::fs::read(file) {
        Ok(contents) => http::respond(out, 200, "application/octet-stream", &contents),
        Err(error) => http::respond(out, 404, "text/plain; charset=utf-8", format!("{file}: {error}\n").as_bytes()),
    }
}

fn write_file(out: ResponseOutparam, file: &str, contents: &[u8]) {
    match std::fs::write(file, contents) {
        Ok(()) => http::respond(out, 201, "text/plain; charset=utf-8", format!("wrote {file}\n").as_bytes()),
        Err(error) => {
            let status = match error.kind() {
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => 403,
                _ => 500,
            };
            http::respond(out, status, "text/plain; charset=utf-8", format!("{file}: {error}\n").as_bytes());
        }
    }
}
