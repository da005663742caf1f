//! Modular exponentiation with a small public exponent, for RSA signature verification.
//!
//! Hand-written because no crate does this fast inside Wasm: the bignum crates treat wasm32 as a
//! 64-bit target and emulate 128-bit products, which V8 runs 2× slower than 32-bit limbs (see
//! ENVOY-NOTES: `rsa` 611 µs, `crypto-bigint` 189 µs per RS256 verify). Only public values go
//! through it (the signature, the modulus, e), so nothing here needs to be constant-time.
//!
//! Numbers are little-endian limbs of w bits held in u32, and products are summed into u64
//! columns without carrying. A column takes at most about 2·k products below 2^(2w+1), which
//! must stay below 2^64: w = 28 for moduli up to 120 limbs (3360 bits, every common RSA size but
//! 4096), w = 26 beyond, up to 320 limbs (8320 bits). With no carry chain the inner loop is one
//! multiply-add per limb, which Wasm SIMD does two at a time (`i64x2.extmul_low_i32x4_u`).

/// Limb width for moduli of up to `WIDE_MAX_LIMBS` limbs of `WIDE_BITS`.
const WIDE_BITS: u32 = 28;
const WIDE_MAX_LIMBS: usize = 120;
/// Limb width for longer moduli, up to `MAX_LIMBS` limbs.
const NARROW_BITS: u32 = 26;
const MAX_LIMBS: usize = 320;

/// The limb width of one modulus.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Radix {
    bits: u32,
}

impl Radix {
    fn mask(self) -> u64 {
        (1 << self.bits) - 1
    }

    fn limbs_for(self, bits: usize) -> usize {
        bits.div_ceil(self.bits as usize)
    }
}

/// A modulus prepared for Montgomery multiplication (R = 2^(26·limbs)), computed once per key.
#[derive(Clone, PartialEq, Eq)]
pub struct Modulus {
    /// Little-endian 26-bit limbs of n; the top limb is non-zero.
    n: Vec<u32>,
    /// -n⁻¹ mod 2²⁶.
    n0_inv: u64,
    /// R² mod n, to bring a number into Montgomery form with one multiplication.
    r2: Vec<u32>,
    /// Length of n in bytes (the signature length).
    byte_len: usize,
    /// Length of n in bits.
    bits: usize,
    radix: Radix,
}

impl std::fmt::Debug for Modulus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Modulus({} bits)", self.bits)
    }
}

impl Modulus {
    /// From big-endian bytes. None unless n is odd, longer than 32 bits and at most 8320 bits.
    pub fn from_be_bytes(bytes: &[u8]) -> Option<Modulus> {
        let bytes = strip_leading_zeros(bytes);
        let top = *bytes.first()?;
        let bits = 8 * bytes.len() - top.leading_zeros() as usize;
        let wide = Radix { bits: WIDE_BITS };
        let radix = if wide.limbs_for(bits) <= WIDE_MAX_LIMBS {
            wide
        } else {
            Radix { bits: NARROW_BITS }
        };
        let k = radix.limbs_for(bits);
        if bits <= 32 || k > MAX_LIMBS {
            return None;
        }
        let mut n = limbs_from_be(bytes, k, radix);
        n.truncate(k);
        let low = *n.first()?;
        if low & 1 == 0 {
            return None;
        }
        let n0_inv = u64::from(neg_inverse_mod_2_32(low)) & radix.mask();
        let r2 = r_squared(&n, radix);
        Some(Modulus {
            n0_inv,
            r2,
            byte_len: bytes.len(),
            bits,
            radix,
            n,
        })
    }

    pub fn byte_len(&self) -> usize {
        self.byte_len
    }

    /// Length of n in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// base^exponent mod n, big-endian, `byte_len` bytes. None when base ≥ n (a signature must
    /// be a number below the modulus) or its length is not the modulus length.
    pub fn pow_be(&self, base: &[u8], exponent: u64) -> Option<Vec<u8>> {
        if base.len() != self.byte_len || exponent == 0 {
            return None;
        }
        let k = self.n.len();
        // The base's bytes may hold more bits than k limbs do (n's top byte is not full).
        let mut base = limbs_from_be(base, 0, self.radix);
        if base.iter().skip(k).any(|limb| *limb != 0) {
            return None;
        }
        base.resize(k, 0);
        if !less_than(&base, &self.n) {
            return None;
        }
        let mut columns = vec![0u64; 2 * k + 1];
        let mut base_m = vec![0u32; k];
        product(&base, &self.r2, &mut columns);
        self.reduce(&mut columns, &mut base_m);
        let mut acc = base_m.clone();
        // Left to right over the exponent's bits after the leading one: 65537 is 16 squarings
        // and one multiplication.
        let top = 63 - exponent.leading_zeros();
        for bit in (0..top).rev() {
            square(&acc, &mut columns);
            self.reduce(&mut columns, &mut acc);
            if exponent >> bit & 1 == 1 {
                product(&acc, &base_m, &mut columns);
                self.reduce(&mut columns, &mut acc);
            }
        }
        // Out of Montgomery form: one reduction of acc alone.
        columns.fill(0);
        for (column, &limb) in columns.iter_mut().zip(&acc) {
            *column = u64::from(limb);
        }
        self.reduce(&mut columns, &mut acc);
        Some(limbs_to_be(&acc, self.byte_len, self.radix))
    }

