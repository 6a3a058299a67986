//! Turns `proto/proto/**/*.proto` into committed Rust code: the wire protocol (`quarry.v1`) into
//! `proto/src/generated/`, the plan codec's messages (`quarry.plan.v1`) into
//! `framework/jobs/src/generated/` (the framework never depends on the wire crate).
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
pub const PROTO_FILES: [&str; 2] = ["quarry/v1/quarry.proto", "quarry/plan/v1/plan.proto"];

/// Where the generated file of each protobuf package is committed.
pub fn committed_path(file_name: &str) -> PathBuf {
    let workspace = proto_crate_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    match file_name {
        "quarry.plan.v1.rs" => workspace
            .join("framework/jobs/src/generated")
            .join(file_name),
        _ => proto_crate_dir().join("src/generated").join(file_name),
    }
}

/// Generates every package and writes each file where it is committed.
pub fn generate_committed() -> anyhow::Result<Vec<PathBuf>> {
    let dir = tempfile::tempdir()?;
    generate(dir.path())?;
    let mut written = Vec::new();
    for entry in std::fs::read_dir(dir.path())? {
        let entry = entry?;
        let target = committed_path(&entry.file_name().to_string_lossy());
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(entry.path(), &target)
            .with_context(|| format!("writing {}", target.display()))?;
        written.push(target);
    }
    Ok(written)
}

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
        let mut checked = 0;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            let fresh = std::fs::read_to_string(entry.path()).unwrap();
            let path = committed_path(&entry.file_name().to_string_lossy());
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                fresh == committed,
                "{} is stale: run `cargo run -p quarry-proto-gen`",
                path.display()
            );
            checked += 1;
        }
        assert_eq!(checked, 2, "one generated file per protobuf package");
    }
}
