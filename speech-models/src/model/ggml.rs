//! Writing and checking whisper.cpp's ggml model file.
//!
//! Layout: magic, 11 hyperparameters, the mel filterbank, the regular vocabulary, then tensors
//! (`ndims`, name length, type, dims innermost first, name, data). whisper.cpp looks tensors up by
//! OpenAI's names and refuses unknown ones, so the converter produces exactly
//! [`expected_tensor_names`] and [`verify`] checks a file against that list.
//!
//! Tensor types follow what whisper.cpp creates for the file's weight type ([`Quantization`]):
//! the 2-D weight matrices in that type, convolution kernels in f16, everything else (biases,
//! layer norms, positional embeddings) in f32. whisper.cpp rejects a tensor whose size does not
//! match, so [`verify`] checks the types too.

use std::collections::BTreeSet;
use std::io::{self, Read, Seek, SeekFrom, Write};

use half::f16;

use super::ct2::{Ct2Model, DType, Variable};
use super::quant::{self, Quantization, TYPE_F16, TYPE_F32, TYPE_Q8_0};
use super::{mel, vocab};

/// `ggml` in ASCII, read as a little-endian int32.
pub const MAGIC: u32 = 0x6767_6d6c;
/// Bounds that keep [`verify`] from allocating what a corrupt file declares.
const MAX_VOCAB: i32 = 1_000_000;
const MAX_TOKEN_LEN: i32 = 1024;
const MAX_NAME_LEN: i32 = 256;
const MAX_TENSORS: usize = 10_000;

/// whisper.cpp's hyperparameters, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hparams {
    pub n_vocab: i32,
    pub n_audio_ctx: i32,
    pub n_audio_state: i32,
    pub n_audio_head: i32,
    pub n_audio_layer: i32,
    pub n_text_ctx: i32,
    pub n_text_state: i32,
    pub n_text_head: i32,
    pub n_text_layer: i32,
    pub n_mels: i32,
    pub ftype: i32,
}

impl Hparams {
    /// Whisper base, multilingual.
    pub const BASE: Hparams = Hparams {
        n_vocab: 51865,
        n_audio_ctx: 1500,
        n_audio_state: 512,
        n_audio_head: 8,
        n_audio_layer: 6,
        n_text_ctx: 448,
        n_text_state: 512,
        n_text_head: 8,
        n_text_layer: 6,
        n_mels: 80,
        ftype: 1,
    };

    fn to_array(self) -> [i32; 11] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
            self.ftype,
        ]
    }

    fn from_array(a: [i32; 11]) -> Self {
        Hparams {
            n_vocab: a[0],
            n_audio_ctx: a[1],
            n_audio_state: a[2],
            n_audio_head: a[3],
            n_audio_layer: a[4],
            n_text_ctx: a[5],
            n_text_state: a[6],
            n_text_head: a[7],
            n_text_layer: a[8],
            n_mels: a[9],
            ftype: a[10],
        }
    }
}

