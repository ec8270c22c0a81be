//! `vpnctl`, the operator CLI, as a library: the binary (`src/bin/vpnctl.rs`) parses
//! [`cli::Cli`] and calls [`run`]. Each command lives in its own module; all of them print
//! either text for people or, with `--json`, one [`crate::api::Document`].
//!
//! Exit codes ([`Exit`]) are part of the interface: scripts rely on them.

pub mod cli;
pub mod diagnose;
pub mod events;
pub mod keys;
pub mod list;
pub mod metrics;
pub mod ring;
pub mod stats;
pub mod status;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::api::{Reply, Request};
use cli::{Cli, Cmd, RingCmd};

pub use ring::SLOTS;

/// How `vpnctl` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// The command failed, or iked refused it.
    Failed = 1,
    /// Bad usage (clap's own code).
    Usage = 2,
    /// iked or the dataplane is not reachable.
    Unreachable = 3,
    /// `diagnose` found at least one error.
    FoundErrors = 4,
    /// `diagnose` found warnings and no error.
    FoundWarnings = 5,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// A failed command: what to print, and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError {
    pub exit: Exit,
    pub message: String,
}

impl CmdError {
    pub fn failed(message: impl Into<String>) -> CmdError {
        CmdError {
            exit: Exit::Failed,
            message: message.into(),
        }
    }
    pub fn unreachable(message: impl Into<String>) -> CmdError {
        CmdError {
            exit: Exit::Unreachable,
            message: message.into(),
        }
    }
}

impl From<String> for CmdError {
    fn from(message: String) -> CmdError {
        CmdError::failed(message)
    }
}

/// Run one parsed command; what it prints goes to stdout, errors to stderr.
pub fn run(cli: Cli) -> Exit {
    match dispatch(&cli) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("vpnctl: {}", e.message);
            e.exit
        }
    }
}

fn dispatch(cli: &Cli) -> Result<Exit, CmdError> {
    match &cli.cmd {
        Cmd::Status => status::run(cli),
        Cmd::List { conn } => list::run(cli, conn.as_deref()),
        Cmd::Stats => stats::run(cli),
        Cmd::Metrics => metrics::run(cli),
        Cmd::Up { conn } => simple(cli, Request::Up { conn: conn.clone() }),
        Cmd::Down { conn } => simple(cli, Request::Down { conn: conn.clone() }),
        Cmd::Reload => simple(cli, Request::Reload),
        Cmd::Log { follow, lines } => events::log(cli, *follow, *lines),
        Cmd::Trace {
            conn,
            count,
            timeout_s,
        } => events::trace(cli, conn.as_deref(), *count, *timeout_s),
        Cmd::Diagnose {
            conn,
            config,
            window_s,
        } => diagnose::run(cli, conn.as_deref(), config.as_deref(), *window_s),
        Cmd::Keys { wireshark } => keys::run(cli, wireshark),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "vpnctl", &mut std::io::stdout());
            Ok(Exit::Ok)
        }
        Cmd::Ring(r) => {
            let ring = cli
                .ring
                .as_deref()
                .ok_or_else(|| CmdError::failed("vpnctl ring ... needs --ring NAME"))?;
            ring_cmd(ring, r)
                .map(|()| Exit::Ok)
                .map_err(CmdError::failed)
        }
    }
}

/// up, down, reload: iked's answer printed as text (or the whole reply as JSON).
fn simple(cli: &Cli, req: Request) -> Result<Exit, CmdError> {
    let r = request(&cli.socket, &req)?;
    if cli.json {
        let doc = crate::api::Document::new("reply", &r);
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else if !r.text.is_empty() {
        println!("{}", r.text.trim_end());
    }
    if r.ok {
        Ok(Exit::Ok)
    } else {
        Err(CmdError::failed(format!("iked refused: {}", r.text.trim())))
    }
}

fn ring_cmd(ring: &str, cmd: &RingCmd) -> Result<(), String> {
    match cmd {
        RingCmd::Install { sa_file, timeout_s } => {
            let want = ring::load(sa_file)?;
            let t = Duration::from_secs(*timeout_s);
            let mut c =
                crate::ring_client::RingClient::attach(ring, SLOTS).map_err(|e| e.to_string())?;
            let held = c.resync(t).map_err(|e| e.to_string())?;
            let r = c.reconcile(&want, &held, t).map_err(|e| e.to_string())?;
            println!(
                "ring {ring}: {} added, {} removed, {} already installed",
                r.added, r.removed, r.kept
            );
            Ok(())
        }
        RingCmd::Status { counters } => ring::status(ring, counters.as_deref()),
        RingCmd::Serve {
            sa_file,
            ready_file,
        } => ring::serve(ring, sa_file, ready_file.as_deref()),
        RingCmd::Churn => ring::churn(ring),
    }
}

/// One request to iked's control socket, and its reply.
pub fn request(socket: &Path, req: &Request) -> Result<Reply, CmdError> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        CmdError::unreachable(format!(
            "{}: {e} (is iked running with --control {}?)",
            socket.display(),
            socket.display()
        ))
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let line = serde_json::to_string(req).map_err(|e| e.to_string())? + "\n";
    s.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    crate::daemon::command::decode_reply(&out)
        .ok_or_else(|| CmdError::failed(format!("unexpected answer from iked: {out:?}")))
}

/// Print `doc` as pretty JSON.
pub fn print_json<T: serde::Serialize>(kind: &str, body: &T) {
    let doc = crate::api::Document::new(kind, body);
    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_iked_socket_says_what_to_check_and_exits_3() {
        let e = request(
            Path::new("/nonexistent/iked.sock"),
            &Request::List { conn: None },
        )
        .unwrap_err();
        assert_eq!(e.exit, Exit::Unreachable);
        assert!(
            e.message.contains("/nonexistent/iked.sock") && e.message.contains("is iked running"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
