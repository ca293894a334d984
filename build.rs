//! Compiles `proto/riskgate/v1/riskgate.proto` with `protox` (a pure-Rust protobuf compiler),
//! so building needs no system `protoc`. The encoded descriptor set is kept for server
//! reflection.

use std::{env, fs, path::PathBuf};

use protox::prost::Message;

const PROTO: &str = "proto/riskgate/v1/riskgate.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("riskgate_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // Prost's codec with a smaller yield threshold for streams (see src/grpc_codec.rs).
        .codec_path("crate::grpc_codec::RiskgateCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
