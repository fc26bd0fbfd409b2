//! `frontend`: `GET /` calls `$BACKEND_URL` (default `http://backend/`, a cluster Service
//! that the runtime routes in process) with the `wasi:http/outgoing-handler` and answers
//! `200 frontend → <backend's status> <backend's body>`, or `502` with the error when the
//! call fails. Any other path is `404`.

#[path = "../../common/http.rs"]
mod http;

use wasi::http::types::{IncomingRequest, ResponseOutparam};

const TEXT: &str = "text/plain; charset=utf-8";

struct Frontend;

wasi::http::proxy::export!(Frontend);

impl wasi::exports::http::incoming_handler::Guest for Frontend {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = http::path_with_query(&request);
        if path.split('?').next() != Some("/") {
            http::respond(out, 404, TEXT, format!("frontend: no route for {path}; try GET /\n").as_bytes());
            return;
        }
        let url = std::env::var("BACKEND_URL").unwrap_or_else(|_| "http://backend/".to_owned());
        match http::get(&url) {
            Ok((status, body)) => {
                let mut text = format!("frontend → {status} ").into_bytes();
                text.extend_from_slice(&body);
                http::respond(out, 200, TEXT, &text);
            }
            Err(error) => http::respond(out, 502, TEXT, format!("frontend: calling {url}: {error}\n").as_bytes()),
        }
    }
}