/// Why conversion or verification failed.
#[derive(Debug, thiserror::Error)]
pub enum GgmlError {
    #[error("CTranslate2 model has no variable {0}")]
    Missing(String),
    #[error("variable {name} has shape {shape:?}, expected {expected}")]
    Shape {
        name: String,
        shape: Vec<usize>,
        expected: String,
    },
    #[error("variable {name} has data type {dtype:?}; only f16, bf16 and f32 are converted")]
    DType { name: String, dtype: DType },
    #[error("the model is not a Whisper model: {0}")]
    NotWhisper(String),
    #[error("tensor {name}: {source}")]
    Quant {
        name: String,
        source: quant::QuantError,
    },
    #[error(transparent)]
    Vocab(#[from] vocab::VocabError),
    #[error("not a ggml file: {0}")]
    Invalid(String),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

/// The names of the tensors a Whisper model of this shape has, in the order we write them.
pub fn expected_tensor_names(h: &Hparams) -> Vec<String> {
    let mut names: Vec<String> = [
        "encoder.conv1.weight",
        "encoder.conv1.bias",
        "encoder.conv2.weight",
    ]
    .into_iter()
    .chain(["encoder.conv2.bias", "encoder.positional_embedding"])
    .map(str::to_owned)
    .collect();
    let attn = |p: &str| {
        [
            "query.weight",
            "query.bias",
            "key.weight",
            "value.weight",
            "value.bias",
            "out.weight",
            "out.bias",
        ]
        .map(|s| format!("{p}.{s}"))
    };
    let pair = |p: &str| [format!("{p}.weight"), format!("{p}.bias")];
    let mlp = |b: &str| {
        [
            pair(&format!("{b}.mlp_ln")),
            pair(&format!("{b}.mlp.0")),
            pair(&format!("{b}.mlp.2")),
        ]
    };
    for i in 0..h.n_audio_layer.max(0) {
        let b = format!("encoder.blocks.{i}");
        names.extend(pair(&format!("{b}.attn_ln")));
        names.extend(attn(&format!("{b}.attn")));
        names.extend(mlp(&b).into_iter().flatten());
    }
    names.extend(pair("encoder.ln_post"));
    names.push("decoder.token_embedding.weight".into());
    names.push("decoder.positional_embedding".into());
    for i in 0..h.n_text_layer.max(0) {
        let b = format!("decoder.blocks.{i}");
        names.extend(pair(&format!("{b}.attn_ln")));
        names.extend(attn(&format!("{b}.attn")));
        names.extend(pair(&format!("{b}.cross_attn_ln")));
        names.extend(attn(&format!("{b}.cross_attn")));
        names.extend(mlp(&b).into_iter().flatten());
    }
    names.extend(pair("decoder.ln"));
    names
}

/// Where one output tensor's values come from: rows `rows` of a CT2 variable.
struct Source<'m> {
    var: &'m Variable,
    rows: std::ops::Range<usize>,
}

struct Plan<'m> {
    model: &'m Ct2Model,
}

impl<'m> Plan<'m> {
    fn var(&self, name: &str) -> Result<&'m Variable, GgmlError> {
        self.model
            .get(name)
            .ok_or_else(|| GgmlError::Missing(name.to_owned()))
    }

    fn whole(&self, name: &str) -> Result<Source<'m>, GgmlError> {
        let var = self.var(name)?;
        let rows = var.shape.first().copied().unwrap_or(1);
        Ok(Source { var, rows: 0..rows })
    }

    /// Part `k` of `n` equal row blocks of a fused tensor.
    fn part(&self, name: &str, k: usize, n: usize, state: usize) -> Result<Source<'m>, GgmlError> {
        let var = self.var(name)?;
        if var.shape.first() != Some(&(n * state)) {
            return Err(GgmlError::Shape {
                name: name.to_owned(),
                shape: var.shape.clone(),
                expected: format!("{} rows ({n} fused blocks of {state})", n * state),
            });
        }
        Ok(Source {
            var,
            rows: k * state..(k + 1) * state,
        })
    }
}

/// Counts `prefix/layer_N/` blocks, requiring them to be numbered 0..n.
fn count_layers(model: &Ct2Model, prefix: &str) -> usize {
    let mut n = 0;
    while model
        .variables
        .iter()
        .any(|v| v.name.starts_with(&format!("{prefix}/layer_{n}/")))
    {
        n += 1;
    }
    n
}

fn dim(var: &Variable, axis: usize) -> Result<i32, GgmlError> {
    var.shape
        .get(axis)
        .and_then(|&d| i32::try_from(d).ok())
        .ok_or_else(|| GgmlError::Shape {
            name: var.name.clone(),
            shape: var.shape.clone(),
            expected: format!("axis {axis}"),
        })
}

fn heads(model: &Ct2Model, buf: &[u8], name: &str, state: i32) -> i32 {
    // Stored as an i16 scalar; Whisper's head size is 64 whenever it is absent.
    model
        .get(name)
        .filter(|v| v.dtype == DType::I16 && v.data.len() == 2)
        .and_then(|v| buf.get(v.data.clone()))
        .map_or(state / 64, |b| i32::from(i16::from_le_bytes([b[0], b[1]])))
}

