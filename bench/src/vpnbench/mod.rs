//! `vpnbench`: the throughput and latency suite (issue 15). The binary is argument parsing
//! around [`run`]; each subcommand is a module that writes one [`schema::BenchDoc`].

pub mod afxdp;
pub mod afxdp_pkt;
pub mod afxdp_xsk;
pub mod cli;
pub mod e2e;
pub mod hist;
pub mod imix;
pub mod output;
pub mod pipeline;
pub mod pipeline_port;
pub mod report;
pub mod report_plot;
pub mod sa_scale;
pub mod schema;

use cli::{Cli, Command};

/// Why a run failed (a run that measured something still writes what it measured).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{what}: {detail}")]
    Setup { what: String, detail: String },
    #[error("counts do not match: {0}")]
    CountMismatch(String),
    #[error("{0}")]
    Other(String),
}

/// Run one subcommand; returns the process exit code.
pub fn run(cli: Cli) -> Result<(), BenchError> {
    match cli.command {
        Command::Pipeline(a) => pipeline::run(&a, &cli.out_dir, cli.quiet),
        Command::Afxdp(a) => afxdp::run(&a, &cli.out_dir, cli.quiet),
        Command::E2e(a) => e2e::run(&a, &cli.out_dir, cli.quiet),
        Command::Sa(a) => sa_scale::run(&a, &cli.out_dir, cli.quiet),
        Command::Report(a) => report::run(&a, &cli.out_dir),
        Command::Xsk(a) => afxdp::xsk_main(&a),
    }
}
