//! Reads the descriptor folder into one `DescriptorPool`.
//!
//! The folder holds serialized `FileDescriptorSet`s (`*.binpb`, `*.pb`,
//! `*.desc`, `*.protoset`, as written by `protoc --include_imports` or
//! `buf build -o`) and `.proto` sources, compiled in-process with protox.
//! The google/api and google/rpc files the gateway itself relies on are
//! built in, so error details always render and sources may import them
//! without shipping copies.
//!
//! Sets are merged file by file: the same file may come from several sets
//! (every set made with `--include_imports` carries its imports), but two
//! different files under one name are an error naming both sources.
//! Files fetched from upstreams by gRPC reflection join the same merge.
//!
//! gRPC API Service Config files (`*.yaml`, `type: google.api.Service`)
//! in the folder are read here too ([`service_config`]): their `http.rules`
//! bind methods the way `google.api.http` annotations do, and the catalog
//! applies them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use prost_reflect::DescriptorPool;
use sha2::{Digest, Sha256};

pub mod reflection;
pub mod service_config;

use self::service_config::ServiceConfig;

/// The built-in google/api and google/rpc files (with their imports).
const BUILTIN_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/builtin.binpb"));

/// Sources of the built-in files, for `.proto` files that import them.
const BUILTIN_SOURCES: &[(&str, &str)] = &[
    ("google/api/annotations.proto", include_str!("../proto/google/api/annotations.proto")),
    ("google/api/http.proto", include_str!("../proto/google/api/http.proto")),
    ("google/api/httpbody.proto", include_str!("../proto/google/api/httpbody.proto")),
    ("google/rpc/status.proto", include_str!("../proto/google/rpc/status.proto")),
    ("google/rpc/error_details.proto", include_str!("../proto/google/rpc/error_details.proto")),
];

const SET_EXTENSIONS: &[&str] = &["binpb", "pb", "desc", "protoset"];

/// Where the files of a pool came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file of the descriptor folder (set or `.proto`), relative to it.
    Folder(PathBuf),
    /// Built into protogate.
    Builtin,
    /// Served by this upstream (its URL) over gRPC reflection.
    Reflection(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Folder(path) => write!(f, "{}", path.display()),
            Origin::Builtin => write!(f, "<built-in>"),
            Origin::Reflection(upstream) => write!(f, "{upstream} (reflection)"),
        }
    }
}

/// One file read from the folder.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the descriptor folder.
    pub path: PathBuf,
    pub size: u64,
}

/// The merged descriptors of a folder.
#[derive(Debug, Clone)]
pub struct Descriptors {
    pub pool: DescriptorPool,
    /// Proto file name (`acme/users/v1/users.proto`) → where it came from.
    pub origins: HashMap<String, Origin>,
    /// Files read from the folder, sorted by path.
    pub sources: Vec<SourceFile>,
    /// SHA-256 over the paths and contents of `sources`, hex: names exactly
    /// what is live.
    pub digest: String,
    /// The folder's service configs, sorted by path.
    pub service_configs: Vec<Arc<ServiceConfig>>,
    /// Files left out because they cannot be used (with `skip`): proto
    /// name and why.
    pub left_out: Vec<(String, String)>,
}

impl Descriptors {
    /// Where the proto file `name` came from, for messages.
    pub fn origin(&self, name: &str) -> &Origin {
        self.origins.get(name).unwrap_or(&Origin::Builtin)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: not a FileDescriptorSet: {source}", path.display())]
    Decode { path: PathBuf, source: prost::DecodeError },
    #[error("{0}")]
    Compile(String),
    #[error("{name} is defined differently in {first} and {second}")]
    Conflict { name: String, first: Origin, second: Origin },
    #[error("{context}{source}")]
    Pool { context: String, source: prost_reflect::DescriptorError },
    /// A service config YAML file that cannot be read as one; the message
    /// names the file and the line.
    #[error("{0}")]
    ServiceConfig(String),
    #[error("{origin}: {name}: {reason}")]
    Unsupported { name: String, origin: Origin, reason: String },
}

/// A FileDescriptorSet read without decoding its files, so each file keeps
/// its options' extensions (`google.api.http`) as raw bytes.
#[derive(Clone, PartialEq, Message)]
struct RawFileSet {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    file: Vec<Bytes>,
}

/// Just the name of a FileDescriptorProto.
#[derive(Clone, PartialEq, Message)]
struct FileName {
    #[prost(string, tag = "1")]
    name: String,
}

/// The name, imports and syntax of a FileDescriptorProto, read without
/// decoding (and re-encoding) the rest: what decides whether a file can be
/// loaded at all, and what reflection follows to fetch its imports.
#[derive(Clone, PartialEq, Message)]
struct FileHead {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, repeated, tag = "3")]
    dependency: Vec<String>,
    #[prost(string, optional, tag = "12")]
    syntax: Option<String>,
}

