//! Operator commands (`vpnctl` over iked's control socket): list, up, down, reload.

use std::fmt::Write as _;

use tracing::info;

use super::conn::ConnState;
use super::dataplane_ops::DpOp;
use super::{ts_list, Daemon};
use crate::config::{IkedConfig, StartAction};
use crate::ike::sa::Phase;

/// A request read from the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    List,
    Up(String),
    Down(String),
    /// The shell loads the file and hands the result to [`Daemon::reload`].
    Reload,
}

impl Request {
    pub fn parse(line: &str) -> Result<Request, String> {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("list"), None, None) => Ok(Request::List),
            (Some("up"), Some(n), None) => Ok(Request::Up(n.into())),
            (Some("down"), Some(n), None) => Ok(Request::Down(n.into())),
            (Some("reload"), None, None) => Ok(Request::Reload),
            _ => Err("commands are: list, up NAME, down NAME, reload".into()),
        }
    }
}

/// The answer: text for the operator, and whether the command did what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    pub text: String,
}

impl Reply {
    /// On the control socket: a first line `ok` or `error` (vpnctl's exit code), then the
    /// text for the operator.
    pub fn encode(&self) -> String {
        let status = if self.ok { "ok" } else { "error" };
        format!("{status}\n{}\n", self.text.trim_end())
    }

    /// What [`Reply::encode`] wrote; `None` if it is not a reply.
    pub fn decode(wire: &str) -> Option<Reply> {
        let (status, text) = wire.split_once('\n').unwrap_or((wire, ""));
        let ok = match status {
            "ok" => true,
            "error" => false,
            _ => return None,
        };
        Some(Reply {
            ok,
            text: text.to_string(),
        })
    }

    fn ok(text: String) -> Reply {
        Reply { ok: true, text }
    }
    fn err(text: String) -> Reply {
        Reply { ok: false, text }
    }
}

/// "rekey in 3512 s, expires in 3960 s", or what is off.
fn timers(now: u64, rekey_at: Option<u64>, expire_at: Option<u64>) -> String {
    let secs = |t: u64| format!("{:.0} s", t.saturating_sub(now) as f64 / 1000.0);
    format!(
        "{}, {}",
        rekey_at.map_or("no rekey".into(), |t| format!("rekey in {}", secs(t))),
        expire_at.map_or("no expiry".into(), |t| format!("expires in {}", secs(t)))
    )
}

fn ago(now: u64, t: u64) -> String {
    format!("{:.0} s ago", now.saturating_sub(t) as f64 / 1000.0)
}

impl Daemon {
    pub fn handle_request(&mut self, now: u64, req: Request) -> Reply {
        match req {
            Request::List => Reply::ok(self.list(now)),
            Request::Up(name) => self.up(now, &name),
            Request::Down(name) => self.down(now, &name),
            Request::Reload => Reply::err("reload needs the configuration file".into()),
        }
    }

