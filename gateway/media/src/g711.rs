//! G.711 PCMU (μ-law) and PCMA (A-law), written by hand.
//!
//! Why by hand: the codec is sixty lines of bit manipulation fixed by ITU-T G.711 since 1972, the
//! crates that offer it are small, unmaintained or pull in far more, and here it is tested against
//! the reference values directly (every code decodes and re-encodes to itself, monotonicity,
//! the silence codes 0xFF and 0xD5, known table entries). The segment arithmetic follows the
//! public-domain Sun Microsystems reference implementation that the ITU tables are derived from.
//! Decoding, done for every received sample, is a table lookup; the tables are built at compile
//! time by the same decode functions.

/// The two G.711 laws, with their static RTP payload types (RFC 3551).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Codec {
    /// μ-law, payload type 0.
    Pcmu,
    /// A-law, payload type 8 (the law of China's and Europe's networks).
    Pcma,
}

/// A codec name that is not one of ours (PCMA, PCMU).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec {0:?} (PCMA or PCMU)")]
pub struct UnknownCodec(pub String);

impl std::str::FromStr for Codec {
    type Err = UnknownCodec;

    /// The encoding name, case-insensitively (as [`Codec::from_name`]).
    fn from_str(s: &str) -> Result<Codec, UnknownCodec> {
        Codec::from_name(s).ok_or_else(|| UnknownCodec(s.to_owned()))
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Codec {
    /// Static RTP payload type.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// Encoding name as in `a=rtpmap` (compared case-insensitively).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The codec with this encoding name, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Codec> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }

    /// The codec with this static payload type.
    pub(crate) fn from_static_pt(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The code for digital silence (linear 0).
    pub(crate) fn silence_code(self) -> u8 {
        match self {
            Codec::Pcmu => 0xFF,
            Codec::Pcma => 0xD5,
        }
    }

    /// Encode one linear sample.
    pub(crate) fn encode_sample(self, pcm: i16) -> u8 {
        match self {
            Codec::Pcmu => linear_to_ulaw(pcm),
            Codec::Pcma => linear_to_alaw(pcm),
        }
    }

    /// Decode one code.
    pub fn decode_sample(self, code: u8) -> i16 {
        match self {
            Codec::Pcmu => ULAW_TO_LINEAR[code as usize],
            Codec::Pcma => ALAW_TO_LINEAR[code as usize],
        }
    }

    /// Encode samples, appending one byte per sample to `out`.
    pub fn encode(self, pcm: &[i16], out: &mut Vec<u8>) {
        out.reserve(pcm.len());
        out.extend(pcm.iter().map(|&s| self.encode_sample(s)));
    }

    /// Decode codes, appending one sample per byte to `out`.
    pub fn decode(self, codes: &[u8], out: &mut Vec<i16>) {
        let table = match self {
            Codec::Pcmu => &ULAW_TO_LINEAR,
            Codec::Pcma => &ALAW_TO_LINEAR,
        };
        out.reserve(codes.len());
        out.extend(codes.iter().map(|&c| table[c as usize]));
    }
}

const SIGN_BIT: u8 = 0x80;
const QUANT_MASK: u8 = 0x0F;
const SEG_SHIFT: u8 = 4;
const SEG_MASK: u8 = 0x70;
/// μ-law bias, added before the segment search (scaled to 14 bits when encoding).
const ULAW_BIAS: i32 = 0x84;
/// Largest 14-bit magnitude μ-law can represent.
const ULAW_CLIP: i32 = 8159;

const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

fn segment(value: i32, ends: &[i32; 8]) -> u8 {
    ends.iter()
        .position(|&end| value <= end)
        .map_or(8, |p| p as u8)
}

/// Linear 16-bit to μ-law (G.711 table 2a, via the 14-bit magnitude).
pub(crate) fn linear_to_ulaw(pcm: i16) -> u8 {
    let mut value = i32::from(pcm) >> 2;
    let mask = if value < 0 {
        value = -value;
        0x7F
    } else {
        0xFF
    };
    value = value.min(ULAW_CLIP) + (ULAW_BIAS >> 2);
    let seg = segment(value, &SEG_UEND);
    if seg >= 8 {
        0x7F ^ mask
    } else {
        let code = (seg << 4) | ((value >> (seg + 1)) as u8 & QUANT_MASK);
        code ^ mask
    }
}

/// μ-law to linear 16-bit.
pub(crate) const fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let mut t = (((u & QUANT_MASK) as i32) << 3) + ULAW_BIAS;
    t <<= (u & SEG_MASK) >> SEG_SHIFT;
    if u & SIGN_BIT != 0 {
        (ULAW_BIAS - t) as i16
    } else {
        (t - ULAW_BIAS) as i16
    }
}

/// Linear 16-bit to A-law (G.711 table 1a, via the 13-bit magnitude).
pub(crate) fn linear_to_alaw(pcm: i16) -> u8 {
    let mut value = i32::from(pcm) >> 3;
    let mask = if value >= 0 {
        0xD5
    } else {
        value = -value - 1;
        0x55
    };
    let seg = segment(value, &SEG_AEND);
    if seg >= 8 {
        0x7F ^ mask
    } else {
        let shift = if seg < 2 { 1 } else { seg };
        let code = (seg << 4) | ((value >> shift) as u8 & QUANT_MASK);
        code ^ mask
    }
}

/// A-law to linear 16-bit.
pub(crate) const fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & QUANT_MASK) as i32) << 4;
    let seg = (a & SEG_MASK) >> SEG_SHIFT;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & SIGN_BIT != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const fn build_table(ulaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if ulaw {
            ulaw_to_linear(i as u8)
        } else {
            alaw_to_linear(i as u8)
        };
        i += 1;
    }
    table
}

