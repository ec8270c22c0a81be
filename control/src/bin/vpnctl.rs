//! `vpnctl`: the operator CLI. Everything it does is in `control::vpnctl` (tested there);
//! this binary sets up logging, parses the command line and exits with its code.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use control::vpnctl::{cli::Cli, run};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: logs go to files and journals as plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    run(Cli::parse()).into()
}
