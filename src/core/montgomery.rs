//! Modular exponentiation with a small public exponent, for RSA signature verification.
//!
//! Hand-written because no crate does this fast inside Wasm: the bignum crates treat wasm32 as a
//! 64-bit target and emulate 128-bit products, which V8 runs 2× slower than 32-bit limbs (see
//! ENVOY-NOTES: `rsa` 611 µs, `crypto-bigint` 189 µs, a u32-limb Montgomery like this one ≈ 95 µs
//! per RS256 verify). Only public values go through it (the signature, the modulus, e), so
//! nothing here needs to be constant-time.

/// A modulus prepared for Montgomery multiplication (R = 2^(32·limbs)), computed once per key.
#[derive(Clone, PartialEq, Eq)]
pub struct Modulus {
    /// Little-endian 32-bit limbs of n; the top limb is non-zero.
    n: Vec<u32>,
    /// -n⁻¹ mod 2³².
    n0_inv: u32,
    /// R² mod n, to bring a number into Montgomery form with one multiplication.
    r2: Vec<u32>,
    /// Length of n in bytes (the signature length).
    byte_len: usize,
}

impl std::fmt::Debug for Modulus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Modulus({} bits)", self.byte_len * 8)
    }
}

impl Modulus {
    /// From big-endian bytes. None unless n is odd and at least 64 bits long.
    pub fn from_be_bytes(bytes: &[u8]) -> Option<Modulus> {
        let bytes = strip_leading_zeros(bytes);
        let n = limbs_from_be(bytes, bytes.len().div_ceil(4));
        if n.len() < 2 || n.first().is_none_or(|low| low & 1 == 0) {
            return None;
        }
        let n0_inv = neg_inverse_mod_2_32(n[0]);
        let r2 = r_squared(&n);
        Some(Modulus {
            n0_inv,
            r2,
            byte_len: bytes.len(),
            n,
        })
    }

    pub fn byte_len(&self) -> usize {
        self.byte_len
    }

    /// Length of n in bits.
    pub fn bits(&self) -> usize {
        let top = self.n.last().copied().unwrap_or(0);
        32 * (self.n.len() - 1) + (32 - top.leading_zeros() as usize)
    }

    /// base^exponent mod n, big-endian, `byte_len` bytes. None when base ≥ n (a signature must
    /// be a number below the modulus) or its length is not the modulus length.
    pub fn pow_be(&self, base: &[u8], exponent: u64) -> Option<Vec<u8>> {
        if base.len() != self.byte_len || exponent == 0 {
            return None;
        }
        let k = self.n.len();
        let base = limbs_from_be(base, k);
        if !less_than(&base, &self.n) {
            return None;
        }
        let mut scratch = vec![0u32; k + 2];
        let mut base_m = vec![0u32; k];
        self.mul(&base, &self.r2, &mut base_m, &mut scratch);
        let mut acc = base_m.clone();
        let mut tmp = vec![0u32; k];
        // Left to right over the exponent's bits after the leading one: 65537 is 16 squarings
        // and one multiplication.
        let top = 63 - exponent.leading_zeros();
        for bit in (0..top).rev() {
            self.mul(&acc, &acc, &mut tmp, &mut scratch);
            std::mem::swap(&mut acc, &mut tmp);
            if exponent >> bit & 1 == 1 {
                self.mul(&acc, &base_m, &mut tmp, &mut scratch);
                std::mem::swap(&mut acc, &mut tmp);
            }
        }
        // Out of Montgomery form: multiply by 1.
        let mut one = vec![0u32; k];
        one[0] = 1;
        self.mul(&acc, &one, &mut tmp, &mut scratch);
        Some(limbs_to_be(&tmp, self.byte_len))
    }

