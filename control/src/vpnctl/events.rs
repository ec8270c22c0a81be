//! `vpnctl log [--follow]` and `vpnctl trace [CONN]`: iked's recent events and IKE message
//! summaries, read from its event buffer by sequence number (`Request::Events`).
//!
//! Following is polling: ask for everything after the last sequence number seen, every
//! [`POLL`]. Events the buffer dropped before they were read are reported as lost, never
//! skipped silently.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cli::Cli;
use super::{print_json, request, CmdError, Exit};
use crate::api::{Document, EventRecord, EventsReport, Request};

/// How often a follower asks for new events.
pub const POLL: Duration = Duration::from_millis(200);

/// Events after `since` (at most `max`) from iked.
pub fn fetch(socket: &Path, since: u64, max: u32) -> Result<EventsReport, CmdError> {
    let r = request(
        socket,
        &Request::Events {
            since,
            max: Some(max),
        },
    )?;
    if !r.ok {
        return Err(CmdError::failed(format!("iked refused: {}", r.text.trim())));
    }
    serde_json::from_value(r.data)
        .map_err(|e| CmdError::failed(format!("iked's events are not ones this vpnctl reads: {e}")))
}

/// "2026-05-01 12:00:01.123" (UTC) of a Unix time in ms.
pub fn timestamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// One event as a line: time, level, where, message.
pub fn format_event(e: &EventRecord) -> String {
    let mut at = Vec::new();
    if let Some(c) = &e.conn {
        at.push(c.clone());
    }
    if let Some(p) = &e.peer {
        at.push(p.clone());
    }
    if let Some(s) = &e.ike_spi {
        at.push(format!("ike {s}"));
    }
    format!(
        "{} {:<5} {}{}",
        timestamp(e.at_unix_ms),
        e.level.to_ascii_uppercase(),
        if at.is_empty() {
            String::new()
        } else {
            format!("[{}] ", at.join(" "))
        },
        e.message
    )
}

/// Whether `trace` shows this event: an IKE message summary, of the connection if one is
/// named.
pub fn is_trace_of(e: &EventRecord, conn: Option<&str>) -> bool {
    e.kind == "trace" && conn.is_none_or(|c| e.conn.as_deref() == Some(c))
}

/// Where `follow` stops.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// After this many matching events.
    pub count: Option<u64>,
    /// At this time.
    pub until: Option<Instant>,
}

/// Why `follow` stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Count,
    Timeout,
    Interrupted,
}

/// Follow the event log from `since`: fetch, hand each event `keep` accepts to `emit`,
/// report losses, sleep, until a limit or `stop`. Pure enough to test: the fetch, the
/// sleep and the output are the caller's.
#[allow(clippy::too_many_arguments)]
pub fn follow(
    mut since: u64,
    mut fetch: impl FnMut(u64) -> Result<EventsReport, CmdError>,
    keep: impl Fn(&EventRecord) -> bool,
    mut emit: impl FnMut(&EventRecord),
    mut lost: impl FnMut(u64),
    limits: Limits,
    stop: &AtomicBool,
    mut sleep: impl FnMut(Duration),
    mut clock: impl FnMut() -> Instant,
) -> Result<(Stopped, u64), CmdError> {
    let mut seen = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok((Stopped::Interrupted, seen));
        }
        if limits.until.is_some_and(|u| clock() >= u) {
            return Ok((Stopped::Timeout, seen));
        }
        let r = fetch(since)?;
        if r.lost > 0 {
            lost(r.lost);
        }
        for e in r.events.iter().filter(|e| keep(e)) {
            emit(e);
            seen += 1;
            if limits.count.is_some_and(|c| seen >= c) {
                return Ok((Stopped::Count, seen));
            }
        }
        since = r.next;
        if r.events.is_empty() {
            sleep(POLL);
        }
    }
}

fn interrupt_flag() -> Result<Arc<AtomicBool>, CmdError> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    ctrlc::set_handler(move || s.store(true, Ordering::Relaxed))
        .map_err(|e| CmdError::failed(format!("signal handler: {e}")))?;
    Ok(stop)
}

/// One compact JSON document on one line (`--follow --json`: JSON lines).
fn json_line(e: &EventRecord) {
    let doc = Document::new(
        "events",
        EventsReport {
            next: e.seq,
            lost: 0,
            newest: e.seq,
            events: vec![e.clone()],
        },
    );
    println!("{}", serde_json::to_string(&doc).unwrap_or_default());
}

