//! `crasher`: prints a line, waits `CRASH_AFTER_MS` ms (default 0), then exits with
//! `EXIT_CODE` (default 1), or traps if `TRAP=1`.
//!
//! WASI 0.2's original `wasi:cli/exit.exit` only carries ok/error (std's `process::exit`
//! maps every non-zero code to 1), so non-zero codes go through `exit-with-code` (stable
//! since WASI 0.2.12, linked by default in wasmtime-wasi 48, which turns it into an
//! `I32Exit(code)` error from `wasi:cli/run.run`).

use std::io::Write as _;
use std::time::Duration;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn main() {
    let code: i32 = env_or("EXIT_CODE", 1);
    let after: u64 = env_or("CRASH_AFTER_MS", 0);
    let trap = std::env::var("TRAP").is_ok_and(|v| v == "1");
    if trap {
        println!("crasher: trapping in {after} ms");
    } else {
        println!("crasher: exiting with {code} in {after} ms");
    }
    let _ = std::io::stdout().flush();
    if after > 0 {
        std::thread::sleep(Duration::from_millis(after));
    }
    if trap {
        // panic = "abort" (and wasm has no unwinding): this is a wasm trap.
        panic!("crasher: TRAP=1");
    }
    // Like a POSIX exit status, only the low 8 bits survive.
    match code & 0xff {
        0 => std::process::exit(0),
        status => wasi::cli::exit::exit_with_code(status as u8),
    }
    // `exit-with-code` does not return; if a host lets it, still fail.
    std::process::exit(1);
}
