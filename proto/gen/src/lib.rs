//! Turns `proto/proto/**/*.proto` into the Rust code committed under `proto/src/generated/`.
//!
//! The `.proto` files are parsed by `protox` (pure Rust, so nobody needs `protoc`) and the code is
//! written by `tonic-prost-build`; both versions are pinned in `Cargo.lock`. Run
//! `cargo run -p quarry-proto-gen` after editing a `.proto` file; a test fails while the committed
//! code differs from what this produces.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The `proto/` crate directory.
pub fn proto_crate_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("proto"))
}

/// The `.proto` files, relative to the include directory.
pub const PROTO_FILES: [&str; 1] = ["quarry/v1/quarry.proto"];

/// Generates the Rust code into `out_dir` (one file per protobuf package).
pub fn generate(out_dir: &Path) -> anyhow::Result<()> {
    let includes = proto_crate_dir().join("proto");
    let descriptors = protox::compile(PROTO_FILES, [&includes])
        .with_context(|| format!("parsing the .proto files under {}", includes.display()))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(out_dir)
        .compile_fds(descriptors)
        .context("generating Rust code")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_code_matches_the_proto_files() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path()).unwrap();
        let committed_dir = proto_crate_dir().join("src/generated");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            let fresh = std::fs::read_to_string(entry.path()).unwrap();
            let committed =
                std::fs::read_to_string(committed_dir.join(entry.file_name())).unwrap_or_default();
            assert!(
                fresh == committed,
                "proto/src/generated/{} is stale: run `cargo run -p quarry-proto-gen`",
                entry.file_name().to_string_lossy()
            );
            checked += 1;
        }
        assert_eq!(checked, 1, "one generated file per protobuf package");
    }
}
