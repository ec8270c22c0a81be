//! The pipeline's in-memory port: a [`WorkerIo`] that allocates nothing while it runs.
//!
//! Buffers come from a pool filled once ([`Shared::new`]). `recv` takes a buffer from the
//! pool and copies the next prebuilt frame of a [`FrameList`] into it (the list is cycled,
//! as a generator replays a capture), or takes frames another worker handed over; `send`
//! either counts the frame and returns its buffer to the pool, or hands the frame itself to
//! the next stage (gateway A's outside → gateway B's outside, in the same thread). Queues
//! are preallocated; nothing grows after setup. A frame the port cannot take is counted in
//! [`PortCounts::port_drops`], never lost silently.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use dataplane::esp::Frame;
use dataplane::io::{Side, WorkerIo};

/// Bytes before the frame in each buffer (room for the outer headers pushed in front).
pub const HEADROOM: usize = 256;
/// Each buffer's size (AF_XDP's usual 2 KiB chunk).
pub const BUF_SIZE: usize = 2048;

/// Prebuilt Ethernet frames a source cycles through, with each one's inner IP length (for
/// Gbit/s of inner bytes whatever the stage sees).
#[derive(Debug, Default)]
pub struct FrameList {
    pub frames: Vec<Vec<u8>>,
    pub inner_len: Vec<u32>,
}

impl FrameList {
    pub fn len(&self) -> usize {
        self.frames.len()
    }
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
    /// Mean inner IP packet length over the list (one period of the size pattern).
    pub fn mean_inner_len(&self) -> f64 {
        if self.inner_len.is_empty() {
            return 0.0;
        }
        self.inner_len.iter().map(|&l| f64::from(l)).sum::<f64>() / self.inner_len.len() as f64
    }
}

/// What a port counted (the pipeline checks them against the workers' counters).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PortCounts {
    /// Frames a source produced.
    pub generated: u64,
    /// Inner bytes of those frames.
    pub generated_bytes: u64,
    /// Frames the final sink received.
    pub delivered: u64,
    /// Frames handed from one stage to the next.
    pub handed_over: u64,
    /// Frames the port could not take (no buffer, frame too large, hand-over queue full).
    pub port_drops: u64,
    /// Frames collected (setup only).
    pub collected: u64,
}

/// State shared by the ports of the workers in one thread (the pool and the hand-over
/// queue between the stages).
pub struct Shared {
    pool: Vec<Vec<u8>>,
    handoff: VecDeque<Frame<Vec<u8>>>,
    handoff_cap: usize,
    pub counts: PortCounts,
    /// Setup only: frames a [`Sink::Collect`] port kept (this allocates).
    pub collected: Vec<Vec<u8>>,
}

impl Shared {
    /// A pool of `buffers` buffers and a hand-over queue of `handoff` frames, allocated now.
    pub fn new(buffers: usize, handoff: usize) -> Rc<RefCell<Shared>> {
        Rc::new(RefCell::new(Shared {
            pool: (0..buffers).map(|_| vec![0u8; BUF_SIZE]).collect(),
            handoff: VecDeque::with_capacity(handoff),
            handoff_cap: handoff,
            counts: PortCounts::default(),
            collected: Vec::new(),
        }))
    }
    /// Buffers in the pool (all of them once the pipeline is drained).
    pub fn pooled(&self) -> usize {
        self.pool.len()
    }
    /// Frames waiting between the stages.
    pub fn in_handoff(&self) -> usize {
        self.handoff.len()
    }
}

/// Where a side's received frames come from.
pub enum Source {
    /// Nothing arrives on this side.
    Empty,
    /// Copies of a prebuilt list, cycled from `next`; at most `budget` frames if set.
    List {
        list: Arc<FrameList>,
        next: usize,
        budget: Option<u64>,
    },
    /// Frames the previous stage handed over.
    Handoff,
}

/// Where a side's transmitted frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Nothing should be sent here: counted as a port drop.
    Unexpected,
    /// The end of the pipeline: count, recycle the buffer.
    Deliver,
    /// To the next stage's outside port.
    Handoff,
    /// Setup only: keep a copy.
    Collect,
}

/// One worker's port.
pub struct BenchPort {
    pub shared: Rc<RefCell<Shared>>,
    /// Indexed by [`side_idx`].
    sources: [Source; 2],
    sinks: [Sink; 2],
}

/// Outside = 0, inside = 1.
pub fn side_idx(side: Side) -> usize {
    match side {
        Side::Outside => 0,
        Side::Inside => 1,
    }
}

impl BenchPort {
    pub fn new(
        shared: Rc<RefCell<Shared>>,
        outside: (Source, Sink),
        inside: (Source, Sink),
    ) -> BenchPort {
        BenchPort {
            shared,
            sources: [outside.0, inside.0],
            sinks: [outside.1, inside.1],
        }
    }
    /// Stop a list source (the end of a timed run: what is in flight drains).
    pub fn stop_sources(&mut self) {
        for s in &mut self.sources {
            if let Source::List { budget, .. } = s {
                *budget = Some(0);
            }
        }
    }
}

impl WorkerIo for BenchPort {
    type Buf = Vec<u8>;

