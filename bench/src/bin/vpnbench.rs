//! `vpnbench`: argument parsing around `bench::vpnbench::run`.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    let cli = bench::vpnbench::cli::Cli::parse();
    if let Err(e) = bench::vpnbench::run(cli) {
        eprintln!("vpnbench: {e}");
        std::process::exit(1);
    }
}
