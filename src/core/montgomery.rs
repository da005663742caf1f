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
        let mut wide = vec![0u32; 2 * k];
        let mut base_m = vec![0u32; k];
        product(&base, &self.r2, &mut wide);
        self.reduce(&mut wide, &mut base_m);
        let mut acc = base_m.clone();
        // Left to right over the exponent's bits after the leading one: 65537 is 16 squarings
        // and one multiplication.
        let top = 63 - exponent.leading_zeros();
        for bit in (0..top).rev() {
            square(&acc, &mut wide);
            self.reduce(&mut wide, &mut acc);
            if exponent >> bit & 1 == 1 {
                product(&acc, &base_m, &mut wide);
                self.reduce(&mut wide, &mut acc);
            }
        }
        // Out of Montgomery form: one reduction of acc alone.
        wide.fill(0);
        wide[..k].copy_from_slice(&acc);
        self.reduce(&mut wide, &mut acc);
        Some(limbs_to_be(&acc, self.byte_len))
    }

    /// out = t·R⁻¹ mod n (Montgomery reduction); `t` (2k limbs, below n·R) is overwritten.
    fn reduce(&self, t: &mut [u32], out: &mut [u32]) {
        let n = &self.n;
        let k = n.len();
        // The carry out of t[i + k], which belongs to t[i + k + 1].
        let mut overflow = 0u64;
        for i in 0..k {
            let m = u64::from(t[i].wrapping_mul(self.n0_inv));
            let mut carry = 0u64;
            for (t_j, &n_j) in t[i..i + k].iter_mut().zip(n) {
                let sum = u64::from(*t_j) + m * u64::from(n_j) + carry;
                *t_j = sum as u32;
                carry = sum >> 32;
            }
            let sum = u64::from(t[i + k]) + carry + overflow;
            t[i + k] = sum as u32;
            overflow = sum >> 32;
        }
        out.copy_from_slice(&t[k..]);
        if overflow != 0 || !less_than(out, n) {
            subtract_in_place(out, n);
        }
    }
}

// The products below iterate with `zip` over subslices: no bounds check in the inner loops,
// which V8 does not remove by itself.

/// t = a·b (t has a.len() + b.len() limbs).
fn product(a: &[u32], b: &[u32], t: &mut [u32]) {
    let k = b.len();
    t.fill(0);
    for (i, &a_i) in a.iter().enumerate() {
        let a_i = u64::from(a_i);
        let mut carry = 0u64;
        for (t_j, &b_j) in t[i..i + k].iter_mut().zip(b) {
            let sum = u64::from(*t_j) + a_i * u64::from(b_j) + carry;
            *t_j = sum as u32;
            carry = sum >> 32;
        }
        t[i + k] = carry as u32;
    }
}

/// t = a² (t has 2·a.len() limbs): each cross product once, doubled, then the squares added;
/// about half the multiplications of `product(a, a)`.
fn square(a: &[u32], t: &mut [u32]) {
    let k = a.len();
    t.fill(0);
    for i in 0..k {
        let a_i = u64::from(a[i]);
        let mut carry = 0u64;
        for (t_j, &a_j) in t[2 * i + 1..i + k].iter_mut().zip(&a[i + 1..]) {
            let sum = u64::from(*t_j) + a_i * u64::from(a_j) + carry;
            *t_j = sum as u32;
            carry = sum >> 32;
        }
        t[i + k] = carry as u32;
    }
    let mut shifted_out = 0u32;
    for limb in t.iter_mut() {
        let top = *limb >> 31;
        *limb = (*limb << 1) | shifted_out;
        shifted_out = top;
    }
    let mut carry = 0u64;
    for (pair, &a_i) in t.chunks_exact_mut(2).zip(a) {
        let sq = u64::from(a_i) * u64::from(a_i);
        let low = u64::from(pair[0]) + (sq & 0xffff_ffff) + carry;
        pair[0] = low as u32;
        let high = u64::from(pair[1]) + (sq >> 32) + (low >> 32);
        pair[1] = high as u32;
        carry = high >> 32;
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
            for round in 0..20 {
                let mut n_bytes: Vec<u8> = (0..limbs * 4).map(|_| next() as u8).collect();
                // Full top limbs, and top limbs with few bits (moduli like 2047 or 2049 bits).
                n_bytes[0] = if round % 2 == 0 { n_bytes[0] | 0x80 } else { 1 };
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
