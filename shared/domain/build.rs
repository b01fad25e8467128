//! Compiles every catalog under `infra/catalogs/` into the functions, by
//! file name: a deployment chooses one with its `CatalogName` parameter.
//! Adding a catalog is adding a file there and building again.

use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/catalogs");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("infra/catalogs exists")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_stem()?.to_str()?.to_string();
            let full = path.canonicalize().ok()?.display().to_string();
            (path.extension()? == "json").then_some((name, full))
        })
        .collect();
    names.sort();
    let entries: String = names
        .iter()
        .map(|(name, path)| {
            println!("cargo:rerun-if-changed={path}");
            format!("    ({name:?}, include_str!({path:?})),\n")
        })
        .collect();
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("shipped_catalogs.rs");
    std::fs::write(out, format!("pub const SHIPPED: &[(&str, &str)] = &[\n{entries}];\n")).expect("write catalogs");
}
