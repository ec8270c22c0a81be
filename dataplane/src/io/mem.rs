//! In-memory ports: a [`WorkerIo`] without sockets, for tests and the pipeline benchmark.

use std::collections::VecDeque;

use super::{Side, WorkerIo};
use crate::esp::Frame;

/// In-memory ports: tests push frames into `rx`, read what the worker sent from `tx`.
#[derive(Debug)]
pub struct MemIo {
    pub rx: [VecDeque<Vec<u8>>; 2],
    pub tx: [Vec<Vec<u8>>; 2],
    pub headroom: usize,
    pub buf_size: usize,
    pub tx_limit: usize,
    pool: Vec<Vec<u8>>,
}

fn idx(side: Side) -> usize {
    match side {
        Side::Outside => 0,
        Side::Inside => 1,
    }
}

impl MemIo {
    pub fn new(headroom: usize, buf_size: usize) -> MemIo {
        MemIo {
            rx: [VecDeque::new(), VecDeque::new()],
            tx: [Vec::new(), Vec::new()],
            headroom,
            buf_size,
            tx_limit: usize::MAX,
            pool: Vec::new(),
        }
    }
    /// Queue an Ethernet frame as if it arrived on `side`.
    pub fn inject(&mut self, side: Side, frame: &[u8]) {
        self.rx[idx(side)].push_back(frame.to_vec());
    }
    /// Frames the worker transmitted on `side`, oldest first.
    pub fn take_sent(&mut self, side: Side) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.tx[idx(side)])
    }
}

impl WorkerIo for MemIo {
    type Buf = Vec<u8>;

    fn recv(&mut self, side: Side, out: &mut Vec<Frame<Vec<u8>>>, max: usize) {
        for _ in 0..max {
            let Some(pkt) = self.rx[idx(side)].pop_front() else {
                break;
            };
            let buf = self.pool.pop().unwrap_or_else(|| vec![0u8; self.buf_size]);
            if let Some(f) = Frame::with_packet(buf, self.headroom, &pkt) {
                out.push(f);
            }
        }
    }

    fn send(&mut self, side: Side, f: Frame<Vec<u8>>) -> Result<(), Frame<Vec<u8>>> {
        if self.tx[idx(side)].len() >= self.tx_limit {
            return Err(f);
        }
        self.tx[idx(side)].push(f.data().to_vec());
        self.pool.push(f.into_buffer());
        Ok(())
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        self.pool.push(buf);
    }

    fn flush(&mut self) {}

    fn idle(&mut self) {}
}
