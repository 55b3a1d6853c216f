//! The `ferrocast` executable.

fn main() -> anyhow::Result<()> {
    ferrocast_server::cli::main()
}
