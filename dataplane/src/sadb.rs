//! The SAs a dataplane holds, shared by its workers.
//!
//! For now each SA sits behind its own mutex, taken once per run of consecutive packets
//! of that SA in a batch (never per packet). The lock-free table with per-batch sequence
//! reservation replaces this in the SA-table issue.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::esp::{InboundSa, OutboundSa, SaError, SaShape};
use crate::spd::Spd;
use crate::static_sa::{Direction, StaticConfig};

/// Outbound SAs by index, inbound SAs by SPI, and the SPD that points into them.
#[derive(Debug, Default)]
pub struct SaStore {
    pub outbound: Vec<(String, Mutex<OutboundSa>)>,
    /// Immutable per-SA facts (mode, overhead), same index as `outbound`: read without locks.
    pub outbound_shape: Vec<SaShape>,
    pub inbound: HashMap<u32, (String, Mutex<InboundSa>)>,
    pub spd: Spd,
}

impl SaStore {
    /// Install every SA and policy of a static file (one path for installing SAs).
    pub fn from_static(cfg: &StaticConfig) -> Result<SaStore, String> {
        let mut s = SaStore::default();
        for sa in &cfg.sas {
            let err = |e: SaError| format!("SA {:?}: {e}", sa.name);
            match sa.direction {
                Direction::Outbound => {
                    let out = OutboundSa::new(sa.config.clone()).map_err(err)?;
                    s.outbound_shape.push(out.shape());
                    s.outbound.push((sa.name.clone(), Mutex::new(out)));
                }
                Direction::Inbound => {
                    s.inbound.insert(
                        sa.config.spi,
                        (
                            sa.name.clone(),
                            Mutex::new(InboundSa::new(sa.config.clone()).map_err(err)?),
                        ),
                    );
                }
            }
        }
        s.spd = Spd::new(&cfg.policies, |name| {
            s.outbound.iter().position(|(n, _)| n == name)
        })?;
        Ok(s)
    }
}
