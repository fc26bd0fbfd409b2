//! `flotilla`: the server and the command-line client in one binary.

use clap::Parser as _;

/// mimalloc rather than glibc's malloc: the server's hot paths (JSON objects on every
/// API write, watch fan-out) are many small allocations freed on other threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = flotilla::cli::Cli::parse();
    match cli.execute().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
