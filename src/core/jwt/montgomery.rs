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
//! multiply-add per limb, which Wasm SIMD does two at a time (`i64x2.extmul_low_i32x4_u`), for
//! four rows while the columns stay in registers. The signature enters the chain of Montgomery
//! multiplications as it is and leaves it multiplied by a per-key constant: one multiplication
//! fewer than converting into Montgomery form and back.

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

/// Rows of a schoolbook multiplication done in one pass over the columns: each column is
/// loaded and stored once per ROWS rows instead of once per row.
const ROWS: usize = 4;
// `Modulus::multipliers` is written out for blocks of 4, 2 and 1 rows.
const _: () = assert!(ROWS == 4);
/// Zero limbs kept before and after every number the passes read, so that a block of rows
/// reads zeros where it reaches beyond the number (no scalar code for the ends of a block), and
/// its four-column steps may run past the last column.
const LEAD: usize = ROWS - 1;
const TRAIL: usize = ROWS + 3;

/// A number of k limbs with `LEAD` zero limbs below it and `TRAIL` above.
#[derive(Clone, PartialEq, Eq)]
struct Padded(Vec<u32>);

impl Padded {
    fn zero(k: usize) -> Padded {
        Padded(vec![0; LEAD + k + TRAIL])
    }

    fn from_limbs(limbs: &[u32]) -> Padded {
        let mut padded = Padded::zero(limbs.len());
        padded.limbs_mut().copy_from_slice(limbs);
        padded
    }

    fn limbs(&self) -> &[u32] {
        &self.0[LEAD..self.0.len() - TRAIL]
    }

    fn limbs_mut(&mut self) -> &mut [u32] {
        let end = self.0.len() - TRAIL;
        &mut self.0[LEAD..end]
    }

    /// The limbs from index `from` on, with the `LEAD` limbs below it in front (zeros or lower
    /// limbs): what `mul_add_rows` reads.
    fn window(&self, from: usize) -> &[u32] {
        &self.0[from..]
    }
}

/// A modulus prepared for Montgomery multiplication (R = 2^(w·limbs)), computed once per key.
#[derive(Clone, PartialEq, Eq)]
pub struct Modulus {
    /// Little-endian w-bit limbs of n; the top limb is non-zero.
    n: Padded,
    /// -n⁻¹ mod 2^(2w): two rows' multipliers from one multiplication (its low w bits are
    /// -n⁻¹ mod 2^w, one row's).
    n_inv: u64,
    /// n's lowest limbs, what a block's multipliers depend on.
    n_low: [u64; ROWS],
    /// The public exponent e this modulus is prepared for.
    exponent: u64,
    /// R^e mod n: what turns the chain's s^e·R^-(e-1) into s^e with one multiplication.
    r_to_e: Padded,
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
    /// From big-endian bytes, for raising to `exponent`. None unless n is odd, longer than 32
    /// bits and at most 8320 bits, and the exponent is not 0.
    pub fn from_be_bytes(bytes: &[u8], exponent: u64) -> Option<Modulus> {
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
        if bits <= 32 || k > MAX_LIMBS || exponent == 0 {
            return None;
        }
        let mut n = limbs_from_be(bytes, k, radix);
        n.truncate(k);
        let low = *n.first()?;
        if low & 1 == 0 {
            return None;
        }
        let n_low: [u64; ROWS] = std::array::from_fn(|j| n.get(j).copied().map_or(0, u64::from));
        let n_inv =
            neg_inverse_mod_2_64(n_low[0] | n_low[1] << radix.bits) & ((1 << (2 * radix.bits)) - 1);
        let mut modulus = Modulus {
            n_inv,
            n_low,
            exponent,
            r_to_e: Padded::zero(k),
            byte_len: bytes.len(),
            bits,
            radix,
            n: Padded::from_limbs(&n),
        };
        // R² is R in Montgomery form; its chain is R^(2e)·R^-(e-1) = R^(e+1), and one
        // reduction takes off the last R.
        let r2 = Padded::from_limbs(&r_squared(&n, radix));
        let mut columns = modulus.columns();
        let r_to_e_plus_1 = modulus.chain(&r2, &mut columns);
        // The chain's last reduction left the columns zero.
        debug_assert!(columns.iter().all(|c| *c == 0), "columns left uncleared");
        for (column, &limb) in columns.iter_mut().zip(r_to_e_plus_1.limbs()) {
            *column = u64::from(limb);
        }
        let mut r_to_e = Padded::zero(k);
        modulus.reduce(&mut columns, r_to_e.limbs_mut());
        modulus.r_to_e = r_to_e;
        Some(modulus)
    }

