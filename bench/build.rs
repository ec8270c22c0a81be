//! Builds the Intel ipsec-mb shim (`ipsecmb/shim.c`) that the `gcm` benchmark compares our
//! AES-GCM against, when Debian's `libipsec-mb-dev` is installed (`scripts/install-deps.sh`
//! installs it). Without it the benchmark still runs, with our paths only.

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ipsecmb)");
    println!("cargo::rerun-if-changed=ipsecmb/shim.c");
    println!("cargo::rerun-if-changed=/usr/include/intel-ipsec-mb.h");
    if !Path::new("/usr/include/intel-ipsec-mb.h").exists() {
        println!(
            "cargo::warning=libipsec-mb-dev is not installed: the gcm benchmark runs without the ipsec-mb baseline"
        );
        return;
    }
    // The benchmark links both archives itself (`#[link]` in benches/gcm.rs): the library
    // target does not use them, and a crate nobody references is not linked.
    cc::Build::new()
        .file("ipsecmb/shim.c")
        .opt_level(2)
        .warnings(true)
        .cargo_metadata(false)
        .compile("vpn_imb_shim");
    println!(
        "cargo::rustc-link-search=native={}",
        std::env::var("OUT_DIR").unwrap()
    );
    println!("cargo::rustc-link-search=native=/usr/lib/x86_64-linux-gnu");
    println!("cargo::rustc-cfg=ipsecmb");
}
