//! The daemon's recent events, for `vpnctl log --follow` and `vpnctl trace`: a bounded
//! buffer of [`EventRecord`]s with sequence numbers, so a reader asks "everything after N"
//! and learns how many it missed. Every event is logged once through `tracing` by whoever
//! records it here (one line per event; see [`super::Daemon::event`]).

use std::collections::VecDeque;

use crate::api::{EventRecord, EventsReport};

/// How many events the buffer keeps.
pub const EVENT_CAPACITY: usize = 4096;

#[derive(Debug)]
pub struct EventLog {
    buf: VecDeque<EventRecord>,
    next_seq: u64,
    cap: usize,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::with_capacity(EVENT_CAPACITY)
    }
}

impl EventLog {
    pub fn with_capacity(cap: usize) -> EventLog {
        EventLog {
            buf: VecDeque::with_capacity(cap.min(1024)),
            next_seq: 1,
            cap: cap.max(1),
        }
    }

    /// Keep `e`, giving it the next sequence number (returned).
    pub fn push(&mut self, mut e: EventRecord) -> u64 {
        e.seq = self.next_seq;
        self.next_seq += 1;
        if self.buf.len() == self.cap {
            self.buf.pop_front();
        }
        self.buf.push_back(e);
        self.next_seq - 1
    }

    /// Events with a sequence number above `since`, oldest first, at most `max`.
    pub fn since(&self, since: u64, max: usize) -> EventsReport {
        let oldest = self.buf.front().map_or(self.next_seq, |e| e.seq);
        let lost = oldest.saturating_sub(since + 1);
        let events: Vec<EventRecord> = self
            .buf
            .iter()
            .filter(|e| e.seq > since)
            .take(max)
            .cloned()
            .collect();
        let next = events
            .last()
            .map_or(since.max(oldest.saturating_sub(1)), |e| e.seq);
        EventsReport {
            next,
            lost,
            newest: self.next_seq - 1,
            events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(m: &str) -> EventRecord {
        EventRecord {
            message: m.into(),
            ..EventRecord::default()
        }
    }

    #[test]
    fn readers_get_what_follows_and_learn_what_they_lost() {
        let mut l = EventLog::with_capacity(3);
        for m in ["a", "b", "c", "d"] {
            l.push(ev(m));
        }
        let r = l.since(0, 10);
        assert_eq!(r.lost, 1, "event 1 fell out of a buffer of 3");
        let msgs: Vec<_> = r.events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs, ["b", "c", "d"]);
        assert_eq!(r.next, 4);
        let r = l.since(4, 10);
        assert!(r.events.is_empty() && r.lost == 0 && r.next == 4);
        let r = l.since(2, 1);
        assert_eq!((r.events[0].message.as_str(), r.next), ("c", 3));
    }
}
