//! `cargo run -p quarry-proto-gen`: rewrites `proto/src/generated/` from the `.proto` files.

fn main() -> anyhow::Result<()> {
    let out = quarry_proto_gen::proto_crate_dir().join("src/generated");
    quarry_proto_gen::generate(&out)?;
    println!("wrote {}", out.display());
    Ok(())
}
