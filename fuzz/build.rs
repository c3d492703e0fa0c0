//! Compiles the conformance proto (every scalar kind, repeated fields,
//! maps, oneofs, nesting, wrappers and well-known types) into a descriptor
//! set that the JSON targets embed, as the gateway's own build does.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=../proto");
    let mut compiler = protox::Compiler::new(["../proto"])?;
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(["protogate/test/v1/test.proto"])?;
    std::fs::write(out.join("test.binpb"), compiler.encode_file_descriptor_set())?;
    Ok(())
}