static ULAW_TO_LINEAR: [i16; 256] = build_table(true);
static ALAW_TO_LINEAR: [i16; 256] = build_table(false);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_names_parse_case_insensitively() {
        assert_eq!("PCMA".parse::<Codec>(), Ok(Codec::Pcma));
        assert_eq!("pcmu".parse::<Codec>(), Ok(Codec::Pcmu));
        let e = "G729".parse::<Codec>().expect_err("not ours");
        assert_eq!(e.to_string(), "unknown codec \"G729\" (PCMA or PCMU)");
        assert_eq!(Codec::Pcma.to_string(), "PCMA");
    }

    #[test]
    fn reference_values_ulaw() {
        // Entries of the G.711 μ-law decoding table (Sun reference / ITU-T G.191 tables).
        for (code, linear) in [
            (0x00u8, -32124i16),
            (0x0F, -16764),
            (0x10, -15996),
            (0x7E, -8),
            (0x7F, 0),
            (0x80, 32124),
            (0x8F, 16764),
            (0xFE, 8),
            (0xFF, 0),
        ] {
            assert_eq!(ulaw_to_linear(code), linear, "code {code:#04x}");
            assert_eq!(Codec::Pcmu.decode_sample(code), linear);
        }
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_ulaw(-8), 0x7E);
        assert_eq!(linear_to_ulaw(8), 0xFE);
    }

    #[test]
    fn reference_values_alaw() {
        for (code, linear) in [
            (0x00u8, -5504i16),
            (0x2A, -32256),
            (0x55, -8),
            (0x80, 5504),
            (0xAA, 32256),
            (0xD5, 8),
            (0xD4, 24),
        ] {
            assert_eq!(alaw_to_linear(code), linear, "code {code:#04x}");
            assert_eq!(Codec::Pcma.decode_sample(code), linear);
        }
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_round_trips() {
        for code in 0..=255u8 {
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "A-law {code:#04x}"
            );
            let expected = if code == 0x7F { 0xFF } else { code }; // -0 and +0 are both 0
            assert_eq!(
                linear_to_ulaw(ulaw_to_linear(code)),
                expected,
                "μ-law {code:#04x}"
            );
        }
    }

    #[test]
    fn quantization_is_monotonic_and_close() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut previous = i16::MIN;
            for x in i16::MIN..=i16::MAX {
                let y = codec.decode_sample(codec.encode_sample(x));
                assert!(y >= previous, "{codec:?} not monotonic at {x}");
                previous = y;
                // Quantization error stays below the largest step (1024 for μ-law, 1024 A-law)
                // plus the clipping above the largest code.
                let err = (i32::from(y) - i32::from(x)).abs();
                let bound = if i32::from(x).abs() > 32000 {
                    1100
                } else {
                    1024
                };
                assert!(err <= bound, "{codec:?}: {x} -> {y}");
                // Small signals are kept finely.
                if i32::from(x).abs() < 64 {
                    assert!(err <= 16, "{codec:?}: {x} -> {y}");
                }
            }
        }
    }

    #[test]
    fn slices_and_silence() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut codes = Vec::new();
            codec.encode(&[0; 4], &mut codes);
            assert_eq!(codes, vec![codec.silence_code(); 4]);
            let mut pcm = Vec::new();
            codec.decode(&codes, &mut pcm);
            assert!(pcm.iter().all(|s| s.abs() <= 8));
            assert_eq!(Codec::from_static_pt(codec.payload_type()), Some(codec));
            assert_eq!(Codec::from_name(&codec.name().to_lowercase()), Some(codec));
        }
        assert_eq!(Codec::from_static_pt(3), None);
    }
}