    /// out = t·R⁻¹ mod n (Montgomery reduction) of the uncarried columns t (below n·R);
    /// `columns` is overwritten.
    fn reduce(&self, columns: &mut [u64], out: &mut [u32]) {
        let n = &self.n;
        let k = n.len();
        let (bits, mask) = (self.radix.bits, self.radix.mask());
        for i in 0..k {
            // Column i holds every carry from below it: its low bits are final.
            let m = ((columns[i] & mask) * self.n0_inv) & mask;
            mul_add(&mut columns[i..i + k], m, n);
            // Column i is now a multiple of 2^w; what is above moves up.
            let carry = columns[i] >> bits;
            columns[i + 1] += carry;
        }
        let mut carry = 0u64;
        for (limb, column) in out.iter_mut().zip(&columns[k..2 * k]) {
            let value = column + carry;
            *limb = (value & mask) as u32;
            carry = value >> bits;
        }
        // The result is below 2n: at most one subtraction, and carry is then 0 or 1.
        if carry != 0 || !less_than(out, n) {
            subtract_in_place(out, n, self.radix);
        }
    }
}

/// columns = a·b, uncarried (columns has at least a.len() + b.len() entries).
fn product(a: &[u32], b: &[u32], columns: &mut [u64]) {
    let k = b.len();
    columns.fill(0);
    for (i, &a_i) in a.iter().enumerate() {
        mul_add(&mut columns[i..i + k], u64::from(a_i), b);
    }
}

/// columns = a², uncarried: each cross product once with 2·a_i, then the squares; about half
/// the multiplications of `product(a, a)`.
fn square(a: &[u32], columns: &mut [u64]) {
    let k = a.len();
    columns.fill(0);
    for i in 0..k {
        let a_i = u64::from(a[i]);
        columns[2 * i] += a_i * a_i;
        mul_add(&mut columns[2 * i + 1..i + k], a_i << 1, &a[i + 1..]);
    }
}

/// columns[j] += m · x[j] for every j (m < 2^32). The inner loop of everything above.
pub fn mul_add(columns: &mut [u64], m: u64, x: &[u32]) {
    #[cfg(target_arch = "wasm32")]
    {
        mul_add_simd(columns, m, x);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        mul_add_portable(columns, m, x);
    }
}

/// The reference for [`mul_add`]: plain Rust, what native builds run.
pub fn mul_add_portable(columns: &mut [u64], m: u64, x: &[u32]) {
    for (column, &x_j) in columns.iter_mut().zip(x) {
        *column += m * u64::from(x_j);
    }
}

/// Four limbs per step with Wasm SIMD: two `i64x2.extmul` give the four 64-bit products, which
/// are added to four columns. V8 runs this about twice as fast as the scalar loop.
#[cfg(target_arch = "wasm32")]
fn mul_add_simd(columns: &mut [u64], m: u64, x: &[u32]) {
    let len = columns.len().min(x.len());
    let quads = len / 4;
    // SAFETY: every load and store below touches indices below `4 · quads ≤ len`, which is
    // within both slices (unaligned v128 access is allowed in Wasm); `simd128` is a feature of
    // every Wasm engine authgate targets (a module using it fails to load elsewhere, it does not
    // misbehave).
    unsafe { mul_add_quads(columns.as_mut_ptr(), m as u32, x.as_ptr(), quads) };
    for j in 4 * quads..len {
        columns[j] += m * u64::from(x[j]);
    }
}

