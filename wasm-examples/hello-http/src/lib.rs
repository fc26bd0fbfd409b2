//! `hello-http`: answers every request with `$GREETING from $POD_NAME` (the pod's name
//! from `$HOSTNAME` when `POD_NAME` is unset, as the runtime sets it).

#[path = "../../common/http.rs"]
mod http;

use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct HelloHttp;

wasi::http::proxy::export!(HelloHttp);

impl wasi::exports::http::incoming_handler::Guest for HelloHttp {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello from Flotilla".to_owned());
        let pod =
            std::env::var("POD_NAME").or_else(|_| std::env::var("HOSTNAME")).unwrap_or_else(|_| "unknown".to_owned());
        http::respond_text(out, &format!("{greeting} from {pod}\n"));
    }
}
