//! `vpnctl list [CONN]`: connections, their IKE and Child SAs as iked and the dataplane hold
//! them, and their failures.

use super::cli::Cli;
use super::{request, CmdError, Exit};
use crate::api::Request;

pub fn run(cli: &Cli, conn: Option<&str>) -> Result<Exit, CmdError> {
    let r = request(
        &cli.socket,
        &Request::List {
            conn: conn.map(str::to_string),
        },
    )?;
    print!("{}", r.text);
    if r.ok {
        Ok(Exit::Ok)
    } else {
        Err(CmdError::failed(format!("iked refused: {}", r.text.trim())))
    }
}