    /// Connections, their IKE SAs and Child SAs as the daemon holds them.
    pub fn list(&self, now: u64) -> String {
        let mut out = String::new();
        for c in &self.conns {
            let cc = &c.cfg.connection;
            // The connection's state is its best IKE SA's: an established one over one
            // being negotiated (a spoofed half-open one must not hide a working tunnel).
            let best = self
                .sas
                .values()
                .filter(|e| e.conn == cc.name)
                .max_by_key(|e| match e.sa.phase() {
                    Phase::Established => 3,
                    Phase::Connecting if e.half_open_from.is_none() => 2,
                    Phase::Deleting => 1,
                    _ => 0,
                });
            let (local, remote) = best.map_or((cc.local.ip(), cc.remote.ip()), |e| {
                (e.sa.local().ip(), e.sa.remote().ip())
            });
            // Every established IKE SA of the connection is counted, not only the best one:
            // a duplicate (a peer that restarted without INITIAL_CONTACT, a leak) must show.
            let established = self
                .sas
                .values()
                .filter(|e| e.conn == cc.name && e.sa.phase() == Phase::Established)
                .count();
            let state = match best.map(|e| (e.sa.phase(), e)) {
                Some((Phase::Established, e)) => format!(
                    "established {}{}{} ({established} IKE SA{})",
                    e.sa.established_at().map_or(String::new(), |t| ago(now, t)),
                    e.sa.suite().map_or(String::new(), |s| format!(", {s}")),
                    if e.sa.nat() { ", NAT-T" } else { "" },
                    if established == 1 { "" } else { "s" }
                ),
                Some((Phase::Connecting, _)) => "connecting".into(),
                Some((Phase::Deleting, _)) => "deleting".into(),
                _ => {
                    let mut s = "down".to_string();
                    if let Some(t) = c.retry_at {
                        let _ = write!(
                            s,
                            " (retry in {:.0} s)",
                            t.saturating_sub(now) as f64 / 1000.0
                        );
                    }
                    s
                }
            };
            let _ = writeln!(
                out,
                "{}: {local} === {remote} ({} → {}), {state}",
                cc.name, cc.local_id, cc.remote_id
            );
            for e in self
                .sas
                .values()
                .filter(|e| e.conn == cc.name && e.sa.phase() == Phase::Established)
            {
                let (i, r) = e.sa.spis();
                let _ = writeln!(
                    out,
                    "  IKE SA {i:016x}_i {r:016x}_r ({:?}): {}{}; {} rekeys",
                    e.sa.role(),
                    timers(now, e.sa.rekey_at(), e.sa.expire_at()),
                    e.reauth_at.map_or(String::new(), |t| format!(
                        ", reauthentication in {:.0} s",
                        t.saturating_sub(now) as f64 / 1000.0
                    )),
                    e.sa.rekeys()
                );
                if let Some(err) = e.sa.ike_rekey_error() {
                    let _ = writeln!(out, "    last rekey attempt: {err}");
                }
            }
            if let Some((t, why)) = &c.last_failure {
                let _ = writeln!(out, "  last failure {}: {why}", ago(now, *t));
            }
            for k in &c.children {
                for i in &k.installed {
                    let info = self.sas.get(&i.ike_spi).and_then(|e| {
                        e.sa.children()
                            .iter()
                            .find(|x| x.inbound_spi == i.inbound_spi)
                    });
                    let traffic = |inbound: bool, spi: u32| {
                        let (p, b) = self.traffic.get(&(inbound, spi)).copied().unwrap_or((0, 0));
                        format!("{b} bytes, {p} packets")
                    };
                    let _ = writeln!(
                        out,
                        "  child {}: in spi {:#010x}, out spi {:#010x}{}, {} === {} (reqid {}, up {})",
                        k.cfg.name,
                        i.inbound_spi,
                        i.outbound_spi,
                        if i.outbound_installed { "" } else { " (outbound not yet: the peer has not deleted the old SA)" },
                        ts_list(&i.local_ts),
                        ts_list(&i.remote_ts),
                        k.cfg.reqid,
                        ago(now, i.since)
                    );
                    let _ = writeln!(
                        out,
                        "    in {}; out {}; {}; {} rekeys",
                        traffic(true, i.inbound_spi),
                        traffic(false, i.outbound_spi),
                        timers(
                            now,
                            info.and_then(|x| x.rekey_at),
                            info.and_then(|x| x.expire_at)
                        ),
                        k.rekeys,
                    );
                }
                if let (false, Some((t, why))) = (k.installed.is_empty(), &k.last_failure) {
                    let _ = writeln!(out, "    last rekey failure {}: {why}", ago(now, *t));
                }
                if !k.retiring.is_empty() {
                    let _ = writeln!(
                        out,
                        "  child {}: {} inbound SA(s) replaced by a rekey, kept for packets in flight",
                        k.cfg.name,
                        k.retiring.len()
                    );
                }
                if k.installed.is_empty() {
                    let how = if k.negotiating.is_some() {
                        "negotiating"
                    } else if k.trapped {
                        "trap: the next matching packet negotiates it"
                    } else {
                        "down"
                    };
                    let _ = writeln!(
                        out,
                        "  child {}: {how}; traffic for it is dropped (fail-closed)",
                        k.cfg.name
                    );
                    if let Some((t, why)) = &k.last_failure {
                        let _ = writeln!(out, "    last failure {}: {why}", ago(now, *t));
                    }
                }
                if !k.stale.is_empty() {
                    let _ = writeln!(
                        out,
                        "  child {}: {} SA(s) inherited from the previous iked, still forwarding",
                        k.cfg.name,
                        k.stale.len()
                    );
                }
            }
        }
        out
    }

    fn up(&mut self, now: u64, name: &str) -> Reply {
        let Some(ci) = self.conn_index(name) else {
            return Reply::err(format!("no connection {name:?}"));
        };
        let c = &mut self.conns[ci];
        if c.children.iter().all(|k| !k.installed.is_empty()) {
            return Reply::ok(format!("{name}: already up"));
        }
        for k in &mut c.children {
            k.wanted = true;
            k.last_failure = None;
        }
        c.failures = 0;
        c.retry_at = None;
        self.ensure_up(now, ci);
        Reply::ok(format!("{name}: initiating"))
    }

