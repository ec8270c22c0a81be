//! A packet in a caller-owned buffer, with headroom in front and tailroom behind.
//!
//! The engine grows and shrinks the packet at both ends in place: encapsulation pushes
//! outer headers into the headroom and padding plus ICV into the tailroom; decapsulation
//! moves the start forward and the end back. No byte of the payload is copied.

/// A packet occupying `buf[head..head + len]`.
#[derive(Debug, Clone)]
pub struct Frame<B> {
    buf: B,
    head: usize,
    len: usize,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Frame<B> {
    /// A packet of `len` bytes starting `head` bytes into `buf`.
    /// Returns `None` if it does not fit.
    pub fn new(buf: B, head: usize, len: usize) -> Option<Frame<B>> {
        if head.checked_add(len)? > buf.as_ref().len() {
            return None;
        }
        Some(Frame { buf, head, len })
    }

    /// Copy `packet` into `buf`, leaving `headroom` bytes in front.
    pub fn with_packet(mut buf: B, headroom: usize, packet: &[u8]) -> Option<Frame<B>> {
        let end = headroom.checked_add(packet.len())?;
        buf.as_mut().get_mut(headroom..end)?.copy_from_slice(packet);
        Some(Frame {
            buf,
            head: headroom,
            len: packet.len(),
        })
    }

    pub fn data(&self) -> &[u8] {
        &self.buf.as_ref()[self.head..self.head + self.len]
    }
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (h, l) = (self.head, self.len);
        &mut self.buf.as_mut()[h..h + l]
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Offset of the first packet byte in the buffer.
    pub fn head(&self) -> usize {
        self.head
    }
    pub fn headroom(&self) -> usize {
        self.head
    }
    pub fn tailroom(&self) -> usize {
        self.buf.as_ref().len() - self.head - self.len
    }
    pub fn buffer(&self) -> &B {
        &self.buf
    }
    pub fn into_buffer(self) -> B {
        self.buf
    }

    /// Extend the packet `n` bytes into the headroom. False (and unchanged) if there is no room.
    pub fn push_front(&mut self, n: usize) -> bool {
        if n > self.head {
            return false;
        }
        self.head -= n;
        self.len += n;
        true
    }
    /// Drop `n` bytes from the front. False (and unchanged) if the packet is shorter.
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.head += n;
        self.len -= n;
        true
    }
    /// Extend the packet `n` bytes into the tailroom. False (and unchanged) if there is no room.
    pub fn push_back(&mut self, n: usize) -> bool {
        if n > self.tailroom() {
            return false;
        }
        self.len += n;
        true
    }
    /// Shorten the packet to `len` bytes (no-op if already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
    /// Set start and length directly (both relative to the buffer). False if out of bounds.
    pub fn set_bounds(&mut self, head: usize, len: usize) -> bool {
        match head.checked_add(len) {
            Some(end) if end <= self.buf.as_ref().len() => {
                self.head = head;
                self.len = len;
                true
            }
            _ => false,
        }
    }
    /// The whole buffer, for in-place moves that span headroom and packet.
    pub fn raw_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_shrinks_within_bounds() {
        let mut f = Frame::with_packet(vec![0u8; 32], 8, &[1, 2, 3, 4]).unwrap();
        assert_eq!((f.headroom(), f.len(), f.tailroom()), (8, 4, 20));
        assert!(f.push_front(8));
        assert!(!f.push_front(1));
        assert!(f.push_back(20));
        assert!(!f.push_back(1));
        assert!(f.pull_front(10));
        assert!(!f.pull_front(100));
        f.truncate(3);
        assert_eq!(f.len(), 3);
        assert_eq!(f.data(), &[3, 4, 0]);
        assert!(Frame::new(vec![0u8; 4], 2, 3).is_none());
        assert!(Frame::with_packet(vec![0u8; 4], 2, &[0; 3]).is_none());
    }
}
