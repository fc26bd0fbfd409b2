//! `mem-hog`: allocates `?mb=N` MiB (default 64) and touches every page, so a pod's memory
//! limit makes it trap; with `&hold_ms=M` it holds the memory M ms before answering, so
//! concurrent requests hold theirs at once.

#[path = "../../common/http.rs"]
mod http;

use std::hint::black_box;

use wasi::http::types::{IncomingRequest, ResponseOutparam};

/// Touch one byte per 4 KiB (host pages are smaller than wasm's 64 KiB ones).
const PAGE: usize = 4096;

struct MemHog;

wasi::http::proxy::export!(MemHog);

impl wasi::exports::http::incoming_handler::Guest for MemHog {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let mb = http::query_u64(&http::path_with_query(&request), "mb").unwrap_or(64);
        let len = usize::try_from(mb).ok().and_then(|mb| mb.checked_mul(1024 * 1024)).expect("size fits in memory");
        // An allocation failure aborts, which traps the instance: that is the point.
        let mut buf = vec![0u8; len];
        for i in (0..len).step_by(PAGE) {
            buf[i] = (i / PAGE) as u8;
        }
        let checksum = buf.iter().step_by(PAGE).fold(0u64, |acc, b| acc.wrapping_add(u64::from(*b)));
        black_box(checksum);
        if let Some(hold) = http::query_u64(&http::path_with_query(&request), "hold_ms") {
            std::thread::sleep(std::time::Duration::from_millis(hold));
        }
        black_box(&buf);
        http::respond_text(out, &format!("mem-hog: allocated {mb} MiB ({len} bytes)\n"));
    }
}
