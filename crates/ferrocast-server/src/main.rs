//! The `ferrocast` executable.

/// mimalloc keeps per-connection memory low and returns memory to the system after a
/// burst of traffic (measured in BENCHMARKS.md, W4 and W4b).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    ferrocast_server::cli::main()
}
