//! Reading CTranslate2's `model.bin` (format version 6).
//!
//! The file comes from the internet, so the parser trusts nothing: every length is checked against
//! what is left of the buffer before use, counts are capped, names must be UTF-8, and nothing is
//! allocated in proportion to a declared size. Tensor data is not copied: a [`Variable`] holds the
//! byte range of its data inside the buffer that was parsed.

use std::ops::Range;

/// Most variables a model may declare (Whisper large has about 1,300).
pub const MAX_VARIABLES: usize = 100_000;
/// Most aliases a model may declare.
pub const MAX_ALIASES: usize = 100_000;
/// Most dimensions a tensor may have.
pub const MAX_RANK: usize = 8;

/// Why a `model.bin` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ct2Error {
    #[error("model.bin ends early at byte {at} while reading {what}")]
    Truncated { what: &'static str, at: usize },
    #[error("unsupported CTranslate2 format version {0} (expected 5 or 6)")]
    Version(u32),
    #[error("{what} is not valid UTF-8 or lacks its NUL terminator at byte {at}")]
    BadString { what: &'static str, at: usize },
    #[error("too many {what}: {count} (at most {max})")]
    TooMany {
        what: &'static str,
        count: u64,
        max: usize,
    },
    #[error("variable {name}: rank {rank} is above {MAX_RANK}")]
    Rank { name: String, rank: u8 },
    #[error("variable {name}: unknown data type {dtype}")]
    DType { name: String, dtype: u8 },
    #[error(
        "variable {name}: shape {shape:?} of {dtype:?} needs {expected} bytes but {actual} are declared"
    )]
    Size {
        name: String,
        shape: Vec<usize>,
        dtype: DType,
        expected: u64,
        actual: u64,
    },
    #[error("{0} trailing bytes after the alias table")]
    Trailing(usize),
}

/// Element types CTranslate2 writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl DType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::Bf16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// One named tensor of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// Where its data lies in the parsed buffer.
    pub data: Range<usize>,
}

