//! `vpnctl keys --wireshark DIR`: the keys of the live SAs as Wireshark's `esp_sa` and
//! `ikev2_decryption_table` files. Only when asked, with a warning; never logged.

use std::path::Path;

use super::cli::Cli;
use super::{CmdError, Exit};

pub fn run(cli: &Cli, dir: &Path) -> Result<Exit, CmdError> {
    let _ = (cli, dir);
    Err(CmdError::failed("vpnctl keys: not implemented yet"))
}
