//! `cargo run -p quarry-proto-gen`: rewrites the generated code from the `.proto` files.

fn main() -> anyhow::Result<()> {
    for path in quarry_proto_gen::generate_committed()? {
        println!("wrote {}", path.display());
    }
    Ok(())
}
