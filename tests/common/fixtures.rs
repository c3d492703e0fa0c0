//! Descriptor fixtures: the test service's set as build.rs compiles it, the
//! small protos the reload and CLI tests add to a folder, a corrupt set,
//! and compiling a proto the way `protoc --include_imports` does.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The file that defines the test service, inside [`test_descriptor_set`].
pub const TEST_PROTO: &str = "protogate/test/v1/test.proto";

/// A service of its own package that nothing collides with.
pub const OTHER_PROTO: &str = r#"
syntax = "proto3";
package other.v1;
import "google/api/annotations.proto";

service Other {
  rpc Ping(PingRequest) returns (PingReply) {
    option (google.api.http) = { get: "/other/ping/{name}" };
  }
}
message PingRequest { string name = 1; }
message PingReply {}
"#;

/// A service of its own package that binds the same `GET` template as the
/// test service's `Metadata` method.
pub const CLASH_PROTO: &str = r#"
syntax = "proto3";
package clash.v1;
import "google/api/annotations.proto";

service Clash {
  rpc Get(GetRequest) returns (GetReply) {
    option (google.api.http) = { get: "/test/metadata" };
  }
}
message GetRequest {}
message GetReply {}
"#;

/// Not a `FileDescriptorSet`: field 1 claims far more bytes than follow.
pub const CORRUPT_SET: &[u8] = b"\x0a\xff\xff\xff\xff\x0fnot a descriptor set";

/// `path` inside the repository (`proto/`, `descriptors/`, …).
pub fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The `FileDescriptorSet` of every example and test proto (imports and
/// source info included), as built by build.rs.
pub fn test_descriptor_set() -> &'static [u8] {
    include_bytes!(concat!(env!("OUT_DIR"), "/examples.binpb"))
}

/// The part of [`test_descriptor_set`] that `test.proto` needs (the file and
/// its transitive imports), so that the example services do not add routes
/// to the test gateway. Extension options (google.api.http) are kept.
pub fn test_service_descriptor_set() -> Vec<u8> {
    let all = prost_reflect::DescriptorPool::decode(test_descriptor_set()).expect("examples.binpb decodes");
    let root = all.get_file_by_name(TEST_PROTO).expect("examples.binpb holds test.proto");
    let mut needed = HashSet::new();
    let mut pending = vec![root];
    while let Some(file) = pending.pop() {
        if needed.insert(file.name().to_owned()) {
            pending.extend(file.dependencies());
        }
    }
    // `files()` is in dependency order, which the new pool requires.
    let mut pool = prost_reflect::DescriptorPool::new();
    for file in all.files().filter(|f| needed.contains(f.name())) {
        pool.decode_file_descriptor_proto(file.encode_to_vec().as_slice()).expect("file re-decodes");
    }
    pool.encode_to_vec()
}

/// What `protoc --include_imports --descriptor_set_out` writes for `file`:
/// the file and everything it imports, without source info. The first of
/// `roots` that holds a file wins; `proto/` of the repository is searched
/// last.
pub fn compile_set(roots: &[&Path], file: &str) -> Vec<u8> {
    let mut includes: Vec<PathBuf> = roots.iter().map(|root| root.to_path_buf()).collect();
    includes.push(repo_path("proto"));
    let mut compiler = protox::Compiler::new(includes).expect("include roots");
    compiler.include_imports(true).include_source_info(false);
    compiler.open_file(file).unwrap_or_else(|e| panic!("compiling {file}: {e}"));
    compiler.encode_file_descriptor_set()
}

/// [`compile_set`] of one proto given as text, named `name`.
pub fn compile_source(name: &str, source: &str) -> Vec<u8> {
    let sources = tempfile::tempdir().expect("proto source folder");
    std::fs::write(sources.path().join(name), source).unwrap_or_else(|e| panic!("write {name}: {e}"));
    compile_set(&[sources.path()], name)
}