#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
unsafe fn mul_add_quads(columns: *mut u64, m: u32, x: *const u32, quads: usize) {
    use core::arch::wasm32::{
        u32x4_splat, u64x2_add, u64x2_extmul_high_u32x4, u64x2_extmul_low_u32x4, v128, v128_load,
        v128_store,
    };
    let m = u32x4_splat(m);
    for q in 0..quads {
        let limbs = v128_load(x.add(4 * q).cast::<v128>());
        let low = columns.add(4 * q).cast::<v128>();
        let high = columns.add(4 * q + 2).cast::<v128>();
        v128_store(
            low,
            u64x2_add(v128_load(low), u64x2_extmul_low_u32x4(m, limbs)),
        );
        v128_store(
            high,
            u64x2_add(v128_load(high), u64x2_extmul_high_u32x4(m, limbs)),
        );
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Big-endian bytes as little-endian limbs: every limb the bytes need, and at least `len`
/// (padded with zeros).
fn limbs_from_be(bytes: &[u8], len: usize, radix: Radix) -> Vec<u32> {
    let mut limbs = Vec::with_capacity(len);
    let (mut pending, mut pending_bits) = (0u64, 0);
    for &byte in bytes.iter().rev() {
        pending |= u64::from(byte) << pending_bits;
        pending_bits += 8;
        if pending_bits >= radix.bits {
            limbs.push((pending & radix.mask()) as u32);
            pending >>= radix.bits;
            pending_bits -= radix.bits;
        }
    }
    if pending_bits > 0 {
        limbs.push(pending as u32);
    }
    if limbs.len() < len {
        limbs.resize(len, 0);
    }
    limbs
}

/// `byte_len` big-endian bytes of the number in `limbs`.
fn limbs_to_be(limbs: &[u32], byte_len: usize, radix: Radix) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(byte_len);
    let (mut pending, mut pending_bits) = (0u64, 0);
    for &limb in limbs {
        pending |= u64::from(limb) << pending_bits;
        pending_bits += radix.bits;
        while pending_bits >= 8 {
            bytes.push(pending as u8);
            pending >>= 8;
            pending_bits -= 8;
        }
    }
    if pending_bits > 0 {
        bytes.push(pending as u8);
    }
    bytes.resize(byte_len, 0);
    bytes.reverse();
    bytes
}

fn less_than(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// a -= b, ignoring the final borrow (callers only subtract when a ≥ b, counting the carry
/// limb).
fn subtract_in_place(a: &mut [u32], b: &[u32], radix: Radix) {
    let mut borrow = 0u32;
    for (x, y) in a.iter_mut().zip(b) {
        let diff = x.wrapping_sub(*y).wrapping_sub(borrow);
        borrow = diff >> 31;
        *x = diff & radix.mask() as u32;
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

/// R² mod n by doubling 1 modulo n, 2·w·k times: once per key, so simple beats fast.
fn r_squared(n: &[u32], radix: Radix) -> Vec<u32> {
    let k = n.len();
    let mut x = vec![0u32; k];
    x[0] = 1;
    for _ in 0..(2 * radix.bits as usize * k) {
        let mut carry = 0u32;
        for limb in x.iter_mut() {
            let doubled = (*limb << 1) | carry;
            carry = doubled >> radix.bits;
            *limb = doubled & radix.mask() as u32;
        }
        if carry == 1 || !less_than(&x, n) {
            subtract_in_place(&mut x, n, radix);
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
        // 32-bit limbs here: up to 64 the moduli get 28-bit limbs inside, 130 (4160 bits) 26-bit.
        for (limbs, rounds) in [(2usize, 20), (3, 20), (8, 20), (17, 20), (64, 20), (130, 4)] {
            for round in 0..rounds {
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
    fn the_largest_columns_do_not_overflow() {
        // All limbs at their maximum give the largest column sums: moduli of all ones at the
        // longest length of each limb width (3360 bits: 120 limbs of 28; 8192 bits: 316 of 26),
        // and bases just below them.
        for bytes in [420usize, 421, 1024] {
            let n = BigUint::from_bytes_be(&vec![0xff; bytes]);
            for base in [&n - 2u32, &n - 1u32, (&n >> 1usize) | BigUint::from(1u32)] {
                check(&n, &base, 65537);
            }
        }
        assert!(Modulus::from_be_bytes(&[0xff; 1040]).is_some());
        assert!(Modulus::from_be_bytes(&[0xff; 1041]).is_none());
    }

    #[test]
    fn refuses_bases_not_below_the_modulus() {
        let n = BigUint::from_bytes_be(&[0xc3, 0, 0, 0, 0, 0, 0, 0x11]);
        let modulus = Modulus::from_be_bytes(&n.to_bytes_be()).unwrap();
        assert_eq!(modulus.pow_be(&n.to_bytes_be(), 65537), None);
        assert_eq!(modulus.pow_be(&[0xff; 8], 65537), None);
        assert_eq!(modulus.pow_be(&[1; 7], 65537), None);
        // n's top byte holds one bit: a base of the same length can reach beyond n's limbs.
        let short_top = Modulus::from_be_bytes(&[0x01, 0, 0, 0, 0, 0, 0, 0x11]).unwrap();
        assert_eq!(short_top.pow_be(&[0x80, 0, 0, 0, 0, 0, 0, 0], 65537), None);
        assert_eq!(short_top.pow_be(&[0xff; 8], 3), None);
        assert!(Modulus::from_be_bytes(&[0x80, 0, 0, 0, 0, 0, 0, 2]).is_none());
    }
}
