//! `cpu-burner`: spins for `?ms=N` milliseconds (default 100), then reports the iterations.

#[path = "../../common/http.rs"]
mod http;

use std::hint::black_box;
use std::time::{Duration, Instant};

use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct CpuBurner;

wasi::http::proxy::export!(CpuBurner);

impl wasi::exports::http::incoming_handler::Guest for CpuBurner {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let ms = http::query_u64(&http::path_with_query(&request), "ms").unwrap_or(100);
        let budget = Duration::from_millis(ms);
        let start = Instant::now();
        let mut iterations: u64 = 0;
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        // Check the clock every 4096 rounds of xorshift so the loop is mostly arithmetic.
        while start.elapsed() < budget {
            for _ in 0..4096 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state = black_box(state);
            }
            iterations += 4096;
        }
        http::respond_text(out, &format!("cpu-burner: {iterations} iterations in {ms} ms\n"));
    }
}