    fn down(&mut self, now: u64, name: &str) -> Reply {
        let Some(ci) = self.conn_index(name) else {
            return Reply::err(format!("no connection {name:?}"));
        };
        let c = &mut self.conns[ci];
        for k in &mut c.children {
            k.wanted = false;
        }
        c.retry_at = None;
        let n = self.delete_conn_sas(now, name);
        Reply::ok(format!(
            "{name}: {n} IKE SA(s) deleted; its traffic is dropped until it is up again"
        ))
    }

    /// Delete every IKE SA of a connection (telling the peer); returns how many.
    fn delete_conn_sas(&mut self, now: u64, name: &str) -> usize {
        let spis: Vec<u64> = self
            .sas
            .iter()
            .filter(|(_, e)| e.conn == name && e.sa.phase() != Phase::Deleting)
            .map(|(s, _)| *s)
            .collect();
        for &spi in &spis {
            if let Some(e) = self.sas.get_mut(&spi) {
                e.sa.delete(now, &mut *self.rng);
            }
            self.settle(now, spi);
        }
        spis.len()
    }

    /// Apply a new configuration as a diff: unchanged connections are not touched;
    /// removed ones are torn down (peer told, SAs and policies removed); changed ones are
    /// torn down and set up again; added ones are set up. A bad file changes nothing.
    pub fn reload(&mut self, now: u64, new: Result<IkedConfig, String>) -> Reply {
        let new = match new {
            Ok(n) => n,
            Err(e) => return Reply::err(format!("{e}; keeping the running configuration")),
        };
        let old = IkedConfig {
            connections: self.conns.iter().map(|c| c.cfg.clone()).collect(),
        };
        let diff = old.diff(&new);
        for name in diff.removed.iter().chain(&diff.changed) {
            self.delete_conn_sas(now, name);
        }
        let old_base: Vec<_> = self.conns.iter().flat_map(|c| c.base_policies()).collect();
        let mut next: Vec<ConnState> = Vec::new();
        for cfg in new.connections {
            let name = cfg.connection.name.clone();
            match self.conn_index(&name) {
                Some(ci) if diff.unchanged.contains(&name) => {
                    let keep = std::mem::replace(&mut self.conns[ci], ConnState::new(cfg));
                    next.push(keep);
                }
                _ => next.push(ConnState::new(cfg)),
            }
        }
        let new_base: Vec<_> = next.iter().flat_map(|c| c.base_policies()).collect();
        // Policies: add the new before removing the old, so a prefix that stays protected
        // is never unprotected in between; ids that change rules are replaced.
        let mut ops = Vec::new();
        for p in &old_base {
            if !new_base.contains(p) && new_base.iter().any(|n| n.id == p.id) {
                ops.push(DpOp::DeletePolicy(p.id));
            }
        }
        for p in &new_base {
            if !old_base.contains(p) {
                ops.push(DpOp::AddPolicy(p.clone()));
            }
        }
        for p in &old_base {
            if !new_base.iter().any(|n| n.id == p.id) {
                ops.push(DpOp::DeletePolicy(p.id));
            }
        }
        for op in ops {
            self.dp(op);
        }
        self.conns = next;
        self.pending_ensure.clear();
        for ci in 0..self.conns.len() {
            let name = self.conns[ci].name().to_string();
            if !(diff.added.contains(&name) || diff.changed.contains(&name)) {
                continue;
            }
            for k in &mut self.conns[ci].children {
                match k.cfg.start_action {
                    StartAction::Start => k.wanted = true,
                    StartAction::Trap => k.trapped = true,
                    StartAction::None => {}
                }
            }
            self.ensure_up(now, ci);
        }
        let text = format!(
            "reloaded: {} connection(s); unchanged: [{}], changed: [{}], added: [{}], removed: [{}]",
            self.conns.len(),
            diff.unchanged.join(", "),
            diff.changed.join(", "),
            diff.added.join(", "),
            diff.removed.join(", ")
        );
        info!("{text}");
        Reply::ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_say_what_exists() {
        assert_eq!(Request::parse("list"), Ok(Request::List));
        assert_eq!(Request::parse(" up  gw-b "), Ok(Request::Up("gw-b".into())));
        assert_eq!(
            Request::parse("down gw-b"),
            Ok(Request::Down("gw-b".into()))
        );
        assert_eq!(Request::parse("reload"), Ok(Request::Reload));
        assert!(Request::parse("up").unwrap_err().contains("up NAME"));
        assert!(Request::parse("frobnicate").is_err());
    }

    #[test]
    fn replies_round_trip_and_garbage_is_not_one() {
        for r in [Reply::ok("a\nb".into()), Reply::err("no".into())] {
            let back = Reply::decode(&r.encode()).unwrap();
            assert_eq!(back.ok, r.ok);
            assert_eq!(back.text.trim_end(), r.text);
        }
        assert_eq!(Reply::decode("hello\nworld"), None);
    }
}
