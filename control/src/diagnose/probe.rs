//! The system part of a diagnosis: routes to each peer, interface MTUs, XDP attachment,
//! firewall rules, certificates. The only part of `diagnose` that runs commands.

use serde::{Deserialize, Serialize};

/// What the machine showed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SystemSnapshot {}
