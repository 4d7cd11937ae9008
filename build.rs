//! Compiles `proto/inference.proto` (mica's KServe v2 / Triton gRPC protocol) into
//! Rust with protox, a protobuf compiler written in Rust, so that no `protoc` binary
//! has to be installed on a build machine (docs/NOTES.md, "gRPC front end").

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/inference.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        // Unimplemented RPCs answer UNIMPLEMENTED by default (the bare ceiling
        // example relies on it; mica's service implements every RPC with its own text).
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    Ok(())
}
