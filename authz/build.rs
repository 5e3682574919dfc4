//! Generates the admin API's gRPC code from `proto/` into OUT_DIR. `protox` parses the .proto
//! files in Rust, so building needs no system `protoc` (CI machines and the container have none).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/authz/admin/v1/admin.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["../proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
