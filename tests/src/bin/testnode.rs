//! The ferrocast binary as built for the process-level tests (same allocator and code).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    ferrocast_server::cli::main()
}