    pub fn byte_len(&self) -> usize {
        self.byte_len
    }

    /// Length of n in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// base^e mod n, big-endian, `byte_len` bytes. None when base ≥ n (a signature must be a
    /// number below the modulus) or its length is not the modulus length.
    pub fn pow_be(&self, base: &[u8]) -> Option<Vec<u8>> {
        if base.len() != self.byte_len {
            return None;
        }
        let n = self.n.limbs();
        let k = n.len();
        // The base's bytes may hold more bits than k limbs do (n's top byte is not full).
        let mut base = limbs_from_be(base, 0, self.radix);
        if base.iter().skip(k).any(|limb| *limb != 0) {
            return None;
        }
        base.resize(k, 0);
        if !less_than(&base, n) {
            return None;
        }
        // The base goes in as it is, not in Montgomery form (that would cost a multiplication
        // by R²): the chain gives s^e·R^-(e-1), and one multiplication by R^e gives s^e.
        let mut columns = self.columns();
        let chained = self.chain(&Padded::from_limbs(&base), &mut columns);
        product(chained.limbs(), &self.r_to_e, &mut columns);
        let mut result = Padded::zero(k);
        self.reduce(&mut columns, result.limbs_mut());
        Some(limbs_to_be(result.limbs(), self.byte_len, self.radix))
    }

    /// Room for a product's columns, and for the last block's four-column steps to run past
    /// column 2k.
    fn columns(&self) -> Vec<u64> {
        vec![0u64; 2 * self.n.limbs().len() + ROWS + 4]
    }

    /// Montgomery multiplications left to right over e's bits after the leading one (65537: 16
    /// squarings and one multiplication). Each divides by R once, so for x below n this returns
    /// x^e·R^-(e-1) mod n: the power of R⁻¹ grows as the power of x does, one behind.
    fn chain(&self, x: &Padded, columns: &mut [u64]) -> Padded {
        let mut acc = x.clone();
        let top = 63 - self.exponent.leading_zeros();
        for bit in (0..top).rev() {
            square(&acc, columns);
            self.reduce(columns, acc.limbs_mut());
            if self.exponent >> bit & 1 == 1 {
                product(acc.limbs(), x, columns);
                self.reduce(columns, acc.limbs_mut());
            }
        }
        acc
    }

    /// out = t·R⁻¹ mod n (Montgomery reduction) of the uncarried columns t (below n·R). Leaves
    /// every column zero, ready for the next product (which then needs no clearing).
    fn reduce(&self, columns: &mut [u64], out: &mut [u32]) {
        let n = self.n.limbs();
        let k = n.len();
        let (bits, mask) = (self.radix.bits, self.radix.mask());
        let mut i = 0;
        while i + ROWS <= k {
            self.reduce_rows::<ROWS>(columns, i);
            i += ROWS;
        }
        // The rest of the rows: two at a time, then one.
        while i + 2 <= k {
            self.reduce_rows::<2>(columns, i);
            i += 2;
        }
        if i < k {
            self.reduce_rows::<1>(columns, i);
        }
        let mut carry = 0u64;
        for (limb, column) in out.iter_mut().zip(&mut columns[k..2 * k]) {
            let value = *column + carry;
            *column = 0;
            *limb = (value & mask) as u32;
            carry = value >> bits;
        }
        // The result is below 2n: at most one subtraction, and carry is then 0 or 1.
        if carry != 0 || !less_than(out, n) {
            subtract_in_place(out, n, self.radix);
        }
    }

