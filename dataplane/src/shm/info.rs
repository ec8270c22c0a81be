//! The info file: a small JSON document in /dev/shm beside the counters file
//! (`/dev/shm/RING.info`), written once the dataplane forwards and removed when it exits
//! cleanly. It says what the counters file cannot: the process, its interfaces, how XDP is
//! attached and the AF_XDP sockets bound, and which worker runs where. `vpnctl status`
//! reads it and checks the pid is alive (a file left by a killed dataplane names a dead
//! process).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a running dataplane publishes about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneInfo {
    pub pid: u32,
    pub version: String,
    /// Unix time (ms) the dataplane started forwarding.
    pub started_unix_ms: u64,
    pub ring: Option<String>,
    /// The counters file's name in /dev/shm.
    pub counters: Option<String>,
    pub outside: String,
    pub inside: String,
    /// "native" (driver mode) or "generic" (skb mode).
    pub xdp_mode: String,
    /// "zerocopy" or "copy" ("mixed" if workers differ).
    pub bind_mode: String,
    pub workers: Vec<WorkerInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: u32,
    /// The core it is pinned to (None: not pinned).
    pub core: Option<u32>,
    pub outside_queues: Vec<u32>,
    pub inside_queues: Vec<u32>,
    pub zero_copy: bool,
}

/// `/dev/shm/NAME.info`.
pub fn info_path(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(format!("{name}.info"))
}

impl DataplaneInfo {
    /// Write it to `path` whole (a temporary file renamed over it: a reader never sees
    /// half a document).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension(format!("info.tmp{}", std::process::id()));
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, path)
    }

    /// Read `path`.
    pub fn read(path: &Path) -> Result<DataplaneInfo, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The bind mode of a set of workers.
    pub fn bind_mode_of(workers: &[WorkerInfo]) -> &'static str {
        match (
            workers.iter().all(|w| w.zero_copy),
            workers.iter().any(|w| w.zero_copy),
        ) {
            (true, _) => "zerocopy",
            (false, true) => "mixed",
            (false, false) => "copy",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_info_file_round_trips_and_names_the_bind_mode() {
        let w = |zc| WorkerInfo {
            zero_copy: zc,
            ..WorkerInfo::default()
        };
        assert_eq!(DataplaneInfo::bind_mode_of(&[w(true), w(true)]), "zerocopy");
        assert_eq!(DataplaneInfo::bind_mode_of(&[w(false)]), "copy");
        assert_eq!(DataplaneInfo::bind_mode_of(&[w(true), w(false)]), "mixed");
        let dir = std::env::temp_dir().join(format!("dp-info-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("r.info");
        let i = DataplaneInfo {
            pid: 42,
            xdp_mode: "generic".into(),
            workers: vec![WorkerInfo {
                id: 0,
                core: Some(1),
                outside_queues: vec![0],
                inside_queues: vec![0],
                zero_copy: false,
            }],
            ..DataplaneInfo::default()
        };
        i.write(&p).unwrap();
        assert_eq!(DataplaneInfo::read(&p).unwrap(), i);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(DataplaneInfo::read(&p).unwrap_err().contains("r.info"));
    }
}
