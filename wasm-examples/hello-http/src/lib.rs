//! `hello-http`: answers every request with `$GREETING from $POD_NAME`.

#[path = "../../common/http.rs"]
mod http;

use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct HelloHttp;

wasi::http::proxy::export!(HelloHttp);

impl wasi::exports::http::incoming_handler::Guest for HelloHttp {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello from Flotilla".to_owned());
        let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".to_owned());
        http::respond_text(out, &format!("{greeting} from {pod}\n"));
    }
}