    fn recv(&mut self, side: Side, out: &mut Vec<Frame<Vec<u8>>>, max: usize) {
        let mut sh = self.shared.borrow_mut();
        match &mut self.sources[side_idx(side)] {
            Source::Empty => {}
            Source::Handoff => {
                for _ in 0..max {
                    let Some(f) = sh.handoff.pop_front() else {
                        break;
                    };
                    out.push(f);
                }
            }
            Source::List { list, next, budget } => {
                let n = budget.map_or(max, |b| (b.min(max as u64)) as usize);
                for _ in 0..n {
                    let Some(buf) = sh.pool.pop() else {
                        break; // back-pressure: nothing taken from the list, nothing lost
                    };
                    let frame = &list.frames[*next];
                    let inner = u64::from(list.inner_len[*next]);
                    *next += 1;
                    if *next == list.frames.len() {
                        *next = 0;
                    }
                    if let Some(b) = budget {
                        *b -= 1;
                    }
                    sh.counts.generated += 1;
                    sh.counts.generated_bytes += inner;
                    if HEADROOM + frame.len() > buf.len() {
                        sh.counts.port_drops += 1;
                        sh.pool.push(buf);
                        continue;
                    }
                    match Frame::with_packet(buf, HEADROOM, frame) {
                        Some(f) => out.push(f),
                        None => sh.counts.port_drops += 1, // unreachable: length checked above
                    }
                }
            }
        }
    }

    fn send(&mut self, side: Side, f: Frame<Vec<u8>>) -> Result<(), Frame<Vec<u8>>> {
        let mut sh = self.shared.borrow_mut();
        match self.sinks[side_idx(side)] {
            Sink::Deliver => {
                sh.counts.delivered += 1;
                sh.pool.push(f.into_buffer());
            }
            Sink::Handoff => {
                if sh.handoff.len() >= sh.handoff_cap {
                    return Err(f); // the worker counts it (TxFull)
                }
                sh.counts.handed_over += 1;
                sh.handoff.push_back(f);
            }
            Sink::Collect => {
                sh.counts.collected += 1;
                let copy = f.data().to_vec();
                sh.collected.push(copy);
                sh.pool.push(f.into_buffer());
            }
            Sink::Unexpected => {
                sh.counts.port_drops += 1;
                sh.pool.push(f.into_buffer());
            }
        }
        Ok(())
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        self.shared.borrow_mut().pool.push(buf);
    }

    fn flush(&mut self) {}

    fn idle(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: usize) -> Arc<FrameList> {
        Arc::new(FrameList {
            frames: (0..n).map(|i| vec![i as u8; 60 + i]).collect(),
            inner_len: (0..n).map(|i| 46 + i as u32).collect(),
        })
    }

    #[test]
    fn list_source_cycles_respects_budget_and_recycles() {
        let sh = Shared::new(8, 8);
        let mut p = BenchPort::new(
            sh.clone(),
            (Source::Empty, Sink::Deliver),
            (
                Source::List {
                    list: list(3),
                    next: 0,
                    budget: Some(5),
                },
                Sink::Unexpected,
            ),
        );
        let mut out = Vec::new();
        p.recv(Side::Outside, &mut out, 4);
        assert!(out.is_empty());
        p.recv(Side::Inside, &mut out, 4);
        assert_eq!(out.len(), 4);
        assert_eq!(
            out[3].data(),
            &vec![0u8; 60][..],
            "cycled back to the first"
        );
        assert_eq!(sh.borrow().pooled(), 4);
        for f in out.drain(..) {
            p.send(Side::Outside, f).unwrap();
        }
        p.recv(Side::Inside, &mut out, 4);
        assert_eq!(out.len(), 1, "budget of 5");
        let c = sh.borrow().counts;
        assert_eq!((c.generated, c.delivered, c.port_drops), (5, 4, 0));
        assert_eq!(c.generated_bytes, 46 + 47 + 48 + 46 + 47);
        p.recycle(out.pop().unwrap().into_buffer());
        assert_eq!(sh.borrow().pooled(), 8);
    }

    #[test]
    fn handoff_moves_frames_and_is_bounded() {
        let sh = Shared::new(8, 2);
        let mut a = BenchPort::new(
            sh.clone(),
            (Source::Empty, Sink::Handoff),
            (
                Source::List {
                    list: list(1),
                    next: 0,
                    budget: None,
                },
                Sink::Unexpected,
            ),
        );
        let mut b = BenchPort::new(
            sh.clone(),
            (Source::Handoff, Sink::Unexpected),
            (Source::Empty, Sink::Deliver),
        );
        let mut out = Vec::new();
        a.recv(Side::Inside, &mut out, 3);
        let mut it = out.drain(..);
        a.send(Side::Outside, it.next().unwrap()).unwrap();
        a.send(Side::Outside, it.next().unwrap()).unwrap();
        assert!(
            a.send(Side::Outside, it.next().unwrap()).is_err(),
            "queue full"
        );
        drop(it);
        let mut got = Vec::new();
        b.recv(Side::Outside, &mut got, 8);
        assert_eq!(got.len(), 2);
        assert_eq!(sh.borrow().in_handoff(), 0);
        for f in got {
            b.send(Side::Inside, f).unwrap();
        }
        assert_eq!(sh.borrow().counts.delivered, 2);
        // The one refused frame was dropped by this test (a worker would recycle it).
        assert_eq!(sh.borrow().pooled(), 7);
    }

    #[test]
    fn unexpected_sends_are_counted() {
        let sh = Shared::new(2, 2);
        let mut p = BenchPort::new(
            sh.clone(),
            (Source::Empty, Sink::Unexpected),
            (Source::Empty, Sink::Unexpected),
        );
        let f = Frame::with_packet(vec![0u8; BUF_SIZE], HEADROOM, &[1, 2, 3]).unwrap();
        p.send(Side::Inside, f).unwrap();
        assert_eq!(sh.borrow().counts.port_drops, 1);
    }
}