/// Whether `log` shows this event: a log line, not an IKE message summary (`trace` shows
/// those).
pub fn is_log_line(e: &EventRecord) -> bool {
    e.kind != "trace"
}

/// The last `lines` log lines of a buffer read whole (IKE message summaries left out).
pub fn last_lines(r: EventsReport, lines: u32) -> EventsReport {
    let mut events: Vec<EventRecord> = r.events.into_iter().filter(is_log_line).collect();
    let skip = events.len().saturating_sub(lines as usize);
    events.drain(..skip);
    EventsReport { events, ..r }
}

pub fn log(cli: &Cli, follow_on: bool, lines: u32) -> Result<Exit, CmdError> {
    // The whole buffer (IKE message summaries are interleaved: the last N lines may reach
    // back further than N events), keeping the last `lines` log lines.
    let head = fetch(&cli.socket, u64::MAX - 1, 0)?;
    let since = head
        .newest
        .saturating_sub(crate::daemon::events::EVENT_CAPACITY as u64);
    let r = last_lines(
        fetch(
            &cli.socket,
            since,
            crate::daemon::events::EVENT_CAPACITY as u32,
        )?,
        lines,
    );
    if !follow_on {
        if cli.json {
            print_json("events", &r);
        } else {
            for e in &r.events {
                println!("{}", format_event(e));
            }
        }
        return Ok(Exit::Ok);
    }
    for e in &r.events {
        if cli.json {
            json_line(e);
        } else {
            println!("{}", format_event(e));
        }
    }
    let stop = interrupt_flag()?;
    let socket = cli.socket.clone();
    follow(
        r.next,
        |s| fetch(&socket, s, 1000),
        is_log_line,
        |e| {
            if cli.json {
                json_line(e);
            } else {
                println!("{}", format_event(e));
            }
        },
        |n| eprintln!("vpnctl: {n} event(s) lost (iked's buffer moved on before they were read)"),
        Limits {
            count: None,
            until: None,
        },
        &stop,
        std::thread::sleep,
        Instant::now,
    )?;
    Ok(Exit::Ok)
}