    /// Clears columns i .. i+R: adds m·n at row i+r for each r, so that each of these columns
    /// becomes a multiple of 2^w, and moves what is above up.
    fn reduce_rows<const R: usize>(&self, columns: &mut [u64], i: usize) {
        let k = self.n.limbs().len();
        let ms = self.multipliers::<R>(&columns[i..i + R]);
        let span = (k + R - 1).next_multiple_of(4);
        mul_add_rows(&mut columns[i..i + span], &ms, self.n.window(LEAD + 1 - R));
        let mut carry = 0;
        for column in &mut columns[i..i + R] {
            carry = (*column + carry) >> self.radix.bits;
            *column = 0;
        }
        columns[i + R] += carry;
    }

    /// The Montgomery multipliers of the next R rows, given the R columns they clear (column i
    /// holds every carry from below it, so its low bits are final). Row r's multiplier depends
    /// on what the rows before it add to its column: a chain of dependent multiplications, the
    /// latency of a reduction. Rows go two at a time, their multipliers being the two limbs of
    /// −t·n⁻¹ mod 2^(2w), t the two columns; blocks of 1, 2 and 4 rows are written out in
    /// locals, as LLVM at opt-level "s" keeps loops over small arrays in memory.
    fn multipliers<const R: usize>(&self, columns: &[u64]) -> [u64; R] {
        let (bits, mask) = (self.radix.bits, self.radix.mask());
        let n = &self.n_low;
        let pair = |low: u64, high: u64| {
            let m = low.wrapping_add(high << bits).wrapping_mul(self.n_inv);
            (m & mask, (m >> bits) & mask)
        };
        let mut ms = [0u64; R];
        match (columns, ms.as_mut_slice()) {
            ([c0], [m0]) => *m0 = ((c0 & mask) * (self.n_inv & mask)) & mask,
            ([c0, c1], [m0, m1]) => (*m0, *m1) = pair(*c0, *c1),
            ([c0, c1, c2, c3], [m0, m1, m2, m3]) => {
                let (a, b) = pair(*c0, *c1);
                // Columns 2 and 3 as rows 0 and 1 leave them, with the carry out of 0 and 1.
                let t0 = c0 + a * n[0];
                let t1 = c1 + a * n[1] + b * n[0] + (t0 >> bits);
                let t2 = c2 + a * n[2] + b * n[1] + (t1 >> bits);
                let t3 = c3 + a * n[3] + b * n[2];
                let (c, d) = pair(t2, t3);
                (*m0, *m1, *m2, *m3) = (a, b, c, d);
            }
            _ => {}
        }
        ms
    }
}

/// columns = a·b, uncarried (columns are zero, with room for a.len() + b.len() + ROWS + 3).
fn product(a: &[u32], b: &Padded, columns: &mut [u64]) {
    let k = b.limbs().len();
    debug_assert!(columns.iter().all(|c| *c == 0), "columns left uncleared");
    let mut blocks = a.chunks_exact(ROWS);
    let span = (k + ROWS - 1).next_multiple_of(4);
    for (block, rows) in blocks.by_ref().enumerate() {
        let i = block * ROWS;
        let ms: [u64; ROWS] = std::array::from_fn(|r| u64::from(rows[r]));
        mul_add_rows(&mut columns[i..i + span], &ms, b.window(0));
    }
    let done = a.len() - blocks.remainder().len();
    for (i, &a_i) in a.iter().enumerate().skip(done) {
        let span = k.next_multiple_of(4);
        mul_add_rows(&mut columns[i..i + span], &[u64::from(a_i)], b.window(LEAD));
    }
}

