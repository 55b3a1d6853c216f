//! Compiles `proto/proxy.proto` (Centrifugo's `CentrifugoProxy` service) into prost types
//! and a tonic client in `OUT_DIR`; protox parses the schema in pure Rust (no `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/proxy.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let descriptors = protox::compile(["proxy.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .bytes(".")
        .btree_map(".")
        .compile_fds(descriptors)?;
    Ok(())
}