/// Why a file cannot be loaded, or `None`. prost-reflect knows proto2 and
/// proto3 only, and (0.16) panics on anything else, so other syntaxes
/// never reach it.
fn unsupported(head: &FileHead) -> Option<String> {
    match head.syntax.as_deref() {
        None | Some("proto2" | "proto3") => None,
        Some("editions") => Some(
            "protobuf editions (edition = \"2023\" and later) are not supported yet; \
             compile the file as proto3, or leave it out"
                .into(),
        ),
        Some(other) => Some(format!("syntax {other:?} is not supported (proto2 and proto3 are)")),
    }
}

/// Files gathered by name before they become a pool.
#[derive(Default)]
struct Merger {
    files: BTreeMap<String, (Bytes, Origin)>,
}

impl Merger {
    /// Adds the files of one encoded set; `origin_of` names where each file
    /// (by proto name) came from.
    fn add_set(
        &mut self,
        bytes: &[u8],
        source: &Path,
        origin_of: &dyn Fn(&str) -> Origin,
    ) -> Result<(), DescriptorError> {
        let decode_error = |source_err| DescriptorError::Decode { path: source.to_path_buf(), source: source_err };
        let set = RawFileSet::decode(bytes).map_err(decode_error)?;
        for raw in set.file {
            let name = FileName::decode(raw.clone()).map_err(decode_error)?.name;
            let origin = origin_of(&name);
            self.add_file(name, raw, origin)?;
        }
        Ok(())
    }

