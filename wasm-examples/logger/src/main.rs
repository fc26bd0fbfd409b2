//! `logger`: prints `log line N` to stdout every second (and every 5th line to stderr),
//! forever, or `LINES` lines and then exits 0.

use std::io::Write as _;
use std::time::Duration;

fn main() {
    let lines: Option<u64> = std::env::var("LINES").ok().and_then(|v| v.trim().parse().ok());
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
        std::thread::sleep(Duration::from_secs(1));
    }
}
