//! Writes `crates/db/src/entities/` from the migrations' table descriptions.
//! Run `cargo fmt -p ferry-db` afterwards.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/db/src/entities");
    std::fs::create_dir_all(&dir)?;
    for (name, contents) in ferry_migration::codegen::entity_files() {
        std::fs::write(dir.join(&name), contents)?;
    }
    println!("wrote {}", dir.display());
    Ok(())
}
