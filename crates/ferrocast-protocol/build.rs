//! Compiles `proto/client.proto` into prost types in `OUT_DIR`.
//!
//! The schema is parsed by protox (pure Rust), so no `protoc` binary is needed. Every
//! `bytes` field becomes `bytes::Bytes`, so payloads decoded from a shared buffer and
//! payloads fanned out to many connections are reference-counted instead of copied; maps
//! become `BTreeMap`, so encoding is deterministic (the same message always gives the
//! same bytes).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/client.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let descriptors = protox::compile(["client.proto"], ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .btree_map(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