/// `trace`: IKE messages from now on. Ends after `count` messages, at `timeout_s`, or on
/// Ctrl-C; exits 1 when a `--count` was not reached.
pub fn trace(
    cli: &Cli,
    conn: Option<&str>,
    count: Option<u64>,
    timeout_s: Option<f64>,
) -> Result<Exit, CmdError> {
    let head = fetch(&cli.socket, u64::MAX - 1, 0)?;
    let stop = interrupt_flag()?;
    let socket = cli.socket.clone();
    let mut got: Vec<EventRecord> = Vec::new();
    // On stderr, also with --json: once it is printed, every later message is shown (a
    // script waits for this line before it makes traffic).
    eprintln!(
        "tracing IKE messages{} from event {} on (Ctrl-C to stop)",
        conn.map_or(String::new(), |c| format!(" of {c}")),
        head.newest
    );
    let (why, n) = follow(
        head.newest,
        |s| fetch(&socket, s, 1000),
        |e| is_trace_of(e, conn),
        |e| {
            if cli.json {
                got.push(e.clone());
            } else {
                println!("{}", format_event(e));
            }
        },
        |n| eprintln!("vpnctl: {n} event(s) lost (iked's buffer moved on before they were read)"),
        Limits {
            count,
            until: timeout_s.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0))),
        },
        &stop,
        std::thread::sleep,
        Instant::now,
    )?;
    if cli.json {
        let next = got.last().map_or(head.newest, |e| e.seq);
        print_json(
            "events",
            &EventsReport {
                next,
                lost: 0,
                newest: next,
                events: got,
            },
        );
    }
    match (why, count) {
        (Stopped::Timeout, Some(c)) => Err(CmdError::failed(format!(
            "{n} of {c} IKE message(s) seen before the timeout"
        ))),
        _ => Ok(Exit::Ok),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::events::EventLog;
    use std::cell::{Cell, RefCell};

    fn ev(kind: &str, conn: &str, msg: &str) -> EventRecord {
        EventRecord {
            at_unix_ms: 1_700_000_000_123,
            level: "info".into(),
            kind: kind.into(),
            conn: Some(conn.into()),
            peer: Some("192.0.2.2:500".into()),
            message: msg.into(),
            ..EventRecord::default()
        }
    }

    #[test]
    fn log_keeps_the_last_lines_and_leaves_ike_messages_to_trace() {
        let mut l = EventLog::with_capacity(10);
        for i in 0..4 {
            l.push(ev("event", "x", &format!("line {i}")));
            l.push(ev("trace", "x", "sending INFORMATIONAL request [ ]"));
        }
        let r = last_lines(l.since(0, 100), 2);
        let msgs: Vec<_> = r.events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs, ["line 2", "line 3"]);
        assert_eq!(r.newest, 8);
        assert_eq!(last_lines(l.since(0, 100), 50).events.len(), 4);
    }

    #[test]
    fn timestamps_are_utc_calendar_times() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000");
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn trace_shows_the_ike_messages_of_the_connection_as_they_arrive() {
        // iked's event log, filled while the trace follows it.
        let log = RefCell::new(EventLog::with_capacity(100));
        log.borrow_mut()
            .push(ev("trace", "gw-b", "before the trace started"));
        let start = log.borrow().since(0, 0).newest;
        let polls = Cell::new(0);
        let fetch = |since: u64| {
            polls.set(polls.get() + 1);
            let mut l = log.borrow_mut();
            match polls.get() {
                1 => {
                    l.push(ev("event", "gw-b", "IKE SA established"));
                    l.push(ev(
                        "trace",
                        "gw-c",
                        "sending IKE_SA_INIT request 0 [ SA KE No ]",
                    ));
                }
                2 => {
                    l.push(ev(
                        "trace",
                        "gw-b",
                        "sending IKE_AUTH request 1 [ IDi AUTH SA TSi TSr ]",
                    ));
                }
                3 => {
                    l.push(ev(
                        "trace",
                        "gw-b",
                        "received IKE_AUTH response 1 [ IDr AUTH SA TSi TSr ]",
                    ));
                }
                _ => {
                    l.push(ev("trace", "gw-b", "one too many"));
                }
            }
            Ok(l.since(since, 1000))
        };
        let mut shown = Vec::new();
        let stop = AtomicBool::new(false);
        let t0 = Instant::now();
        let (why, n) = follow(
            start,
            fetch,
            |e| is_trace_of(e, Some("gw-b")),
            |e| shown.push(format_event(e)),
            |_| panic!("nothing lost"),
            Limits {
                count: Some(2),
                until: None,
            },
            &stop,
            |_| {},
            || t0,
        )
        .unwrap();
        assert_eq!((why, n), (Stopped::Count, 2));
        assert_eq!(
            shown,
            [
                "2023-11-14 22:13:20.123 INFO  [gw-b 192.0.2.2:500] sending IKE_AUTH request 1 [ IDi AUTH SA TSi TSr ]",
                "2023-11-14 22:13:20.123 INFO  [gw-b 192.0.2.2:500] received IKE_AUTH response 1 [ IDr AUTH SA TSi TSr ]",
            ]
        );
    }

    #[test]
    fn a_follower_stops_at_its_timeout_and_reports_what_it_lost() {
        let mut log = EventLog::with_capacity(2);
        for i in 0..5 {
            log.push(ev("event", "x", &format!("e{i}")));
        }
        let now = Cell::new(Instant::now());
        let end = now.get() + Duration::from_secs(1);
        let mut lost = 0;
        let mut shown = Vec::new();
        let stop = AtomicBool::new(false);
        let (why, n) = follow(
            0,
            |s| Ok(log.since(s, 1000)),
            |_| true,
            |e| shown.push(e.message.clone()),
            |n| lost += n,
            Limits {
                count: None,
                until: Some(end),
            },
            &stop,
            |d| now.set(now.get() + d),
            || now.get(),
        )
        .unwrap();
        assert_eq!(why, Stopped::Timeout);
        assert_eq!((n, shown), (2, vec!["e3".to_string(), "e4".to_string()]));
        assert_eq!(lost, 3, "e0..e2 fell out of a buffer of 2");
        stop.store(true, Ordering::Relaxed);
        let r = follow(
            0,
            |_| panic!("not asked once interrupted"),
            |_| true,
            |_| {},
            |_| {},
            Limits {
                count: None,
                until: None,
            },
            &stop,
            |_| {},
            Instant::now,
        );
        assert_eq!(r.unwrap().0, Stopped::Interrupted);
    }
}
