//! Weight formats the converter writes, and whisper.cpp's 8-bit block format `q8_0`.
//!
//! Why q8_0: on a small shared CPU, Whisper's time goes into matrix products whose cost is mostly
//! reading weights; 8-bit weights halve that traffic against f16 and ggml multiplies them with
//! integer dot products. q8_0 is the quantization that loses least (an 8-bit code per value with
//! one scale per 32 values). It is not the default: on the speech tests it hears one of the
//! Mandarin answers worse than f16 (see [`Quantization::Q8_0`]).
//!
//! The format, as whisper.cpp's `quantize_row_q8_0_ref` (`ggml/src/ggml-quants.c`) writes it:
//! blocks of [`Q8_0_BLOCK`] values, each an f16 scale `d = max|x| / 127` followed by 32 signed
//! bytes `round(x / d)` (half away from zero; all zeros when `d` is 0). Sans-IO: slices in, bytes
//! out.

use std::fmt;
use std::str::FromStr;

use half::f16;

/// Values per q8_0 block (ggml's `QK8_0`).
pub const Q8_0_BLOCK: usize = 32;
/// Bytes per q8_0 block: the f16 scale, then one byte per value.
pub const Q8_0_BLOCK_BYTES: usize = 2 + Q8_0_BLOCK;

/// How the converter stores Whisper's large matrices (the attention and feed-forward weights and
/// the token embedding: the tensors whisper.cpp creates with the file's weight type). Everything
/// else keeps the types whisper.cpp expects whatever the weight type: f16 convolution kernels,
/// f32 biases, layer norms and positional embeddings.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Quantization {
    /// 16-bit floats, as the CTranslate2 release holds them (`ggml-base.bin`). The default: on
    /// the speech tests q8_0 hears one Mandarin answer worse (benches/README.md).
    #[default]
    #[serde(rename = "f16")]
    F16,
    /// whisper.cpp's 8-bit blocks (`ggml-base-q8_0.bin`): half the size and about a quarter
    /// faster on this project's CPU, but on the speech tests espeak-ng's "洪山区" is heard as
    /// "红色鲸" (no match) in 3 of 5 runs where f16 matched it in 5 of 5.
    #[serde(rename = "q8_0")]
    Q8_0,
}

impl Quantization {
    /// Every format, f16 first.
    pub const ALL: [Quantization; 2] = [Quantization::F16, Quantization::Q8_0];

    /// The name used in configuration, on the command line and in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::F16 => "f16",
            Quantization::Q8_0 => "q8_0",
        }
    }

    /// The ggml file's `ftype` header field: ggml's `GGML_FTYPE_*` plus, for quantized files,
    /// `GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR` (whisper.cpp refuses a q8_0 file without it).
    pub fn ftype(self) -> i32 {
        match self {
            Quantization::F16 => 1,
            Quantization::Q8_0 => QNT_VERSION * QNT_VERSION_FACTOR + 7,
        }
    }

    /// The ggml tensor type of the weight matrices.
    pub(crate) fn weight_type(self) -> i32 {
        match self {
            Quantization::F16 => TYPE_F16,
            Quantization::Q8_0 => TYPE_Q8_0,
        }
    }

    /// The format a header's `ftype` declares, if it is one we write.
    pub fn from_ftype(ftype: i32) -> Option<Quantization> {
        Quantization::ALL.into_iter().find(|q| q.ftype() == ftype)
    }
}

impl fmt::Display for Quantization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Quantization {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantization::ALL
            .into_iter()
            .find(|q| q.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown quantization {s:?} (f16 or q8_0)"))
    }
}

/// ggml's tensor type numbers (`enum ggml_type`) for the types we write.
pub(crate) const TYPE_F32: i32 = 0;
pub(crate) const TYPE_F16: i32 = 1;
pub(crate) const TYPE_Q8_0: i32 = 8;
/// ggml's `GGML_QNT_VERSION` (2 since 2023) and `GGML_QNT_VERSION_FACTOR`.
const QNT_VERSION: i32 = 2;
const QNT_VERSION_FACTOR: i32 = 1000;