/// columns = a², uncarried (columns are zero): each cross product once with 2·a_i, then the squares; about half
/// the multiplications of `product(a, a)`.
fn square(a: &Padded, columns: &mut [u64]) {
    let limbs = a.limbs();
    let k = limbs.len();
    debug_assert!(columns.iter().all(|c| *c == 0), "columns left uncleared");
    let mut i = 0;
    // Rows i..i+R over x = a[i+1..]: row i+r adds 2·a[i+r]·x[u] to column 2i+1+r+u. The shared
    // pass does that for every u ≥ −r (below x it reads a's lower limbs, or the zeros under
    // a), but row i+r owns only u ≥ r: the rest are products that belong to other rows (for
    // u = r − 1, twice its square) and are taken back out below.
    while i + ROWS < k {
        let ms: [u64; ROWS] = std::array::from_fn(|r| u64::from(limbs[i + r]) << 1);
        let base = 2 * i + 1;
        let span = (k - i - 1 + ROWS - 1).next_multiple_of(4);
        mul_add_rows(&mut columns[base..base + span], &ms, a.window(i + 1));
        // lower[LEAD + u] is a[i + 1 + u], zero below a; row r's strays are u = −r .. r − 1.
        let lower = &a.window(i + 1)[..LEAD + ROWS];
        let strays = &mut columns[base..base + 2 * ROWS];
        for (r, &m) in ms.iter().enumerate() {
            for u in 0..2 * r {
                strays[u] -= m * u64::from(lower[LEAD + u - r]);
            }
        }
        for r in 0..ROWS {
            let a_r = u64::from(limbs[i + r]);
            columns[2 * (i + r)] += a_r * a_r;
        }
        i += ROWS;
    }
    for i in i..k {
        let a_i = u64::from(limbs[i]);
        columns[2 * i] += a_i * a_i;
        let span = (k - i - 1).next_multiple_of(4);
        mul_add_rows(
            &mut columns[2 * i + 1..2 * i + 1 + span],
            &[a_i << 1],
            a.window(i + 1 + LEAD),
        );
    }
}

/// columns[j] += Σ_r ms[r]·limbs[R − 1 + j − r] for every column j (each m < 2^32; limbs past
/// the end count as zero): R rows of a multiplication, each shifted one limb further. The
/// inner loop of everything above.
pub fn mul_add_rows<const R: usize>(columns: &mut [u64], ms: &[u64; R], limbs: &[u32]) {
    #[cfg(target_arch = "wasm32")]
    {
        mul_add_rows_simd(columns, ms, limbs);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        mul_add_rows_portable(columns, ms, limbs);
    }
}

/// The reference for [`mul_add_rows`]: plain Rust, what native builds run.
pub fn mul_add_rows_portable<const R: usize>(columns: &mut [u64], ms: &[u64; R], limbs: &[u32]) {
    for (r, &m) in ms.iter().enumerate() {
        let shifted = limbs.get(R - 1 - r..).unwrap_or_default();
        for (column, &limb) in columns.iter_mut().zip(shifted) {
            *column += m * u64::from(limb);
        }
    }
}

/// Four columns per step with Wasm SIMD: per row, two `i64x2.extmul` give the four 64-bit
/// products, added to the four columns while they stay in registers.
#[cfg(target_arch = "wasm32")]
fn mul_add_rows_simd<const R: usize>(columns: &mut [u64], ms: &[u64; R], limbs: &[u32]) {
    // Steps whose limbs are all there; the rest (none, as this file calls it) one by one.
    let quads = columns.len().min(limbs.len().saturating_sub(R - 1)) / 4;
    let ms32 = ms.map(|m| m as u32);
    // SAFETY: step q reads limbs[4q + R − 1 − r .. 4q + R + 3 − r] for r < R, below
    // 4·quads + R − 1 ≤ limbs.len(), and reads and writes columns[4q .. 4q + 4], below
    // 4·quads ≤ columns.len(); unaligned v128 access is allowed in Wasm. `simd128` is a
    // feature of every Wasm engine authgate targets (a module using it fails to load
    // elsewhere, it does not misbehave).
    unsafe { mul_add_quads(columns.as_mut_ptr(), &ms32, limbs.as_ptr(), quads) };
    for (j, column) in columns.iter_mut().enumerate().skip(4 * quads) {
        for (r, &m) in ms.iter().enumerate() {
            if let Some(&limb) = limbs.get(R - 1 + j - r) {
                *column += m * u64::from(limb);
            }
        }
    }
}