    /// out = a·b·R⁻¹ mod n (CIOS). `a` and `b` are below n; so is `out`.
    fn mul(&self, a: &[u32], b: &[u32], out: &mut [u32], t: &mut [u32]) {
        let n = &self.n;
        let k = n.len();
        t.fill(0);
        for &b_i in b.iter().take(k) {
            let b_i = u64::from(b_i);
            let mut carry = 0u64;
            for j in 0..k {
                let sum = u64::from(t[j]) + u64::from(a[j]) * b_i + carry;
                t[j] = sum as u32;
                carry = sum >> 32;
            }
            let sum = u64::from(t[k]) + carry;
            t[k] = sum as u32;
            t[k + 1] = (sum >> 32) as u32;

            let m = u64::from(t[0].wrapping_mul(self.n0_inv));
            let mut carry = (u64::from(t[0]) + m * u64::from(n[0])) >> 32;
            for j in 1..k {
                let sum = u64::from(t[j]) + m * u64::from(n[j]) + carry;
                t[j - 1] = sum as u32;
                carry = sum >> 32;
            }
            let sum = u64::from(t[k]) + carry;
            t[k - 1] = sum as u32;
            t[k] = t[k + 1] + (sum >> 32) as u32;
            t[k + 1] = 0;
        }
        out.copy_from_slice(&t[..k]);
        if t[k] != 0 || !less_than(out, n) {
            subtract_in_place(out, n);
        }
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Big-endian bytes into `len` little-endian limbs (bytes beyond `len` limbs are dropped; the
/// callers pass lengths that fit).
fn limbs_from_be(bytes: &[u8], len: usize) -> Vec<u32> {
    let mut limbs = vec![0u32; len];
    for (i, byte) in bytes.iter().rev().enumerate() {
        if let Some(limb) = limbs.get_mut(i / 4) {
            *limb |= u32::from(*byte) << (8 * (i % 4));
        }
    }
    limbs
}

fn limbs_to_be(limbs: &[u32], byte_len: usize) -> Vec<u8> {
    (0..byte_len)
        .rev()
        .map(|i| {
            let limb = limbs.get(i / 4).copied().unwrap_or(0);
            (limb >> (8 * (i % 4))) as u8
        })
        .collect()
}

fn less_than(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// a -= b, ignoring the final borrow (callers only subtract when a ≥ b, counting the carry limb).
fn subtract_in_place(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0u64;
    for (x, y) in a.iter_mut().zip(b) {
        let diff = u64::from(*x)
            .wrapping_sub(u64::from(*y))
            .wrapping_sub(borrow);
        *x = diff as u32;
        borrow = (diff >> 63) & 1;
    }
}

/// -x⁻¹ mod 2³² for odd x, by Newton iteration (each step doubles the correct low bits).
fn neg_inverse_mod_2_32(x: u32) -> u32 {
    let mut inv: u32 = 1;
    for _ in 0..5 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(x.wrapping_mul(inv)));
    }
    inv.wrapping_neg()
}

/// R² mod n by doubling 1 modulo n, 2·32·k times: once per key, so simple beats fast.
fn r_squared(n: &[u32]) -> Vec<u32> {
    let k = n.len();
    let mut x = vec![0u32; k];
    x[0] = 1;
    for _ in 0..(64 * k) {
        let mut carry = 0u32;
        for limb in x.iter_mut() {
            let next = *limb >> 31;
            *limb = (*limb << 1) | carry;
            carry = next;
        }
        if carry == 1 || !less_than(&x, n) {
            subtract_in_place(&mut x, n);
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::BigUint;

    fn check(n: &BigUint, base: &BigUint, e: u64) {
        let modulus = Modulus::from_be_bytes(&n.to_bytes_be()).unwrap();
        let len = modulus.byte_len();
        let mut base_bytes = base.to_bytes_be();
        while base_bytes.len() < len {
            base_bytes.insert(0, 0);
        }
        let got = modulus.pow_be(&base_bytes, e).unwrap();
        let want = base.modpow(&BigUint::from(e), n);
        assert_eq!(
            BigUint::from_bytes_be(&got),
            want,
            "n={n} base={base} e={e}"
        );
    }

    #[test]
    fn matches_biguint_modpow() {
        // Deterministic pseudo-random odd moduli of several sizes, and bases below them.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for limbs in [2usize, 3, 8, 17, 64] {
            for _ in 0..20 {
                let mut n_bytes: Vec<u8> = (0..limbs * 4).map(|_| next() as u8).collect();
                n_bytes[0] |= 0x80;
                *n_bytes.last_mut().unwrap() |= 1;
                let n = BigUint::from_bytes_be(&n_bytes);
                let base_bytes: Vec<u8> = (0..limbs * 4).map(|_| next() as u8).collect();
                let base = BigUint::from_bytes_be(&base_bytes) % &n;
                for e in [3u64, 17, 65537, 0xffff_ffff_ffff] {
                    check(&n, &base, e);
                }
                check(&n, &(&n - 1u32), 65537);
                check(&n, &BigUint::from(0u32), 65537);
            }
        }
    }

    #[test]
    fn refuses_bases_not_below_the_modulus() {
        let n = BigUint::from_bytes_be(&[0xc3, 0, 0, 0, 0, 0, 0, 0x11]);
        let modulus = Modulus::from_be_bytes(&n.to_bytes_be()).unwrap();
        assert_eq!(modulus.pow_be(&n.to_bytes_be(), 65537), None);
        assert_eq!(modulus.pow_be(&[0xff; 8], 65537), None);
        assert_eq!(modulus.pow_be(&[1; 7], 65537), None);
        assert!(Modulus::from_be_bytes(&[0x80, 0, 0, 0, 0, 0, 0, 2]).is_none());
    }
}
