//! Compiles `proto/` with protox (no protoc needed anywhere):
//! - `builtin.binpb`: the google/api and google/rpc files every catalog
//!   starts from, embedded into the library;
//! - the example services' tonic code and descriptor set, for `examples/`
//!   and `tests/`.

use std::path::PathBuf;

const BUILTIN: &[&str] = &[
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/api/httpbody.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

/// Example and test services (relative to `proto/`).
const EXAMPLES: &[&str] = &[
    "acme/orders/v1/orders.proto",
    "acme/users/v1/users.proto",
    "acme/users/v2/users.proto",
    "protogate/test/v1/test.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(BUILTIN)?;
    std::fs::write(out.join("builtin.binpb"), compiler.encode_file_descriptor_set())?;

    if !EXAMPLES.is_empty() {
        let mut compiler = protox::Compiler::new(["proto"])?;
        compiler.include_imports(true).include_source_info(true);
        compiler.open_files(EXAMPLES)?;
        let fds = compiler.file_descriptor_set();
        // Not `fds.encode_to_vec()`: prost_types drops extension options, and
        // the gateway needs the google.api.http annotations in this set.
        std::fs::write(out.join("examples.binpb"), compiler.encode_file_descriptor_set())?;
        tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    }
    Ok(())
}
