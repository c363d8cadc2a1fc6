//! Bytes as the slices they arrived in: a `Write` message's data is the
//! HTTP/2 frames that carried it (16 KiB each by default), never copied
//! into one buffer on the way to a file or an object's parts.

use bytes::Bytes;

/// A sequence of byte slices read as one run of bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rope {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Rope {
    /// The slices, in order; none is empty.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `crc`, the CRC32C of the bytes before these, carried over them.
    pub fn crc32c_append(&self, crc: u32) -> u32 {
        self.chunks
            .iter()
            .fold(crc, |crc, chunk| crc32c::crc32c_append(crc, chunk))
    }

    /// The bytes in one buffer: the slice itself when there is one, a copy
    /// of them all otherwise.
    pub fn into_bytes(self) -> Bytes {
        match <[Bytes; 1]>::try_from(self.chunks) {
            Ok([one]) => one,
            Err(chunks) => Bytes::from(chunks.concat()),
        }
    }

    /// The bytes after the first `skip`, copied into a buffer of their own
    /// (a slice would keep the whole of what they were sent in alive).
    pub fn copy_after(&self, skip: usize) -> Rope {
        let mut out = Vec::with_capacity(self.len.saturating_sub(skip));
        let mut skip = skip;
        for chunk in &self.chunks {
            if skip >= chunk.len() {
                skip -= chunk.len();
                continue;
            }
            out.extend_from_slice(&chunk[skip..]);
            skip = 0;
        }
        Rope::from(Bytes::from(out))
    }
}

impl From<Bytes> for Rope {
    fn from(bytes: Bytes) -> Rope {
        Rope::from(vec![bytes])
    }
}

impl From<Vec<Bytes>> for Rope {
    fn from(mut chunks: Vec<Bytes>) -> Rope {
        chunks.retain(|c| !c.is_empty());
        let len = chunks.iter().map(Bytes::len).sum();
        Rope { chunks, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rope(parts: &[&'static [u8]]) -> Rope {
        Rope::from(
            parts
                .iter()
                .map(|p| Bytes::from_static(p))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn reads_as_one_run_of_bytes() {
        let r = rope(&[b"ab", b"", b"cde", b"f"]);
        assert_eq!(r.len(), 6);
        assert_eq!(r.chunks().len(), 3, "empty slices are dropped");
        assert_eq!(r.crc32c_append(0), crc32c::crc32c(b"abcdef"));
        assert_eq!(r.crc32c_append(7), crc32c::crc32c_append(7, b"abcdef"));
        assert_eq!(r.copy_after(0).into_bytes(), Bytes::from_static(b"abcdef"));
        assert_eq!(r.copy_after(3).into_bytes(), Bytes::from_static(b"def"));
        assert_eq!(r.copy_after(2).chunks().len(), 1);
        assert!(r.copy_after(6).is_empty());
        assert_eq!(r.clone().into_bytes(), Bytes::from_static(b"abcdef"));
    }

    #[test]
    fn one_slice_comes_back_as_itself() {
        let data = Bytes::from(vec![5u8; 100]);
        let back = Rope::from(data.clone()).into_bytes();
        assert_eq!(back.as_ptr(), data.as_ptr());
        assert!(Rope::from(Bytes::new()).is_empty());
        assert!(Rope::default().chunks().is_empty());
    }
}
