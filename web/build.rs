//! Copies hls.js (installed from npm by `scripts/web-setup.sh`) into `OUT_DIR` for `include_bytes!`.
//!
//! When it is missing the build still succeeds: the embedded file is empty, a warning says how to
//! get it, and the channel page tells viewers the player is unavailable. Nobody's build breaks
//! because npm was not run. `BITRIVER_WEB_NODE_MODULES=DIR` takes hls.js from another
//! node_modules (packagers; also how the missing-player build is checked).

use std::path::{Path, PathBuf};

const HLS_JS: &str = "hls.js/dist/hls.min.js";

fn main() {
    println!("cargo:rerun-if-env-changed=BITRIVER_WEB_NODE_MODULES");
    let node_modules =
        std::env::var_os("BITRIVER_WEB_NODE_MODULES").map_or_else(|| PathBuf::from("node_modules"), PathBuf::from);
    let source = node_modules.join(HLS_JS);
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let target = Path::new(&out).join("hls.min.js");
    let bytes = match std::fs::read(&source) {
        Ok(bytes) => {
            println!("cargo:rerun-if-changed={}", source.display());
            bytes
        }
        Err(e) => {
            let shown = source.display();
            println!("cargo:warning=web: {shown} not found ({e}); the player is disabled. Run ./scripts/setup.sh");
            // Rerun once npm has created node_modules (it changes the package directory).
            println!("cargo:rerun-if-changed=.");
            Vec::new()
        }
    };
    std::fs::write(&target, bytes).expect("writing hls.min.js into OUT_DIR");
    println!("cargo:rerun-if-changed=build.rs");
}
