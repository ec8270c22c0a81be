//! Compile the XDP program (`ebpf/xdp_vpn.bpf.c`) with Debian's clang and embed it.
//!
//! clang is looked up as $CLANG, then clang-19, clang-16, clang. Without it the build stops
//! and says which packages to install.

use std::path::PathBuf;
use std::process::Command;

fn find_clang() -> Option<String> {
    std::env::var("CLANG")
        .ok()
        .into_iter()
        .chain(["clang-19", "clang-16", "clang"].map(String::from))
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let src = manifest.join("../ebpf/xdp_vpn.bpf.c");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("xdp_vpn.bpf.o");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=CLANG");

    let Some(clang) = find_clang() else {
        panic!(
            "\n\nbuilding the XDP program needs clang with the BPF target and the libbpf headers:\n\
             \n    apt-get install clang-19 libbpf-dev      (or run scripts/install-deps.sh)\n\n\
             or set CLANG=/path/to/clang.\n"
        );
    };
    let multiarch = format!("-I/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let status = Command::new(&clang)
        .args([
            "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", &multiarch, "-c",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running {clang}: {e}"));
    if !status.success() {
        panic!(
            "{clang} failed to compile {} (are the libbpf headers installed? apt-get install libbpf-dev)",
            src.display()
        );
    }
}
