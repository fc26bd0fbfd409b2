//! `logger`: prints `log line N` to stdout every `INTERVAL_MS` milliseconds (default 1000;
//! 0 floods its log as fast as it can) and every 5th line to stderr, forever, or `LINES`
//! lines and then exits 0.

use std::io::Write as _;
use std::time::Duration;

fn main() {
    let lines: Option<u64> = std::env::var("LINES").ok().and_then(|v| v.trim().parse().ok());
    let interval: u64 = std::env::var("INTERVAL_MS").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(1000);
    let mut n: u64 = 1;
    loop {
        println!("log line {n}");
        let _ = std::io::stdout().flush();
        if n.is_multiple_of(5) {
            eprintln!("log line {n}");
        }
        if lines.is_some_and(|max| n >= max) {
            break;
        }
        n += 1;
        if interval > 0 {
            std::thread::sleep(Duration::from_millis(interval));
        }
    }
}