    /// Adds one encoded file; the first copy of a name wins, a different
    /// definition under a taken name is a conflict.
    fn add_file(&mut self, name: String, raw: Bytes, origin: Origin) -> Result<(), DescriptorError> {
        match self.files.get(&name) {
            None => {
                self.files.insert(name, (raw, origin));
            }
            Some((existing, first)) if !is_common(&name) && *existing != raw && !same_definition(existing, &raw) => {
                return Err(DescriptorError::Conflict { name, first: first.clone(), second: origin });
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Refuses (or, with `skip`, leaves out) files that cannot be loaded,
    /// with every file that imports them; returns what was left out.
    fn drop_unsupported(&mut self, skip: bool) -> Result<Vec<(String, String)>, DescriptorError> {
        let heads: Vec<FileHead> =
            self.files.values().filter_map(|(raw, _)| FileHead::decode(raw.clone()).ok()).collect();
        let mut out: Vec<(String, String)> =
            heads.iter().filter_map(|head| Some((head.name.clone(), unsupported(head)?))).collect();
        if out.is_empty() {
            return Ok(out);
        }
        if !skip {
            let (name, reason) = out.swap_remove(0);
            let origin = self.files.get(&name).map_or(Origin::Builtin, |(_, origin)| origin.clone());
            return Err(DescriptorError::Unsupported { name, origin, reason });
        }
        // Importers of a left-out file go too, until nothing changes.
        loop {
            let before = out.len();
            for head in &heads {
                if out.iter().any(|(name, _)| *name == head.name) {
                    continue;
                }
                if let Some(dep) = head.dependency.iter().find(|d| out.iter().any(|(name, _)| name == *d)) {
                    out.push((head.name.clone(), format!("imports {dep}, which is left out")));
                }
            }
            if out.len() == before {
                break;
            }
        }
        for (name, _) in &out {
            self.files.remove(name);
        }
        Ok(out)
    }

    fn into_pool(self) -> Result<(DescriptorPool, HashMap<String, Origin>), prost_reflect::DescriptorError> {
        let mut origins = HashMap::with_capacity(self.files.len());
        let mut set = RawFileSet { file: Vec::with_capacity(self.files.len()) };
        for (name, (raw, origin)) in self.files {
            origins.insert(name, origin);
            set.file.push(raw);
        }
        let pool = DescriptorPool::decode(set.encode_to_vec().as_slice())?;
        Ok((pool, origins))
    }
}

/// Refuses a map entry message without a key field 1 and a value field 2
/// of the kinds protobuf allows. protoc never writes one, but a hand-made
/// or reflected set can, and prost-reflect accepts it only to panic when a
/// request first touches the map.
fn check_map_entries(pool: &DescriptorPool, origins: &HashMap<String, Origin>) -> Result<(), DescriptorError> {
    use prost_reflect::Kind;
    for message in pool.all_messages().filter(|m| m.is_map_entry()) {
        let key_ok = message.get_field(1).is_some_and(|key| {
            !key.is_list()
                && matches!(
                    key.kind(),
                    Kind::Int32
                        | Kind::Int64
                        | Kind::Uint32
                        | Kind::Uint64
                        | Kind::Sint32
                        | Kind::Sint64
                        | Kind::Fixed32
                        | Kind::Fixed64
                        | Kind::Sfixed32
                        | Kind::Sfixed64
                        | Kind::Bool
                        | Kind::String
                )
        });
        let value_ok = message.get_field(2).is_some_and(|value| !value.is_list());
        if !key_ok || !value_ok {
            let name = message.parent_file().name().to_owned();
            let origin = origins.get(&name).cloned().unwrap_or(Origin::Builtin);
            let reason = format!(
                "map entry {} needs a key field 1 (an integer, bool or string) and a value field 2",
                message.full_name()
            );
            return Err(DescriptorError::Unsupported { name, origin, reason });
        }
    }
    Ok(())
}

/// Files every toolchain ships its own copy of (protoc and buf versions
/// differ in options and comments): the first copy serves for all.
fn is_common(name: &str) -> bool {
    ["google/protobuf/", "google/api/", "google/rpc/", "google/type/"].iter().any(|prefix| name.starts_with(prefix))
}

/// Two encodings of one file that differ only in source info (comments and
/// spans) define the same thing.
///
/// Compared on the wire rather than through `prost_types`: decoding into
/// `prost_types` drops extension options, so two files whose only
/// difference is a `google.api.http` route would look the same and the
/// first would win silently.
fn same_definition(a: &[u8], b: &[u8]) -> bool {
    matches!((definition_fields(a), definition_fields(b)), (Some(a), Some(b)) if a == b)
}

/// The top-level fields of an encoded FileDescriptorProto without its
/// `source_code_info` (field 9), each as (field number, encoded bytes),
/// stably in field-number order. `None` when the bytes do not parse.
fn definition_fields(mut buf: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    const SOURCE_CODE_INFO: u64 = 9;
    let mut fields = Vec::new();
    while !buf.is_empty() {
        let field = buf;
        let key = read_varint(&mut buf)?;
        let len = match key & 7 {
            0 => {
                read_varint(&mut buf)?;
                0
            }
            1 => 8,
            2 => usize::try_from(read_varint(&mut buf)?).ok()?,
            5 => 4,
            // Groups: FileDescriptorProto has none at the top level.
            _ => return None,
        };
        buf = buf.get(len..)?;
        let number = key >> 3;
        if number != SOURCE_CODE_INFO {
            fields.push((number, &field[..field.len() - buf.len()]));
        }
    }
    fields.sort_by_key(|(number, _)| *number);
    Some(fields)
}

/// Reads one base-128 varint off the front of `buf`.
fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(value);
        }
    }
    None
}

/// Loads every descriptor file below `dir`. A missing folder is an empty one:
/// the gateway starts and answers 404 until files arrive.
pub fn load_dir(dir: &Path) -> Result<Descriptors, DescriptorError> {
    load(dir, &[])
}

/// Loads the folder as [`load_dir`] does, plus the files each upstream
/// served over reflection (upstream URL, then `(file name, encoded
/// FileDescriptorProto)` as [`reflection::fetch`] returns them). Folder files
/// come first, so a folder's copy of a common google file wins over an
/// upstream's.
pub fn load(dir: &Path, reflected: &[(String, Vec<(String, Bytes)>)]) -> Result<Descriptors, DescriptorError> {
    load_with(dir, reflected, false)
}