impl Variable {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The parsed header and variable table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ct2Model {
    pub version: u32,
    pub spec: String,
    pub revision: u32,
    pub variables: Vec<Variable>,
    /// (alias, target) pairs: `alias` names the same tensor as `target`.
    pub aliases: Vec<(String, String)>,
}

impl Ct2Model {
    /// The variable called `name`, following aliases once.
    pub fn get(&self, name: &str) -> Option<&Variable> {
        let target = self
            .aliases
            .iter()
            .find(|(alias, _)| alias == name)
            .map_or(name, |(_, target)| target.as_str());
        self.variables.iter().find(|v| v.name == target)
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Ct2Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(Ct2Error::Truncated { what, at: self.pos })?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Ct2Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Ct2Error> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Ct2Error> {
        self.array(what).map(u16::from_le_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Ct2Error> {
        self.array(what).map(u32::from_le_bytes)
    }

    /// A u16 length (including the NUL), the bytes and the NUL.
    fn string(&mut self, what: &'static str) -> Result<String, Ct2Error> {
        let at = self.pos;
        let len = usize::from(self.u16(what)?);
        let bytes = self.take(len, what)?;
        match bytes.split_last() {
            Some((0, text)) => std::str::from_utf8(text)
                .map(str::to_owned)
                .map_err(|_| Ct2Error::BadString { what, at }),
            _ => Err(Ct2Error::BadString { what, at }),
        }
    }

    fn count(
        &mut self,
        what: &'static str,
        max: usize,
        min_entry: usize,
    ) -> Result<usize, Ct2Error> {
        let count = self.u32(what)?;
        let left = self.buf.len().saturating_sub(self.pos);
        // Every entry takes at least `min_entry` bytes, so a count beyond that is a lie.
        let cap = max.min(left / min_entry.max(1));
        usize::try_from(count)
            .ok()
            .filter(|&c| c <= cap)
            .ok_or(Ct2Error::TooMany {
                what,
                count: u64::from(count),
                max: cap,
            })
    }
}

/// Parses the header, variable table and aliases of a CTranslate2 `model.bin`.
pub fn parse(buf: &[u8]) -> Result<Ct2Model, Ct2Error> {
    let mut c = Cursor { buf, pos: 0 };
    let version = c.u32("format version")?;
    if !(5..=6).contains(&version) {
        return Err(Ct2Error::Version(version));
    }
    let spec = c.string("spec name")?;
    let revision = c.u32("spec revision")?;
    // name (3 bytes at least), rank, dtype, byte count.
    let n_vars = c.count("variables", MAX_VARIABLES, 9)?;
    let mut variables = Vec::with_capacity(n_vars);
    for _ in 0..n_vars {
        variables.push(variable(&mut c)?);
    }
    let n_aliases = c.count("aliases", MAX_ALIASES, 6)?;
    let mut aliases = Vec::with_capacity(n_aliases);
    for _ in 0..n_aliases {
        let alias = c.string("alias name")?;
        let target = c.string("alias target")?;
        aliases.push((alias, target));
    }
    let trailing = buf.len() - c.pos;
    if trailing != 0 {
        return Err(Ct2Error::Trailing(trailing));
    }
    Ok(Ct2Model {
        version,
        spec,
        revision,
        variables,
        aliases,
    })
}

fn variable(c: &mut Cursor<'_>) -> Result<Variable, Ct2Error> {
    let name = c.string("variable name")?;
    let rank = c.u8("variable rank")?;
    if usize::from(rank) > MAX_RANK {
        return Err(Ct2Error::Rank { name, rank });
    }
    let mut shape = Vec::with_capacity(usize::from(rank));
    let mut elements: u64 = 1;
    for _ in 0..rank {
        let dim = c.u32("variable dimension")?;
        elements = elements.saturating_mul(u64::from(dim));
        shape.push(dim as usize);
    }
    let code = c.u8("variable data type")?;
    let dtype = DType::from_code(code).ok_or_else(|| Ct2Error::DType {
        name: name.clone(),
        dtype: code,
    })?;
    let actual = u64::from(c.u32("variable byte count")?);
    let expected = elements.saturating_mul(dtype.size());
    if expected != actual {
        return Err(Ct2Error::Size {
            name,
            shape,
            dtype,
            expected,
            actual,
        });
    }
    let start = c.pos;
    c.take(actual as usize, "variable data")?;
    Ok(Variable {
        name,
        shape,
        dtype,
        data: start..c.pos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&6u32.to_le_bytes());
        string(&mut b, "WhisperSpec");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        string(&mut b, "a/weight");
        b.push(2);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.push(4);
        b.extend_from_slice(&12u32.to_le_bytes());
        b.extend_from_slice(&[0; 12]);
        b.extend_from_slice(&1u32.to_le_bytes());
        string(&mut b, "b/weight");
        string(&mut b, "a/weight");
        b
    }

    #[test]
    fn parses_a_small_model() {
        let m = parse(&sample()).expect("parses");
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(m.variables.len(), 1);
        assert_eq!(m.variables[0].shape, vec![2, 3]);
        assert_eq!(m.get("b/weight").map(|v| v.name.as_str()), Some("a/weight"));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let b = sample();
        for n in 0..b.len() {
            assert!(parse(&b[..n]).is_err(), "prefix {n} accepted");
        }
    }

    #[test]
    fn lying_counts_and_sizes_are_rejected() {
        let mut b = sample();
        b[22..26].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse(&b), Err(Ct2Error::TooMany { .. })));
        let mut b = sample();
        let at = b
            .windows(5)
            .position(|w| w == [4, 12, 0, 0, 0])
            .expect("dtype and size")
            + 1;
        b[at..at + 4].copy_from_slice(&13u32.to_le_bytes());
        assert!(parse(&b).is_err());
    }
}
