//! A bounded cursor over received bytes.

use bytes::Bytes;

use super::error::{DecodeError, DecodeErrorKind};

/// Reads from a `Bytes` buffer without ever reading past its end.
///
/// Slices handed out by [`Reader::take_bytes`] share the underlying buffer,
/// so binary payloads are not copied.
#[derive(Debug, Clone)]
pub struct Reader {
    data: Bytes,
    pos: usize,
}

impl Reader {
    /// A reader over all of `data`.
    pub fn new(data: Bytes) -> Self {
        Self { data, pos: 0 }
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Fails with `TrailingBytes` unless every byte has been read.
    pub fn expect_empty(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeErrorKind::TrailingBytes.into())
        }
    }

    /// The next byte, without consuming it.
    pub fn peek_u8(&self) -> Result<u8, DecodeError> {
        self.data
            .get(self.pos)
            .copied()
            .ok_or(DecodeErrorKind::Truncated.into())
    }

    /// Consumes `n` bytes as a borrowed slice.
    pub fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeErrorKind::Truncated.into());
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.data[start..self.pos])
    }

    /// Consumes `n` bytes as a zero-copy slice of the buffer.
    pub fn take_bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if n > self.remaining() {
            return Err(DecodeErrorKind::Truncated.into());
        }
        let start = self.pos;
        self.pos += n;
        Ok(self.data.slice(start..self.pos))
    }

    /// Consumes everything that is left.
    pub fn take_rest(&mut self) -> Bytes {
        let rest = self.data.slice(self.pos..);
        self.pos = self.data.len();
        rest
    }

    /// A reader over the next `n` bytes, which this reader skips.
    pub fn sub(&mut self, n: usize) -> Result<Reader, DecodeError> {
        self.take_bytes(n).map(Reader::new)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = self.peek_u8()?;
        self.pos += 1;
        Ok(b)
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    /// A big-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    /// `N` raw bytes.
    pub fn bytes<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.array()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_reads_past_the_end() {
        let mut r = Reader::new(Bytes::from_static(&[1, 2, 3]));
        assert_eq!(r.u16(), Ok(0x0102));
        assert_eq!(r.u16(), Err(DecodeErrorKind::Truncated.into()));
        assert_eq!(r.remaining(), 1, "a failed read consumes nothing");
        assert_eq!(r.u8(), Ok(3));
        assert_eq!(r.u8(), Err(DecodeErrorKind::Truncated.into()));
        r.expect_empty().unwrap();
    }

    #[test]
    fn sub_reader_is_bounded_and_shares_the_buffer() {
        let mut r = Reader::new(Bytes::from_static(b"abcdef"));
        let mut sub = r.sub(2).unwrap();
        assert_eq!(sub.take_rest(), Bytes::from_static(b"ab"));
        assert_eq!(r.take(5), Err(DecodeErrorKind::Truncated.into()));
        assert_eq!(r.take_bytes(4).unwrap(), Bytes::from_static(b"cdef"));
    }
}
