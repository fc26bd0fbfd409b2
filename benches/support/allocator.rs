//! The allocator the `flotilla` binary ships with (see `crates/flotilla/src/main.rs`), so
//! that what runs in a bench's process allocates as the server does: with glibc's malloc
//! its arena locks and frees were about a third of the scheduler bench's CPU.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
