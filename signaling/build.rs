//! Embeds every file under `web-client/` in the binary: writes `$OUT_DIR/web_client.rs`, a table
//! of (URL path, bytes) that `lib.rs` serves. A file added to the client is served after the next
//! build without touching the server's code.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web-client");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files.sort();
    let mut table = String::from("pub static WEB_CLIENT_FILES: &[(&str, &[u8])] = &[\n");
    for (url_path, file) in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        writeln!(
            table,
            "    ({url_path:?}, include_bytes!({:?})),",
            file.display()
        )
        .unwrap();
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("web_client.rs");
    std::fs::write(out, table).unwrap();
}

/// Every served file: not hidden, not the type-check configuration.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "jsconfig.json" || name == "tsconfig.json" {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            files.push((relative, path.canonicalize().unwrap()));
        }
    }
}
