//! Operator commands (`vpnctl` over iked's control socket): list, up, down, reload.

use std::fmt::Write as _;

use tracing::Level;

use super::conn::ConnState;
use super::dataplane_ops::DpOp;
use super::{ts_list, Daemon, EventAt};
use crate::config::{IkedConfig, StartAction};
use crate::ike::sa::Phase;

pub use crate::api::{Reply, Request};

/// The request on one line of the control socket (a JSON object, [`Request`]).
pub fn parse_request(line: &str) -> Result<Request, String> {
    serde_json::from_str(line.trim()).map_err(|e| {
        format!("not a request ({e}); requests are JSON objects such as {{\"cmd\":\"list\"}}")
    })
}

/// On the control socket: one JSON object, then the connection closes.
pub fn encode_reply(r: &Reply) -> String {
    // A Reply holds strings and serde_json values only: serialising it cannot fail.
    serde_json::to_string(r).unwrap_or_default() + "\n"
}

/// What [`encode_reply`] wrote; `None` if it is not a reply.
pub fn decode_reply(wire: &str) -> Option<Reply> {
    serde_json::from_str(wire.trim()).ok()
}

fn ok(text: String) -> Reply {
    Reply {
        ok: true,
        text,
        data: serde_json::Value::Null,
    }
}

fn err(text: String) -> Reply {
    Reply {
        ok: false,
        text,
        data: serde_json::Value::Null,
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

/// An event about a connection.
fn at(conn: &str) -> EventAt {
    EventAt {
        conn: Some(conn.to_string()),
        ..EventAt::default()
    }
}

fn ago(now: u64, t: u64) -> String {
    format!("{:.0} s ago", now.saturating_sub(t) as f64 / 1000.0)
}

impl Daemon {
    pub fn handle_request(&mut self, now: u64, req: Request) -> Reply {
        match req {
            Request::List { conn: Some(name) } if !self.has_conn(&name) => {
                err(format!("no connection {name:?}"))
            }
            Request::List { conn } => Reply {
                ok: true,
                text: self.list(now),
                data: serde_json::to_value(self.list_report(now, conn.as_deref()))
                    .unwrap_or_default(),
            },
            Request::Up { conn } => self.up(now, &conn),
            Request::Down { conn } => self.down(now, &conn),
            Request::Reload => err("reload needs the configuration file".into()),
            Request::Events { since, max } => {
                let r = self.events.since(since, max.unwrap_or(1000) as usize);
                Reply {
                    ok: true,
                    text: String::new(),
                    data: serde_json::to_value(r).unwrap_or_default(),
                }
            }
            Request::Status => Reply {
                ok: true,
                text: String::new(),
                data: serde_json::to_value(self.status_report(now)).unwrap_or_default(),
            },
            Request::Keys => Reply {
                ok: true,
                text: String::new(),
                data: serde_json::to_value(self.keys_report()).unwrap_or_default(),
            },
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
            return err(format!("no connection {name:?}"));
        };
        let c = &mut self.conns[ci];
        if c.children.iter().all(|k| !k.installed.is_empty()) {
            return ok(format!("{name}: already up"));
        }
        for k in &mut c.children {
            k.wanted = true;
            k.last_failure = None;
        }
        c.failures = 0;
        c.retry_at = None;
        self.event(
            now,
            Level::INFO,
            "event",
            at(name),
            "vpnctl up: initiating".into(),
        );
        self.ensure_up(now, ci);
        ok(format!("{name}: initiating"))
    }

    fn down(&mut self, now: u64, name: &str) -> Reply {
        let Some(ci) = self.conn_index(name) else {
            return err(format!("no connection {name:?}"));
        };
        let c = &mut self.conns[ci];
        for k in &mut c.children {
            k.wanted = false;
        }
        c.retry_at = None;
        let n = self.delete_conn_sas(now, name);
        let text =
            format!("{name}: {n} IKE SA(s) deleted; its traffic is dropped until it is up again");
        self.event(
            now,
            Level::INFO,
            "event",
            at(name),
            format!("vpnctl down: {text}"),
        );
        ok(text)
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
            Ok(mut n) => {
                super::resolve_resources(&mut n, self.opts.dataplane_workers);
                n
            }
            Err(e) => {
                let text = format!("{e}; keeping the running configuration");
                let line = format!("reload refused: {text}");
                self.event(now, Level::WARN, "event", EventAt::default(), line);
                self.reloaded(now, false, &text);
                return err(text);
            }
        };
        let old = IkedConfig {
            connections: self.conns.iter().map(|c| c.cfg.clone()).collect(),
        };
        let diff = old.diff(&new);
        for name in diff.removed.iter().chain(&diff.changed) {
            self.delete_conn_sas(now, name);
            if let Some(ci) = self.conn_index(name) {
                self.release_leftovers(ci);
            }
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
        self.event(now, Level::INFO, "event", EventAt::default(), text.clone());
        self.reloaded(now, true, &text);
        ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_say_what_they_look_like() {
        assert_eq!(
            parse_request(r#"{"cmd":"list","conn":null}"#),
            Ok(Request::List { conn: None })
        );
        assert_eq!(
            parse_request(r#" {"cmd":"up","conn":"gw-b"} "#),
            Ok(Request::Up {
                conn: "gw-b".into()
            })
        );
        assert_eq!(parse_request(r#"{"cmd":"reload"}"#), Ok(Request::Reload));
        assert!(parse_request(r#"{"cmd":"up"}"#).is_err());
        assert!(parse_request("frobnicate").unwrap_err().contains("JSON"));
    }

    #[test]
    fn replies_round_trip_and_garbage_is_not_one() {
        for r in [ok("a\nb".into()), err("no".into())] {
            assert_eq!(decode_reply(&encode_reply(&r)), Some(r));
        }
        assert_eq!(decode_reply("hello\nworld"), None);
    }
}