/// Bytes a tensor of `elems` values of ggml type `ty` takes, or `None` for a type we do not
/// write or a q8_0 tensor that is not whole blocks.
pub(crate) fn tensor_bytes(ty: i32, elems: u64) -> Option<u64> {
    match ty {
        TYPE_F32 => elems.checked_mul(4),
        TYPE_F16 => elems.checked_mul(2),
        TYPE_Q8_0 if elems.is_multiple_of(Q8_0_BLOCK as u64) => {
            (elems / Q8_0_BLOCK as u64).checked_mul(Q8_0_BLOCK_BYTES as u64)
        }
        _ => None,
    }
}

/// Why values could not be quantized or dequantized.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    #[error("{0} values are not whole q8_0 blocks of {Q8_0_BLOCK}")]
    NotWholeBlocks(usize),
    #[error("{0} bytes are not whole q8_0 blocks of {Q8_0_BLOCK_BYTES}")]
    NotWholeBlockBytes(usize),
    #[error("value {index} is not finite ({value})")]
    NotFinite { index: usize, value: f32 },
}

/// Appends `values` as q8_0 blocks to `out`. `values` must be whole blocks (ggml quantizes rows,
/// and Whisper's rows are multiples of 32 wide) and finite (a NaN or infinite weight would make
/// its whole block's scale meaningless; the CTranslate2 release has none).
pub fn quantize_q8_0(values: &[f32], out: &mut Vec<u8>) -> Result<(), QuantError> {
    if !values.len().is_multiple_of(Q8_0_BLOCK) {
        return Err(QuantError::NotWholeBlocks(values.len()));
    }
    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(QuantError::NotFinite { index, value });
    }
    out.reserve(values.len() / Q8_0_BLOCK * Q8_0_BLOCK_BYTES);
    for block in values.chunks_exact(Q8_0_BLOCK) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        // As ggml: the codes use the exact scale, the file stores it rounded to f16.
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        // |x * id| <= 127 up to rounding, so the cast never saturates in practice; `as` clamps
        // if it ever did.
        out.extend(block.iter().map(|&x| (x * id).round() as i8 as u8));
    }
    Ok(())
}