/// [`load`]; with `skip_unsupported` (`routes.invalid_bindings: skip`), a
/// file that cannot be loaded (protobuf editions) is left out with its
/// importers and listed in [`Descriptors::left_out`] instead of refusing
/// the folder.
pub fn load_with(
    dir: &Path,
    reflected: &[(String, Vec<(String, Bytes)>)],
    skip_unsupported: bool,
) -> Result<Descriptors, DescriptorError> {
    let mut protos = Vec::new();
    let mut sources = Vec::new();
    let mut yaml = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut |relative, size| {
            let is_proto = extension(relative) == "proto";
            if is_proto {
                protos.push(relative.to_path_buf());
            }
            if is_proto || is_set(relative) {
                sources.push(SourceFile { path: relative.to_path_buf(), size });
            }
            if is_yaml(relative) {
                yaml.push(SourceFile { path: relative.to_path_buf(), size });
            }
        })?;
    }
    // Service configs are sources like the rest; other YAML files are not.
    let mut service_configs = Vec::new();
    for file in yaml {
        let full = dir.join(&file.path);
        let text = std::fs::read_to_string(&full).map_err(|err| DescriptorError::Read { path: full, source: err })?;
        if let Some(config) = service_config::parse(&file.path, &text).map_err(DescriptorError::ServiceConfig)? {
            service_configs.push(Arc::new(config));
            sources.push(file);
        }
    }
    service_configs.sort_by(|a, b| a.path.cmp(&b.path));
    sources.sort_by(|a, b| a.path.cmp(&b.path));
    protos.sort();

    // Every file is read once: its bytes feed the digest and, for sets, the
    // merge. `.proto` sources are read again by the compiler below.
    let mut merger = Merger::default();
    let mut digest = Sha256::new();
    for source in &sources {
        let full = dir.join(&source.path);
        let bytes = std::fs::read(&full).map_err(|err| DescriptorError::Read { path: full.clone(), source: err })?;
        digest.update(source.path.to_string_lossy().as_bytes());
        digest.update([0]);
        digest.update((bytes.len() as u64).to_le_bytes());
        digest.update(&bytes);
        if is_set(&source.path) {
            merger.add_set(&bytes, &source.path, &|_| Origin::Folder(source.path.clone()))?;
        }
    }
    if !protos.is_empty() {
        // A compiled set carries its imports: those that are folder files keep
        // their own path, the rest (well-known and built-in) are built in.
        let origin_of = |name: &str| match protos.iter().find(|p| p.to_str() == Some(name)) {
            Some(path) => Origin::Folder(path.clone()),
            None => Origin::Builtin,
        };
        for (path, bytes) in compile_protos(dir, &protos)? {
            merger.add_set(&bytes, &path, &origin_of)?;
        }
    }
    for (upstream, files) in reflected {
        for (name, raw) in files {
            digest.update(upstream.as_bytes());
            digest.update([0]);
            digest.update(name.as_bytes());
            digest.update([0]);
            digest.update((raw.len() as u64).to_le_bytes());
            digest.update(raw);
            merger.add_file(name.clone(), raw.clone(), Origin::Reflection(upstream.clone()))?;
        }
    }
    // Built-in files only fill gaps: a folder's own copy of, say,
    // google/api/http.proto wins.
    let builtin = RawFileSet::decode(BUILTIN_SET)
        .map_err(|source| DescriptorError::Decode { path: PathBuf::from("<built-in>"), source })?;
    for raw in builtin.file {
        if let Ok(FileName { name }) = FileName::decode(raw.clone()) {
            merger.files.entry(name).or_insert((raw, Origin::Builtin));
        }
    }

    let left_out = merger.drop_unsupported(skip_unsupported)?;
    let file_origins: HashMap<String, Origin> =
        merger.files.iter().map(|(name, (_, origin))| (name.clone(), origin.clone())).collect();
    let (pool, origins) = merger.into_pool().map_err(|source| {
        let context = source
            .file()
            .and_then(|file| file_origins.get(file))
            .map(|origin| format!("{origin}: "))
            .unwrap_or_default();
        DescriptorError::Pool { context, source }
    })?;
    check_map_entries(&pool, &origins)?;
    Ok(Descriptors { pool, origins, sources, digest: hex::encode(digest.finalize()), service_configs, left_out })
}

