//! A bounds-checked cursor over untrusted bytes (in the manner of hickory-proto's
//! `BinDecoder`): every read says how far it goes and fails with [`WireError::Short`] instead of
//! indexing past the end. Queries from clients and replies from upstreams are read only through
//! it (and through the name readers built on it, `super::name`).

/// Why bytes could not be read as DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message too short")]
    Short,
    /// A label of a reserved type (0x40, 0x80), or a name longer than 255 octets.
    #[error("bad domain name")]
    BadName,
    /// A compression pointer that does not point backwards, or too many of them.
    #[error("bad compression pointer")]
    Pointer,
    #[error("not exactly one question")]
    NotOneQuestion,
    /// A second OPT record, an OPT whose owner is not the root, or options that do not add
    /// up to its RDATA.
    #[error("bad OPT record")]
    BadOpt,
    /// RDATA that does not hold what its type says (an A record of 3 bytes, a CNAME whose
    /// name does not end where the RDATA does), or an OPT record outside the additional section.
    #[error("bad record data")]
    BadRdata,
}

/// The cursor: a message and a position in it.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// At the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    /// At `pos` in `buf` (reads fail if `pos` is past the end).
    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Decoder { buf, pos }
    }

    /// The whole message (name readers follow compression pointers into it).
    #[inline]
    pub fn message(&self) -> &'a [u8] {
        self.buf
    }

    #[inline]
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left from the position on.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    #[inline]
    pub fn peek_u8(&self) -> Result<u8, WireError> {
        self.buf.get(self.pos).copied().ok_or(WireError::Short)
    }

    #[inline]
    pub fn u8(&mut self) -> Result<u8, WireError> {
        let b = self.peek_u8()?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    pub fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    #[inline]
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The next `n` bytes.
    #[inline]
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Short)?;
        let b = self.buf.get(self.pos..end).ok_or(WireError::Short)?;
        self.pos = end;
        Ok(b)
    }

    #[inline]
    pub fn skip(&mut self, n: usize) -> Result<(), WireError> {
        self.bytes(n).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_end() {
        let mut d = Decoder::new(&[1, 2, 3, 4, 5]);
        assert_eq!(d.u8(), Ok(1));
        assert_eq!(d.u16(), Ok(0x0203));
        assert_eq!(d.u32(), Err(WireError::Short));
        assert_eq!(d.pos(), 3, "a failed read does not move");
        assert_eq!(d.bytes(2), Ok(&[4u8, 5][..]));
        assert!(d.is_empty());
        assert_eq!(d.u8(), Err(WireError::Short));
        assert_eq!(Decoder::at(&[1], 7).u8(), Err(WireError::Short));
        assert_eq!(Decoder::at(&[1], 1).skip(usize::MAX), Err(WireError::Short));
    }
}