/// The values q8_0 blocks stand for (`d * q`), as whisper.cpp reads them back. For tests and
/// checks; the recognizer never needs it.
pub fn dequantize_q8_0(bytes: &[u8]) -> Result<Vec<f32>, QuantError> {
    if !bytes.len().is_multiple_of(Q8_0_BLOCK_BYTES) {
        return Err(QuantError::NotWholeBlockBytes(bytes.len()));
    }
    let mut out = Vec::with_capacity(bytes.len() / Q8_0_BLOCK_BYTES * Q8_0_BLOCK);
    for block in bytes.chunks_exact(Q8_0_BLOCK_BYTES) {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        out.extend(block[2..].iter().map(|&q| f32::from(q as i8) * d));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic test weights of Whisper's typical size (a few hundredths), with outliers.
    fn weights(n: usize) -> Vec<f32> {
        let mut x: u32 = 0x9e37_79b9;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let v = (x as f32 / u32::MAX as f32 - 0.5) * 0.1;
                if i % 97 == 0 { v * 20.0 } else { v }
            })
            .collect()
    }

    #[test]
    fn round_trip_error_is_within_half_a_step_per_block() {
        // Whisper-sized weights, and tiny ones whose scale is an f16 subnormal.
        let mut values = weights(512 * 8);
        values.extend(weights(512).iter().map(|v| v * 1e-3));
        let mut bytes = Vec::new();
        quantize_q8_0(&values, &mut bytes).expect("whole blocks");
        assert_eq!(bytes.len(), values.len() / 32 * 34);
        let back = dequantize_q8_0(&bytes).expect("whole blocks");
        assert_eq!(back.len(), values.len());
        for (block, got) in values.chunks(32).zip(back.chunks(32)) {
            let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let step = amax / 127.0;
            // Half a step from rounding the code, plus the code (at most 127) times the scale's
            // f16 rounding: relative 2^-11, or half of 2^-24 where the scale is subnormal.
            let bound = step * 0.5 + 127.0 * (step * 2f32.powi(-11)).max(2f32.powi(-25)) * 1.01;
            for (x, y) in block.iter().zip(got) {
                assert!(
                    (x - y).abs() <= bound,
                    "{x} came back as {y} (bound {bound})"
                );
            }
            // The largest value keeps its sign and lands on code +-127.
            let (i, _) = block
                .iter()
                .enumerate()
                .fold((0, 0.0f32), |(bi, bm), (i, v)| {
                    if v.abs() > bm { (i, v.abs()) } else { (bi, bm) }
                });
            assert_eq!(got[i].signum(), block[i].signum());
        }
    }

    #[test]
    fn matches_ggml_reference_on_a_known_block() {
        // One block from -0.155 to 0.155 in steps of 0.01.
        let values: Vec<f32> = (0..32).map(|i| i as f32 * 0.01 - 0.155).collect();
        let mut bytes = Vec::new();
        quantize_q8_0(&values, &mut bytes).expect("one block");
        let amax = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        assert_eq!(&bytes[..2], &f16::from_f32(d).to_le_bytes());
        let codes: Vec<i8> = bytes[2..].iter().map(|&b| b as i8).collect();
        assert_eq!(codes[0], -127);
        assert_eq!(codes[31], 127);
        for (x, &q) in values.iter().zip(&codes) {
            assert_eq!(q, (x * (1.0 / d)).round() as i8, "value {x}");
        }
    }

    #[test]
    fn a_block_of_zeros_has_a_zero_scale_and_zero_codes() {
        let mut bytes = Vec::new();
        quantize_q8_0(&[0.0; 32], &mut bytes).expect("one block");
        assert_eq!(bytes, vec![0u8; 34]);
        assert_eq!(dequantize_q8_0(&bytes).expect("one block"), vec![0.0; 32]);
        // Negative zero too (no NaN from 0 * inf).
        let mut bytes = Vec::new();
        quantize_q8_0(&[-0.0; 32], &mut bytes).expect("one block");
        assert!(
            dequantize_q8_0(&bytes)
                .expect("one block")
                .iter()
                .all(|v| *v == 0.0)
        );
    }

    #[test]
    fn short_or_malformed_input_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        assert_eq!(
            quantize_q8_0(&[1.0; 31], &mut out),
            Err(QuantError::NotWholeBlocks(31))
        );
        assert_eq!(
            quantize_q8_0(&[1.0; 33], &mut out),
            Err(QuantError::NotWholeBlocks(33))
        );
        let mut nan = [0.5f32; 32];
        nan[7] = f32::NAN;
        assert!(matches!(
            quantize_q8_0(&nan, &mut out),
            Err(QuantError::NotFinite { index: 7, .. })
        ));
        let mut inf = [0.5f32; 32];
        inf[0] = f32::NEG_INFINITY;
        assert!(matches!(
            quantize_q8_0(&inf, &mut out),
            Err(QuantError::NotFinite { index: 0, .. })
        ));
        assert!(out.is_empty(), "nothing written on error");
        assert_eq!(
            dequantize_q8_0(&[0u8; 33]),
            Err(QuantError::NotWholeBlockBytes(33))
        );
        assert_eq!(dequantize_q8_0(&[]), Ok(Vec::new()));
        assert_eq!(quantize_q8_0(&[], &mut out), Ok(()));
    }

    #[test]
    fn sizes_and_names() {
        assert_eq!(tensor_bytes(TYPE_Q8_0, 64), Some(68));
        assert_eq!(tensor_bytes(TYPE_Q8_0, 65), None);
        assert_eq!(tensor_bytes(TYPE_F16, 3), Some(6));
        assert_eq!(tensor_bytes(TYPE_F32, u64::MAX), None);
        assert_eq!(tensor_bytes(2, 32), None);
        assert_eq!(Quantization::Q8_0.ftype(), 2007);
        assert_eq!(Quantization::from_ftype(2007), Some(Quantization::Q8_0));
        assert_eq!(Quantization::from_ftype(1), Some(Quantization::F16));
        assert_eq!(Quantization::from_ftype(7), None);
        assert_eq!("Q8_0".parse(), Ok(Quantization::Q8_0));
        assert_eq!("f16".parse(), Ok(Quantization::F16));
        assert!("q4_0".parse::<Quantization>().is_err());
        assert_eq!(Quantization::default(), Quantization::F16);
    }
}
