//! A tiny seeded RNG (xoshiro256** seeded through splitmix64).
//!
//! candle's `Device::Cpu.set_seed` is unsupported, so initialisation and dropout draw from this
//! generator: the same seed gives the same bits on every build, platform and thread count.

/// Deterministic pseudo-random generator for weight init and dropout masks.
#[derive(Clone, Debug)]
pub struct SeededRng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        let mut st = seed;
        let s =
            [splitmix64(&mut st), splitmix64(&mut st), splitmix64(&mut st), splitmix64(&mut st)];
        Self { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, 1) with 24 bits of precision.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]: ln is finite
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Dropout randomness for one training step: draw masks from a seeded stream.
#[derive(Clone, Debug)]
pub struct DropoutRng {
    rng: SeededRng,
}

impl DropoutRng {
    pub fn new(seed: u64) -> Self {
        Self { rng: SeededRng::new(seed) }
    }

    /// A fresh 64-bit seed for one mask (fused ops regenerate their mask from it in backward).
    pub fn next_seed(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

/// Keep-mask value for element `i` of a mask seeded by `seed`: stateless, so a fused op can
/// regenerate exactly the same mask in its backward pass.
#[inline]
pub(crate) fn keep(seed: u64, i: u64, p: f32) -> bool {
    let mut st = seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let r = splitmix64(&mut st);
    ((r >> 40) as f32 * (1.0 / (1u32 << 24) as f32)) >= p
}