fn extension(path: &Path) -> &str {
    path.extension().and_then(|e| e.to_str()).unwrap_or_default()
}

/// A serialized FileDescriptorSet, by its file name.
fn is_set(path: &Path) -> bool {
    SET_EXTENSIONS.contains(&extension(path))
}

/// A YAML file, which may be a service config.
fn is_yaml(path: &Path) -> bool {
    service_config::EXTENSIONS.contains(&extension(path))
}

/// A cheap summary of the folder (path, size, modification time of every
/// descriptor file and every YAML file, which may be a service config):
/// when it changes, a reload is due.
pub fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    if dir.exists() {
        let _ = walk(dir, dir, &mut |relative, size| {
            if is_set(relative) || extension(relative) == "proto" || is_yaml(relative) {
                let modified =
                    std::fs::metadata(dir.join(relative)).and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
                out.push((relative.to_path_buf(), size, modified));
            }
        });
    }
    out.sort();
    out
}

/// Calls `visit` with the path (relative to `root`) and size of every regular
/// file below `dir`, skipping hidden files and folders (editor swap files,
/// `..data` symlink farms of Kubernetes config maps are followed through
/// their visible links).
fn walk(root: &Path, dir: &Path, visit: &mut dyn FnMut(&Path, u64)) -> Result<(), DescriptorError> {
    let read = |path: &Path, source| DescriptorError::Read { path: path.to_path_buf(), source };
    let entries = std::fs::read_dir(dir).map_err(|e| read(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| read(dir, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') || name.to_string_lossy().ends_with('~') {
            continue;
        }
        let path = entry.path();
        // Follow symlinks: metadata(), not symlink_metadata().
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            // A dangling link or a file removed while we walk: not ours to read.
            Err(_) => continue,
        };
        if meta.is_dir() {
            walk(root, &path, visit)?;
        } else if meta.is_file() {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            visit(relative, meta.len());
        }
    }
    Ok(())
}

