//! A deterministic mutator: the same seed gives the same inputs, so a crash found in CI replays
//! anywhere (`scripts/fuzz --seed`). The operations are libFuzzer's basic ones; there is no
//! coverage feedback here.

/// xorshift64* seeded through splitmix64 (nearby seeds give unrelated sequences, 0 works).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Integers that break arithmetic and bounds: edges of each width, as decimal text or as
/// little-endian bytes.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    7,
    8,
    16,
    63,
    64,
    127,
    128,
    255,
    256,
    1024,
    4096,
    65535,
    65536,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// Tokens the parsers care about, inserted whole (a random byte rarely makes a `:` or a `"`).
const TOKENS: &[&[u8]] = &[
    b":",
    b"/",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b"=",
    b".",
    b"\n",
    b"\r\n",
    b"\0",
    b"None",
    b"0x",
    b"-1",
    b"1e309",
    b"NaN",
    b"..",
    b"../",
    b"\\u0000",
    b"\xff\xfe",
    b"\xf0\x9f\x92\xa9",
];

/// The most bytes a mutant may have (parsers' inputs are small; huge ones only slow the run).
pub const MAX_LEN: usize = 64 * 1024;

/// One to four stacked mutations of `input`; `other` is a second pool entry for splicing.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        mutate_once(rng, &mut out, other);
    }
    out.truncate(MAX_LEN);
    out
}

fn mutate_once(rng: &mut Rng, out: &mut Vec<u8>, other: &[u8]) {
    let len = out.len();
    match rng.below(10) {
        // Flip one bit.
        0 if len > 0 => {
            let i = rng.below(len);
            out[i] ^= 1 << rng.below(8);
        }
        // Replace a byte.
        1 if len > 0 => {
            let i = rng.below(len);
            out[i] = rng.next_u64() as u8;
        }
        // Insert random bytes.
        2 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            out.splice(at..at, bytes);
        }
        // Delete a run.
        3 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(16));
            out.drain(at..at + n);
        }
        // Duplicate a run (repetition finds length and nesting limits).
        4 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            let run = out[at..at + n].to_vec();
            for _ in 0..1 + rng.below(8) {
                out.splice(at..at, run.iter().copied());
            }
        }
        // An interesting integer as decimal text, replacing a run of digits if there is one.
        5 => {
            let v = INTERESTING[rng.below(INTERESTING.len())];
            let text = if rng.below(4) == 0 {
                format!("-{v}")
            } else {
                v.to_string()
            };
            let digits: Vec<usize> = (0..len).filter(|&i| out[i].is_ascii_digit()).collect();
            if !digits.is_empty() && rng.below(2) == 0 {
                let start = digits[rng.below(digits.len())];
                let end = out[start..]
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .map_or(len, |p| start + p);
                out.splice(start..end, text.into_bytes());
            } else {
                let at = rng.below(len + 1);
                out.splice(at..at, text.into_bytes());
            }
        }
        // An interesting integer as little-endian bytes, overwriting (length prefixes, sizes).
        6 => {
            let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
            let width = [1usize, 2, 4, 8][rng.below(4)];
            let at = rng.below(len + 1);
            for (k, b) in v[..width].iter().enumerate() {
                match out.get_mut(at + k) {
                    Some(slot) => *slot = *b,
                    None => out.push(*b),
                }
            }
        }
        // Insert a parser token.
        7 => {
            let t = TOKENS[rng.below(TOKENS.len())];
            let at = rng.below(len + 1);
            out.splice(at..at, t.iter().copied());
        }
        // Splice: our head, the other's tail.
        8 if !other.is_empty() => {
            let cut = rng.below(len + 1);
            let from = rng.below(other.len());
            out.truncate(cut);
            out.extend_from_slice(&other[from..]);
        }
        // Truncate.
        _ if len > 0 => {
            out.truncate(rng.below(len));
        }
        _ => out.push(rng.next_u64() as u8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same seed gives the same mutants (a CI crash replays), and mutants stay bounded.
    #[test]
    fn mutation_is_deterministic_and_bounded() {
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut x = b"ns:name:0123:hash:2".to_vec();
            let mut all = Vec::new();
            for _ in 0..2000 {
                x = mutate(&mut rng, &x, b"{\"a\": 1}");
                assert!(x.len() <= MAX_LEN);
                all.push(x.clone());
            }
            all
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
