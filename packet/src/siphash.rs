//! SipHash-c-d (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012) over whole
//! 64-bit words, for the per-packet keyed hashes of the cores that need one: conntrack's flow
//! index (SipHash-1-3) and the SYN proxy's cookie MAC (SipHash-2-4).
//!
//! Unlike a streaming `Hasher`, the caller hands over message words directly (or a byte
//! message whose length the compiler knows, [`Sip::hash`]), so nothing is buffered and the
//! rounds unroll. [`Sip::hash`] gives exactly the reference SipHash-c-d of the bytes.

/// One SipHash-c-d state: `C` compression rounds per word, `D` finalisation rounds.
#[derive(Clone, Copy, Debug)]
pub struct Sip<const C: usize, const D: usize> {
    v: [u64; 4],
}

/// SipHash-1-3 (Rust's `HashMap` default; conntrack's flow index).
pub type Sip13 = Sip<1, 3>;
/// SipHash-2-4 (the reference; the SYN proxy's cookie MAC).
pub type Sip24 = Sip<2, 4>;

impl<const C: usize, const D: usize> Sip<C, D> {
    /// A state keyed with `(k0, k1)` (the key's two little-endian halves).
    #[inline(always)]
    pub fn new(k0: u64, k1: u64) -> Self {
        Sip {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
        }
    }

    #[inline(always)]
    fn round(&mut self) {
        let v = &mut self.v;
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }

    /// Absorbs one message word. The last word carries the message length in its top byte
    /// (as [`Sip::hash`] builds it).
    #[inline(always)]
    pub fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        for _ in 0..C {
            self.round();
        }
        self.v[0] ^= m;
    }

    /// The 64-bit hash.
    #[inline(always)]
    pub fn finish(mut self) -> u64 {
        self.v[2] ^= 0xff;
        for _ in 0..D {
            self.round();
        }
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }

    /// The reference SipHash-c-d of `msg` under `(k0, k1)`.
    #[inline(always)]
    pub fn hash<const N: usize>((k0, k1): (u64, u64), msg: &[u8; N]) -> u64 {
        let mut s = Self::new(k0, k1);
        let mut chunks = msg.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            s.compress(u64::from_le_bytes(w));
        }
        let mut last = [0u8; 8];
        let tail = chunks.remainder();
        last[..tail.len()].copy_from_slice(tail);
        s.compress(u64::from_le_bytes(last) | (N as u64) << 56);
        s.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper's test vector (Appendix A): key 00..0f, message 00..0e.
    #[test]
    fn reference_vector() {
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let msg: [u8; 15] = core::array::from_fn(|i| i as u8);
        assert_eq!(Sip24::hash((k0, k1), &msg), 0xa129_ca61_49be_45e5);
    }

    /// Word-wise use equals the byte form: a 16-byte message is two words plus a length word.
    #[test]
    fn words_and_bytes_agree() {
        let msg: [u8; 16] = core::array::from_fn(|i| (i * 7) as u8);
        let mut s = Sip13::new(3, 4);
        s.compress(u64::from_le_bytes(msg[..8].try_into().unwrap()));
        s.compress(u64::from_le_bytes(msg[8..].try_into().unwrap()));
        s.compress(16 << 56);
        assert_eq!(s.finish(), Sip13::hash((3, 4), &msg));
    }
}
