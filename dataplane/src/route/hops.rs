//! Layer-2 next hops as the workers see them: a snapshot table, read once per batch, kept
//! current by a slow-path thread (from the kernel's routes and neighbours in the real
//! dataplane; filled by hand in tests).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::io::Side;

/// Where to send a packet for a destination, out of one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// The interface MTU (bytes of IP packet).
    pub mtu: u16,
}

/// An immutable snapshot: destination → hop, per side.
#[derive(Debug, Clone, Default)]
pub struct HopTable {
    pub map: HashMap<(Side, IpAddr), Hop>,
}

impl HopTable {
    pub fn get(&self, side: Side, dst: IpAddr) -> Option<Hop> {
        self.map.get(&(side, dst)).copied()
    }
}

/// The shared, swappable table plus the queue of destinations the workers asked about.
#[derive(Debug, Default)]
pub struct HopCache {
    current: Mutex<Arc<HopTable>>,
    wanted: Mutex<Vec<(Side, IpAddr)>>,
}

impl HopCache {
    /// The current table (one short lock per batch, never per packet).
    pub fn snapshot(&self) -> Arc<HopTable> {
        self.current
            .lock()
            .map(|g| Arc::clone(&g))
            .unwrap_or_default()
    }
    /// Publish a new table.
    pub fn publish(&self, t: HopTable) {
        if let Ok(mut g) = self.current.lock() {
            *g = Arc::new(t);
        }
    }
    /// A worker missed `dst`: ask the slow path (deduplicated; bounded).
    pub fn request(&self, side: Side, dst: IpAddr) {
        if let Ok(mut w) = self.wanted.lock() {
            if w.len() < 1024 && !w.contains(&(side, dst)) {
                w.push((side, dst));
            }
        }
    }
    /// Take the pending requests (slow path).
    pub fn take_requests(&self) -> Vec<(Side, IpAddr)> {
        self.wanted
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default()
    }
}