/// Compiles the folder's `.proto` files with protox, the folder as include
/// root; returns one encoded set per source file (its imports included).
fn compile_protos(dir: &Path, protos: &[PathBuf]) -> Result<Vec<(PathBuf, Vec<u8>)>, DescriptorError> {
    use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver};

    struct Builtin;
    impl FileResolver for Builtin {
        fn open_file(&self, name: &str) -> Result<File, protox::Error> {
            match BUILTIN_SOURCES.iter().find(|(n, _)| *n == name) {
                Some((n, source)) => File::from_source(n, source),
                None => Err(protox::Error::file_not_found(name)),
            }
        }
    }

    let mut out = Vec::with_capacity(protos.len());
    for path in protos {
        let mut resolver = ChainFileResolver::new();
        resolver.add(IncludeFileResolver::new(dir.to_path_buf()));
        resolver.add(Builtin);
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        // Source info keeps the comments, which OpenAPI turns into descriptions.
        compiler.include_imports(true).include_source_info(true);
        compiler.open_file(path).map_err(|e| DescriptorError::Compile(format!("{}: {e}", path.display())))?;
        out.push((path.clone(), compiler.encode_file_descriptor_set()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write");
    }

    const GREETER: &str = r#"
        syntax = "proto3";
        package demo.v1;
        import "google/api/annotations.proto";
        service Greeter {
          rpc Hello(HelloRequest) returns (HelloReply) { option (google.api.http) = { get: "/hello/{name}" }; }
        }
        message HelloRequest { string name = 1; }
        message HelloReply { string text = 1; }
    "#;

    #[test]
    fn missing_folder_is_empty() {
        let loaded = load_dir(Path::new("/nonexistent/protogate/descriptors")).expect("load");
        assert!(loaded.sources.is_empty());
        assert!(loaded.pool.get_message_by_name("google.rpc.Status").is_some());
    }

    #[test]
    fn compiles_proto_sources_with_builtin_imports() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "demo/greeter.proto", GREETER);
        let loaded = load_dir(dir.path()).expect("load");
        let service = loaded.pool.get_service_by_name("demo.v1.Greeter").expect("service");
        assert_eq!(service.methods().count(), 1);
        assert_eq!(loaded.origin("demo/greeter.proto"), &Origin::Folder(PathBuf::from("demo/greeter.proto")));
        assert_eq!(loaded.origin("google/api/http.proto"), &Origin::Builtin);
        // The http option survives as an extension.
        let ext = loaded.pool.get_extension_by_name("google.api.http").expect("ext");
        let method = service.methods().next().expect("method");
        assert!(method.options().has_extension(&ext));
    }

    #[test]
    fn reads_sets_and_merges_shared_imports() {
        let src = tempfile::tempdir().expect("tempdir");
        write(src.path(), "a.proto", &GREETER.replace("demo.v1", "a.v1"));
        write(src.path(), "b.proto", &GREETER.replace("demo.v1", "b.v1").replace("/hello", "/hi"));
        let sets = compile_protos(src.path(), &[PathBuf::from("a.proto"), PathBuf::from("b.proto")]).expect("compile");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("nested")).expect("mkdir");
        std::fs::write(dir.path().join("a.binpb"), &sets[0].1).expect("write");
        std::fs::write(dir.path().join("nested/b.pb"), &sets[1].1).expect("write");
        std::fs::write(dir.path().join(".hidden.binpb"), b"garbage").expect("write");
        std::fs::write(dir.path().join("README.txt"), b"ignored").expect("write");
        let loaded = load_dir(dir.path()).expect("load");
        assert!(loaded.pool.get_service_by_name("a.v1.Greeter").is_some());
        assert!(loaded.pool.get_service_by_name("b.v1.Greeter").is_some());
        let paths: Vec<_> = loaded.sources.iter().map(|s| s.path.clone()).collect();
        assert_eq!(paths, vec![PathBuf::from("a.binpb"), PathBuf::from("nested/b.pb")]);
    }

    #[test]
    fn corrupt_set_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("broken.binpb"), b"\xff\xff\xff not a descriptor").expect("write");
        let err = load_dir(dir.path()).expect_err("corrupt");
        assert!(err.to_string().starts_with("broken.binpb: not a FileDescriptorSet"), "{err}");
    }

    #[test]
    fn proto_syntax_error_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "bad.proto", "syntax = \"proto3\"; message {");
        let err = load_dir(dir.path()).expect_err("syntax");
        assert!(err.to_string().contains("bad.proto"), "{err}");
    }

    #[test]
    fn missing_import_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "x.proto", "syntax = \"proto3\"; import \"nope/missing.proto\"; message X {}");
        let err = load_dir(dir.path()).expect_err("import");
        assert!(err.to_string().contains("nope/missing.proto"), "{err}");
    }

    #[test]
    fn files_that_differ_only_in_an_http_option_conflict() {
        let one = tempfile::tempdir().expect("tempdir");
        write(one.path(), "demo/greeter.proto", GREETER);
        let two = tempfile::tempdir().expect("tempdir");
        write(two.path(), "demo/greeter.proto", &GREETER.replace("/hello/", "/hi/"));
        let a = compile_protos(one.path(), &[PathBuf::from("demo/greeter.proto")]).expect("a");
        let b = compile_protos(two.path(), &[PathBuf::from("demo/greeter.proto")]).expect("b");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("one.binpb"), &a[0].1).expect("write");
        std::fs::write(dir.path().join("two.binpb"), &b[0].1).expect("write");
        let err = load_dir(dir.path()).expect_err("conflict");
        assert_eq!(err.to_string(), "demo/greeter.proto is defined differently in one.binpb and two.binpb");
    }

    #[test]
    fn source_info_alone_is_not_a_difference() {
        let file = |with_source_info: bool| {
            let dir = tempfile::tempdir().expect("tempdir");
            write(
                dir.path(),
                "a.proto",
                "syntax = \"proto3\";\npackage p;\n// A comment.\nmessage A { string a = 1; }\n",
            );
            let mut compiler = protox::Compiler::new([dir.path()]).expect("compiler");
            compiler.include_source_info(with_source_info);
            compiler.open_file("a.proto").expect("compile");
            let set = RawFileSet::decode(compiler.encode_file_descriptor_set().as_slice()).expect("set");
            set.file.into_iter().next().expect("one file")
        };
        let (with, without) = (file(true), file(false));
        assert_ne!(with, without);
        assert!(same_definition(&with, &without));
        assert!(!same_definition(&with, b"\xff"));
    }

    #[test]
    fn two_different_files_with_one_name_conflict() {
        let one = tempfile::tempdir().expect("tempdir");
        write(one.path(), "same.proto", "syntax = \"proto3\"; package p; message A {}");
        let two = tempfile::tempdir().expect("tempdir");
        write(two.path(), "same.proto", "syntax = \"proto3\"; package p; message B {}");
        let a = compile_protos(one.path(), &[PathBuf::from("same.proto")]).expect("a");
        let b = compile_protos(two.path(), &[PathBuf::from("same.proto")]).expect("b");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("one.binpb"), &a[0].1).expect("write");
        std::fs::write(dir.path().join("two.binpb"), &b[0].1).expect("write");
        let err = load_dir(dir.path()).expect_err("conflict");
        assert_eq!(err.to_string(), "same.proto is defined differently in one.binpb and two.binpb");
    }

    /// A set whose file uses protobuf editions (prost-reflect 0.16 panics
    /// on it): refused by name, or left out with its importers.
    #[test]
    fn editions_files_are_refused_or_left_out_never_loaded() {
        use prost_types::{FileDescriptorProto, FileDescriptorSet};
        let file = |name: &str, syntax: Option<&str>, deps: &[&str]| FileDescriptorProto {
            name: Some(name.into()),
            package: Some(name.trim_end_matches(".proto").into()),
            dependency: deps.iter().map(|d| d.to_string()).collect(),
            syntax: syntax.map(str::to_owned),
            ..Default::default()
        };
        let set = FileDescriptorSet {
            file: vec![
                file("modern.proto", Some("editions"), &[]),
                file("user.proto", Some("proto3"), &["modern.proto"]),
                file("plain.proto", Some("proto3"), &[]),
            ],
        };
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("all.binpb"), set.encode_to_vec()).expect("write");
        let Err(err) = load(dir.path(), &[]) else { panic!("a file with editions was loaded") };
        let err = err.to_string();
        assert!(err.contains("modern.proto") && err.contains("editions"), "{err}");
        let loaded = load_with(dir.path(), &[], true).expect("loads without them");
        let mut left: Vec<&str> = loaded.left_out.iter().map(|(name, _)| name.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["modern.proto", "user.proto"]);
        assert!(loaded.pool.get_file_by_name("plain.proto").is_some());
        assert!(loaded.pool.get_file_by_name("user.proto").is_none());
    }

    /// A map entry without its key and value fields (or with a key of a
    /// kind maps cannot have) would load and then panic on a request.
    #[test]
    fn malformed_map_entries_are_refused_at_load() {
        use prost_types::{
            DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet, MessageOptions,
        };
        let field = |name: &str, number: i32, ty: i32, type_name: Option<&str>, label: i32| FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            r#type: Some(ty),
            type_name: type_name.map(str::to_owned),
            label: Some(label),
            ..Default::default()
        };
        let set = |entry_fields: Vec<FieldDescriptorProto>| FileDescriptorSet {
            file: vec![FileDescriptorProto {
                name: Some("m.proto".into()),
                package: Some("p".into()),
                syntax: Some("proto3".into()),
                message_type: vec![DescriptorProto {
                    name: Some("M".into()),
                    field: vec![field("x", 1, 11, Some(".p.M.XEntry"), 3)],
                    nested_type: vec![DescriptorProto {
                        name: Some("XEntry".into()),
                        field: entry_fields,
                        options: Some(MessageOptions { map_entry: Some(true), ..Default::default() }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let (string, float) = (9, 2);
        for (case, entry) in [
            ("no fields", vec![]),
            ("float key", vec![field("key", 1, float, None, 1), field("value", 2, string, None, 1)]),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("m.binpb"), set(entry).encode_to_vec()).expect("write");
            let Err(err) = load(dir.path(), &[]) else { panic!("{case}: a malformed map entry was loaded") };
            assert!(err.to_string().contains("map entry p.M.XEntry"), "{case}: {err}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let good = vec![field("key", 1, string, None, 1), field("value", 2, string, None, 1)];
        std::fs::write(dir.path().join("m.binpb"), set(good).encode_to_vec()).expect("write");
        assert!(load(dir.path(), &[]).is_ok(), "a proper map entry is refused");
    }
}
