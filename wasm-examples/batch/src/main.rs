//! `batch`: counts the primes below `LIMIT` (default 10000), prints its args, exits 0.

fn count_primes_below(limit: usize) -> usize {
    if limit < 3 {
        return 0;
    }
    let mut composite = vec![false; limit];
    let mut count = 0;
    for n in 2..limit {
        if !composite[n] {
            count += 1;
            for multiple in (n * n..limit).step_by(n) {
                composite[multiple] = true;
            }
        }
    }
    count
}

fn main() {
    let limit: usize = std::env::var("LIMIT").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(10_000);
    println!("batch: {} primes below {limit}", count_primes_below(limit));
    for (i, arg) in std::env::args().enumerate() {
        println!("arg[{i}]: {arg}");
    }
}