/// Derives the hyperparameters from the tensors themselves.
pub fn hparams_of(model: &Ct2Model, buf: &[u8]) -> Result<Hparams, GgmlError> {
    if model.spec != "WhisperSpec" {
        return Err(GgmlError::NotWhisper(format!("spec is {:?}", model.spec)));
    }
    let plan = Plan { model };
    let emb = plan.var("decoder/embeddings/weight")?;
    let enc_pos = plan.var("encoder/position_encodings/encodings")?;
    let dec_pos = plan.var("decoder/position_encodings/encodings")?;
    let conv1 = plan.var("encoder/conv1/weight")?;
    let n_audio_state = dim(enc_pos, 1)?;
    let n_text_state = dim(dec_pos, 1)?;
    let to_i32 =
        |n: usize| i32::try_from(n).map_err(|_| GgmlError::NotWhisper("too many layers".into()));
    Ok(Hparams {
        n_vocab: dim(emb, 0)?,
        n_audio_ctx: dim(enc_pos, 0)?,
        n_audio_state,
        n_audio_head: heads(model, buf, "encoder/num_heads", n_audio_state),
        n_audio_layer: to_i32(count_layers(model, "encoder"))?,
        n_text_ctx: dim(dec_pos, 0)?,
        n_text_state,
        n_text_head: heads(model, buf, "decoder/num_heads", n_text_state),
        n_text_layer: to_i32(count_layers(model, "decoder"))?,
        n_mels: dim(conv1, 1)?,
        ftype: TYPE_F16,
    })
}

/// Maps every expected ggml tensor to its CT2 source.
fn sources<'m>(model: &'m Ct2Model, h: &Hparams) -> Result<Vec<(String, Source<'m>)>, GgmlError> {
    let plan = Plan { model };
    let (sa, st) = (h.n_audio_state as usize, h.n_text_state as usize);
    let mut out = Vec::new();
    let whole = |out: &mut Vec<_>, dst: String, src: &str| -> Result<(), GgmlError> {
        out.push((dst, plan.whole(src)?));
        Ok(())
    };
    for n in ["conv1", "conv2"] {
        whole(
            &mut out,
            format!("encoder.{n}.weight"),
            &format!("encoder/{n}/weight"),
        )?;
        whole(
            &mut out,
            format!("encoder.{n}.bias"),
            &format!("encoder/{n}/bias"),
        )?;
    }
    whole(
        &mut out,
        "encoder.positional_embedding".into(),
        "encoder/position_encodings/encodings",
    )?;
    // ggml's `weight` and `bias` of `dst` from the CT2 tensors `src/{weight}` and `src/{bias}`.
    let weight_and_bias = |out: &mut Vec<_>,
                           dst: &str,
                           src: &str,
                           [weight, bias]: [&str; 2]|
     -> Result<(), GgmlError> {
        out.push((
            format!("{dst}.weight"),
            plan.whole(&format!("{src}/{weight}"))?,
        ));
        out.push((format!("{dst}.bias"), plan.whole(&format!("{src}/{bias}"))?));
        Ok(())
    };
    let ln =
        |out: &mut Vec<_>, dst: &str, src: &str| weight_and_bias(out, dst, src, ["gamma", "beta"]);
    let linear =
        |out: &mut Vec<_>, dst: &str, src: &str| weight_and_bias(out, dst, src, ["weight", "bias"]);
    // Self-attention: linear_0 is q, k, v stacked; the k bias (zero) is dropped.
    let self_attn = |out: &mut Vec<_>, dst: &str, src: &str, s: usize| -> Result<(), GgmlError> {
        let (w, b) = (
            format!("{src}/linear_0/weight"),
            format!("{src}/linear_0/bias"),
        );
        out.push((format!("{dst}.query.weight"), plan.part(&w, 0, 3, s)?));
        out.push((format!("{dst}.query.bias"), plan.part(&b, 0, 3, s)?));
        out.push((format!("{dst}.key.weight"), plan.part(&w, 1, 3, s)?));
        out.push((format!("{dst}.value.weight"), plan.part(&w, 2, 3, s)?));
        out.push((format!("{dst}.value.bias"), plan.part(&b, 2, 3, s)?));
        linear(out, &format!("{dst}.out"), &format!("{src}/linear_1"))
    };
    // What encoder and decoder blocks both have: self-attention after its layer norm (`d` is the
    // ggml block, `s` the CT2 layer, `state` the width) ...
    let self_block = |out: &mut Vec<_>, d: &str, s: &str, state: usize| {
        ln(
            out,
            &format!("{d}.attn_ln"),
            &format!("{s}/self_attention/layer_norm"),
        )?;
        self_attn(
            out,
            &format!("{d}.attn"),
            &format!("{s}/self_attention"),
            state,
        )
    };
    // ... and the feed-forward network after its layer norm.
    let mlp = |out: &mut Vec<_>, d: &str, s: &str| -> Result<(), GgmlError> {
        ln(out, &format!("{d}.mlp_ln"), &format!("{s}/ffn/layer_norm"))?;
        linear(out, &format!("{d}.mlp.0"), &format!("{s}/ffn/linear_0"))?;
        linear(out, &format!("{d}.mlp.2"), &format!("{s}/ffn/linear_1"))
    };
    for i in 0..h.n_audio_layer as usize {
        let (d, s) = (format!("encoder.blocks.{i}"), format!("encoder/layer_{i}"));
        self_block(&mut out, &d, &s, sa)?;
        mlp(&mut out, &d, &s)?;
    }
    ln(&mut out, "encoder.ln_post", "encoder/layer_norm")?;
    whole(
        &mut out,
        "decoder.token_embedding.weight".into(),
        "decoder/embeddings/weight",
    )?;
    whole(
        &mut out,
        "decoder.positional_embedding".into(),
        "decoder/position_encodings/encodings",
    )?;
    for i in 0..h.n_text_layer as usize {
        let (d, s) = (format!("decoder.blocks.{i}"), format!("decoder/layer_{i}"));
        self_block(&mut out, &d, &s, st)?;
        ln(
            &mut out,
            &format!("{d}.cross_attn_ln"),
            &format!("{s}/attention/layer_norm"),
        )?;
        // Cross-attention: linear_0 is q; linear_1 is k, v stacked; linear_2 is the output.
        let a = format!("{s}/attention");
        let c = format!("{d}.cross_attn");
        linear(&mut out, &format!("{c}.query"), &format!("{a}/linear_0"))?;
        out.push((
            format!("{c}.key.weight"),
            plan.part(&format!("{a}/linear_1/weight"), 0, 2, st)?,
        ));
        out.push((
            format!("{c}.value.weight"),
            plan.part(&format!("{a}/linear_1/weight"), 1, 2, st)?,
        ));
        out.push((
            format!("{c}.value.bias"),
            plan.part(&format!("{a}/linear_1/bias"), 1, 2, st)?,
        ));
        linear(&mut out, &format!("{c}.out"), &format!("{a}/linear_2"))?;
        mlp(&mut out, &d, &s)?;
    }
    ln(&mut out, "decoder.ln", "decoder/layer_norm")?;
    Ok(out)
}