/// columns[4q + c] += Σ_r ms[r]·limbs[4q + c + R − 1 − r] for q < quads, c < 4. The rows
/// stay a loop over splats held in memory: written out with the splats in locals, LLVM sees
/// `extmul` of a splatted u32 and turns it into `i64x2.mul` of extended halves, which V8
/// emulates (the modexp ran 1.7× slower).
#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
unsafe fn mul_add_quads<const R: usize>(
    columns: *mut u64,
    ms: &[u32; R],
    limbs: *const u32,
    quads: usize,
) {
    use core::arch::wasm32::{
        u32x4_splat, u64x2_add, u64x2_extmul_high_u32x4, u64x2_extmul_low_u32x4, v128, v128_load,
        v128_store,
    };
    let mut splats = [u32x4_splat(0); R];
    for (splat, &m) in splats.iter_mut().zip(ms) {
        *splat = u32x4_splat(m);
    }
    for q in 0..quads {
        let low = columns.add(4 * q).cast::<v128>();
        let high = columns.add(4 * q + 2).cast::<v128>();
        let (mut low_sum, mut high_sum) = (v128_load(low), v128_load(high));
        for (r, &m) in splats.iter().enumerate() {
            let x = v128_load(limbs.add(4 * q + R - 1 - r).cast::<v128>());
            low_sum = u64x2_add(low_sum, u64x2_extmul_low_u32x4(m, x));
            high_sum = u64x2_add(high_sum, u64x2_extmul_high_u32x4(m, x));
        }
        v128_store(low, low_sum);
        v128_store(high, high_sum);
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

/// -x⁻¹ mod 2⁶⁴ for odd x, by Newton iteration (each step doubles the correct low bits).
fn neg_inverse_mod_2_64(x: u64) -> u64 {
    let mut inv: u64 = 1;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(x.wrapping_mul(inv)));
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
        let modulus = Modulus::from_be_bytes(&n.to_bytes_be(), e).unwrap();
        let len = modulus.byte_len();
        let mut base_bytes = base.to_bytes_be();
        while base_bytes.len() < len {
            base_bytes.insert(0, 0);
        }
        let got = modulus.pow_be(&base_bytes).unwrap();
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
        assert!(Modulus::from_be_bytes(&[0xff; 1040], 65537).is_some());
        assert!(Modulus::from_be_bytes(&[0xff; 1041], 65537).is_none());
    }

    #[test]
    fn refuses_bases_not_below_the_modulus() {
        let n = BigUint::from_bytes_be(&[0xc3, 0, 0, 0, 0, 0, 0, 0x11]);
        let modulus = Modulus::from_be_bytes(&n.to_bytes_be(), 65537).unwrap();
        assert_eq!(modulus.pow_be(&n.to_bytes_be()), None);
        assert_eq!(modulus.pow_be(&[0xff; 8]), None);
        assert_eq!(modulus.pow_be(&[1; 7]), None);
        // n's top byte holds one bit: a base of the same length can reach beyond n's limbs.
        let short_top = Modulus::from_be_bytes(&[0x01, 0, 0, 0, 0, 0, 0, 0x11], 65537).unwrap();
        assert_eq!(short_top.pow_be(&[0x80, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(short_top.pow_be(&[0xff; 8]), None);
        assert!(Modulus::from_be_bytes(&[0x80, 0, 0, 0, 0, 0, 0, 2], 65537).is_none());
        assert!(Modulus::from_be_bytes(&[0xc3, 0, 0, 0, 0, 0, 0, 0x11], 0).is_none());
    }
}
