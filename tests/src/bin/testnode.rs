//! The ferrocast binary as built for the process-level tests.

fn main() -> anyhow::Result<()> {
    ferrocast_server::cli::main()
}