/// The ggml type of tensor `name` with `ndims` dimensions in a file of weight type `q`, as
/// `whisper_model_load` creates it: layer norms, biases (the convolutions' are 2-D) and
/// positional embeddings f32; the convolution kernels (3-D) f16 (ggml's convolution takes no
/// quantized kernel); the 2-D weight matrices in the weight type. As in whisper.cpp's own
/// `quantize` tool, only 2-D tensors are ever quantized.
fn tensor_type(name: &str, ndims: usize, q: Quantization) -> i32 {
    if ndims < 2
        || name.ends_with("positional_embedding")
        || name.starts_with("encoder.conv") && name.ends_with(".bias")
    {
        TYPE_F32
    } else if ndims == 2 {
        q.weight_type()
    } else {
        TYPE_F16
    }
}

fn w_i32(out: &mut impl Write, v: i32) -> io::Result<()> {
    out.write_all(&v.to_le_bytes())
}

fn len_i32(n: usize) -> io::Result<i32> {
    i32::try_from(n).map_err(|_| io::Error::other("length does not fit in int32"))
}

/// Writes one tensor's values as ggml type `ty`, converting on the way. q8_0 blocks run along
/// the innermost dimension (CT2's last axis, contiguous), so whole rows are whole blocks as long
/// as a row is a multiple of 32 wide; the caller checks that.
fn write_data(
    out: &mut impl Write,
    buf: &[u8],
    src: &Source<'_>,
    ty: i32,
) -> Result<(), GgmlError> {
    let var = src.var;
    let row_elems: usize = var.shape.iter().skip(1).product();
    let es = var.dtype.size() as usize;
    let start = var.data.start + src.rows.start * row_elems * es;
    let end = var.data.start + src.rows.end * row_elems * es;
    let bytes = buf
        .get(start..end)
        .filter(|_| end <= var.data.end)
        .ok_or_else(|| GgmlError::Invalid(format!("{} rows out of range", var.name)))?;
    // f16 in, f16 out: the bytes as they are.
    if ty == TYPE_F16 && var.dtype == DType::F16 {
        out.write_all(bytes)?;
        return Ok(());
    }
    let values = bytes
        .chunks_exact(es)
        .map(|c| match var.dtype {
            DType::F16 => Some(f16::from_le_bytes([c[0], c[1]]).to_f32()),
            DType::Bf16 => Some(half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
            DType::F32 => Some(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            _ => None,
        })
        .collect::<Option<Vec<f32>>>()
        .ok_or_else(|| GgmlError::DType {
            name: var.name.clone(),
            dtype: var.dtype,
        })?;
    let mut tmp = Vec::new();
    match ty {
        TYPE_Q8_0 => {
            quant::quantize_q8_0(&values, &mut tmp).map_err(|source| GgmlError::Quant {
                name: var.name.clone(),
                source,
            })?
        }
        TYPE_F16 => {
            tmp.reserve(values.len() * 2);
            for v in values {
                tmp.extend_from_slice(&f16::from_f32(v).to_le_bytes());
            }
        }
        _ => {
            tmp.reserve(values.len() * 4);
            for v in values {
                tmp.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out.write_all(&tmp)?;
    Ok(())
}

/// What [`convert`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    pub hparams: Hparams,
    pub tensors: usize,
    pub vocab: usize,
}

/// Converts a parsed CT2 Whisper model (`buf` is the whole `model.bin`) and its `vocabulary.txt`
/// into a ggml file with weight matrices stored as `quantization`, written to `out`.
pub fn convert(
    model: &Ct2Model,
    buf: &[u8],
    vocabulary: &[u8],
    quantization: Quantization,
    out: &mut impl Write,
) -> Result<Converted, GgmlError> {
    let h = Hparams {
        ftype: quantization.ftype(),
        ..hparams_of(model, buf)?
    };
    let sources = sources(model, &h)?;
    let tokens = vocab::regular_tokens(vocabulary)?;
    if tokens.len() > h.n_vocab as usize {
        return Err(GgmlError::NotWhisper(format!(
            "{} regular tokens for n_vocab {}",
            tokens.len(),
            h.n_vocab
        )));
    }
    for (name, src) in &sources {
        if name.ends_with("key.weight") {
            let bias_name = src.var.name.replace("/weight", "/bias");
            check_zero_key_bias(model, buf, &bias_name, src.rows.clone());
        }
    }
    out.write_all(&MAGIC.to_le_bytes())?;
    for v in h.to_array() {
        w_i32(out, v)?;
    }
    let n_mels = h.n_mels as usize;
    let filters = mel::filterbank(mel::SAMPLE_RATE, mel::N_FFT, n_mels);
    w_i32(out, h.n_mels)?;
    w_i32(out, len_i32(mel::N_FFT / 2 + 1)?)?;
    for f in &filters {
        out.write_all(&f.to_le_bytes())?;
    }
    w_i32(out, len_i32(tokens.len())?)?;
    for t in &tokens {
        w_i32(out, len_i32(t.len())?)?;
        out.write_all(t)?;
    }
    for (name, src) in &sources {
        let mut dims: Vec<usize> = src.var.shape.clone();
        if let Some(first) = dims.first_mut() {
            *first = src.rows.len();
        }
        if name.starts_with("encoder.conv") && name.ends_with(".bias") {
            dims.push(1);
        }
        let ty = tensor_type(name, dims.len(), quantization);
        if ty == TYPE_Q8_0
            && dims
                .last()
                .is_none_or(|d| !d.is_multiple_of(quant::Q8_0_BLOCK))
        {
            return Err(GgmlError::Shape {
                name: src.var.name.clone(),
                shape: dims,
                expected: format!("rows a multiple of {} wide for q8_0", quant::Q8_0_BLOCK),
            });
        }
        w_i32(out, len_i32(dims.len())?)?;
        w_i32(out, len_i32(name.len())?)?;
        w_i32(out, ty)?;
        for d in dims.iter().rev() {
            w_i32(out, len_i32(*d)?)?;
        }
        out.write_all(name.as_bytes())?;
        write_data(out, buf, src, ty)?;
    }
    Ok(Converted {
        hparams: h,
        tensors: sources.len(),
        vocab: tokens.len(),
    })
}

fn check_zero_key_bias(model: &Ct2Model, buf: &[u8], bias: &str, rows: std::ops::Range<usize>) {
    let Some(var) = model.get(bias) else { return };
    let es = var.dtype.size() as usize;
    let range = var.data.start + rows.start * es..var.data.start + rows.end * es;
    let nonzero = buf.get(range).is_some_and(|b| b.iter().any(|&x| x != 0));
    if nonzero {
        tracing::warn!(
            variable = bias,
            "key bias is not zero; whisper.cpp has none, so it is dropped"
        );
    }
}

/// What [`verify`] found in a ggml file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgmlSummary {
    pub hparams: Hparams,
    pub vocab: usize,
    pub tensors: Vec<String>,
}

fn r_i32(r: &mut impl Read) -> Result<i32, GgmlError> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)
        .map_err(|e| GgmlError::Invalid(format!("truncated: {e}")))?;
    Ok(i32::from_le_bytes(b))
}

fn bounded(v: i32, max: i32, what: &str) -> Result<usize, GgmlError> {
    if (0..=max).contains(&v) {
        Ok(v as usize)
    } else {
        Err(GgmlError::Invalid(format!(
            "{what} {v} out of range 0..={max}"
        )))
    }
}

/// Reads a ggml Whisper file's header, hyperparameters, mel filters, vocabulary and tensor table
/// (skipping data), and checks the tensors are exactly those whisper.cpp expects, each of the
/// type whisper.cpp expects for the file's weight type (one we write: f16 or q8_0).
pub fn verify<R: Read + Seek>(r: &mut R) -> Result<GgmlSummary, GgmlError> {
    let file_len = r.seek(SeekFrom::End(0))?;
    r.seek(SeekFrom::Start(0))?;
    let h = read_header(r)?;
    verify_rest(r, h, file_len)
}

/// Reads and sanity-checks the magic and hyperparameters.
pub fn read_header<R: Read>(r: &mut R) -> Result<Hparams, GgmlError> {
    if r_i32(r)? as u32 != MAGIC {
        return Err(GgmlError::Invalid("bad magic".into()));
    }
    let mut a = [0i32; 11];
    for v in &mut a {
        *v = r_i32(r)?;
    }
    let h = Hparams::from_array(a);
    if h.n_vocab <= 0
        || h.n_mels <= 0
        || h.n_audio_layer <= 0
        || h.n_text_layer <= 0
        || h.n_audio_layer > 64
        || h.n_text_layer > 64
    {
        return Err(GgmlError::Invalid(format!(
            "implausible hyperparameters {h:?}"
        )));
    }
    Ok(h)
}

fn verify_rest<R: Read + Seek>(
    r: &mut R,
    h: Hparams,
    file_len: u64,
) -> Result<GgmlSummary, GgmlError> {
    let (mels, freqs) = (r_i32(r)?, r_i32(r)?);
    if mels != h.n_mels || freqs != (mel::N_FFT / 2 + 1) as i32 {
        return Err(GgmlError::Invalid(format!(
            "mel filters are {mels}x{freqs}"
        )));
    }
    let quantization = Quantization::from_ftype(h.ftype).ok_or_else(|| {
        GgmlError::Invalid(format!(
            "ftype {} is not a weight type we write (f16 = 1, q8_0 = 2007)",
            h.ftype
        ))
    })?;
    r.seek(SeekFrom::Current(i64::from(mels) * i64::from(freqs) * 4))?;
    let n_tokens = bounded(r_i32(r)?, MAX_VOCAB.min(h.n_vocab), "vocabulary size")?;
    for _ in 0..n_tokens {
        let len = bounded(r_i32(r)?, MAX_TOKEN_LEN, "token length")?;
        r.seek(SeekFrom::Current(len as i64))?;
    }
    let mut tensors = Vec::new();
    loop {
        let pos = r.stream_position()?;
        if pos == file_len {
            break;
        }
        if tensors.len() >= MAX_TENSORS {
            return Err(GgmlError::Invalid("too many tensors".into()));
        }
        let ndims = bounded(r_i32(r)?, 4, "tensor rank")?;
        let name_len = bounded(r_i32(r)?, MAX_NAME_LEN, "tensor name length")?;
        let ty = r_i32(r)?;
        let mut elems: u64 = 1;
        let mut innermost = 0;
        for i in 0..ndims {
            let d = bounded(r_i32(r)?, i32::MAX, "tensor dimension")?;
            if i == 0 {
                innermost = d;
            }
            elems = elems.saturating_mul(d as u64);
        }
        let mut name = vec![0u8; name_len];
        r.read_exact(&mut name)
            .map_err(|e| GgmlError::Invalid(format!("truncated tensor name: {e}")))?;
        let name = String::from_utf8(name)
            .map_err(|_| GgmlError::Invalid("tensor name is not UTF-8".into()))?;
        let want = tensor_type(&name, ndims, quantization);
        if ty != want {
            return Err(GgmlError::Invalid(format!(
                "tensor {name} has type {ty}, expected {want} in a {quantization} file"
            )));
        }
        if ty == TYPE_Q8_0 && !innermost.is_multiple_of(quant::Q8_0_BLOCK) {
            return Err(GgmlError::Invalid(format!(
                "tensor {name}: rows of {innermost} are not whole q8_0 blocks"
            )));
        }
        let bytes = quant::tensor_bytes(ty, elems).ok_or_else(|| {
            GgmlError::Invalid(format!("tensor {name}: {elems} values of type {ty}"))
        })?;
        let end = r.stream_position()?.saturating_add(bytes);
        if end > file_len {
            return Err(GgmlError::Invalid(format!(
                "tensor {name} runs past the end of the file"
            )));
        }
        r.seek(SeekFrom::Start(end))?;
        tensors.push(name);
    }
    let expected: BTreeSet<String> = expected_tensor_names(&h).into_iter().collect();
    let found: BTreeSet<String> = tensors.iter().cloned().collect();
    if found.len() != tensors.len() {
        return Err(GgmlError::Invalid("duplicate tensor names".into()));
    }
    if found != expected {
        let missing: Vec<_> = expected.difference(&found).take(5).collect();
        let extra: Vec<_> = found.difference(&expected).take(5).collect();
        return Err(GgmlError::Invalid(format!(
            "tensor names differ: missing {missing:?}, unexpected {extra:?}"
        )));
    }
    Ok(GgmlSummary {
        hparams: h,
        vocab: n_tokens,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_has_245_tensors() {
        assert_eq!(expected_tensor_names(&Hparams::BASE).len(), 245);
    }

    /// As `whisper_model_load` creates them: only the 2-D weight matrices take the file's type.
    #[test]
    fn only_weight_matrices_are_quantized() {
        let q8 = |name, ndims| tensor_type(name, ndims, Quantization::Q8_0);
        assert_eq!(q8("encoder.blocks.0.attn.query.weight", 2), TYPE_Q8_0);
        assert_eq!(q8("decoder.blocks.5.cross_attn.value.weight", 2), TYPE_Q8_0);
        assert_eq!(q8("decoder.blocks.5.mlp.2.weight", 2), TYPE_Q8_0);
        assert_eq!(q8("decoder.token_embedding.weight", 2), TYPE_Q8_0);
        assert_eq!(q8("encoder.conv1.weight", 3), TYPE_F16);
        assert_eq!(q8("encoder.conv2.bias", 2), TYPE_F32);
        assert_eq!(q8("encoder.positional_embedding", 2), TYPE_F32);
        assert_eq!(q8("decoder.positional_embedding", 2), TYPE_F32);
        assert_eq!(q8("encoder.blocks.0.attn_ln.weight", 1), TYPE_F32);
        assert_eq!(q8("decoder.blocks.0.attn.query.bias", 1), TYPE_F32);
        let f16 = |name, ndims| tensor_type(name, ndims, Quantization::F16);
        assert_eq!(f16("encoder.blocks.0.attn.query.weight", 2), TYPE_F16);
        assert_eq!(f16("encoder.conv1.weight", 3), TYPE_F16);
        assert_eq!(f16("encoder.conv1.bias", 2), TYPE_F32);
    }
}
