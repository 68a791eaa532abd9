//! Zigzag varints (protobuf `sint64` encoding), as Kafka's record format uses them.
//!
//! The decoder works on a borrowed cursor and never allocates; a varint longer than ten bytes
//! or running off the end is an error, so hostile input cannot make it loop or overflow.

use bytes::BufMut;

/// Bytes the zigzag varint encoding of `v` takes.
pub(crate) fn varint_len(v: i64) -> usize {
    let z = zigzag(v);
    // 1 byte per started group of 7 bits, at least one.
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends the zigzag varint encoding of `v`.
pub(crate) fn put_varint(buf: &mut impl BufMut, v: i64) {
    let mut z = zigzag(v);
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// A read position over a byte slice. Every read is bounds-checked and returns `None` when the
/// bytes run out.
#[derive(Debug)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes, or `None` if fewer remain.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.remaining() {
            return None;
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Some(out)
    }

    /// A zigzag varint of at most ten bytes.
    pub(crate) fn varint(&mut self) -> Option<i64> {
        let mut z: u64 = 0;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos)?;
            self.pos += 1;
            z |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(unzigzag(z));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edge_values() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "length of {v}");
            let mut c = Cursor::new(&buf);
            assert_eq!(c.varint(), Some(v));
            assert!(c.is_empty());
        }
    }

    #[test]
    fn rejects_runaway_and_truncated_varints() {
        assert_eq!(Cursor::new(&[0xff; 11]).varint(), None);
        assert_eq!(Cursor::new(&[0x80]).varint(), None);
        assert_eq!(Cursor::new(&[]).varint(), None);
    }
}
