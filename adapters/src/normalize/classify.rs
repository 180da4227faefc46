//! Category classification: a linear model over hashed character n-grams.
//!
//! Why this shape: citizens write long, colloquial Chinese with no spaces, and a 12345 gateway
//! must classify every submission in well under a millisecond without a word segmenter or a
//! neural runtime. Character unigrams and bigrams carry most of the signal in Chinese (`噪音`,
//! `社保`, `物业`), hashing them into a fixed space needs no vocabulary file, and a multinomial
//! logistic regression over TF-IDF weights (trained with `linfa-logistic` by
//! `src/bin/train-classifier.rs`) reaches about 91% on held-out real messages.
//!
//! The feature pipeline lives here, not in the training tool, so that training and inference
//! cannot drift apart: the tool calls [`hashed_counts`] and [`CategoryModel::features`] just as
//! [`CategoryModel::predict`] does. The shipped model (`adapters/data/category-model.bin`) is
//! embedded with `include_bytes!` and parsed once; inference does no I/O.
//!
//! Model file format (little endian), kept simple so it is byte-for-byte reproducible:
//! `b"12345CAT"`, `u32` version (1), `u32` hash bits, `f32` subject weight, `u32` class count and
//! each class name as `u32` length + UTF-8, `u32` feature count `k`, then `k` ascending `u32`
//! buckets, `k` `f32` IDF values, `k × classes` `f32` weights (row per feature) and `classes`
//! `f32` biases.

use std::sync::LazyLock;

/// Magic bytes at the start of a model file.
pub const MAGIC: &[u8; 8] = b"12345CAT";
/// Model file format version.
pub const VERSION: u32 = 1;
/// Hashed feature space: 2^18 buckets keeps collisions rare for ~200k distinct n-grams.
pub const HASH_BITS: u32 = 18;
/// A subject line states the matter in few words; its n-grams count this many times.
pub const SUBJECT_WEIGHT: f32 = 2.0;
/// Seed of the stratified held-out split shared by the training tool and the tests.
pub const SPLIT_SEED: u64 = 12345;
/// Share of each class held out from training.
pub const HOLDOUT_SHARE: f64 = 0.2;

static SHIPPED: LazyLock<Result<CategoryModel, ModelError>> =
    LazyLock::new(|| CategoryModel::from_bytes(include_bytes!("../../data/category-model.bin")));

/// The model shipped with the crate, parsed on first use.
pub fn shipped_model() -> Result<&'static CategoryModel, &'static ModelError> {
    SHIPPED.as_ref()
}

/// A category and how sure the model is (softmax probability, 0 to 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction<'a> {
    pub category: &'a str,
    pub confidence: f32,
}

/// Why a model file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("category model: {0}")]
pub struct ModelError(pub String);

/// A trained linear model over selected hash buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryModel {
    pub classes: Vec<String>,
    /// Selected hash buckets, ascending; fixed at [`CategoryModel::new`] (see `known`).
    buckets: Vec<u32>,
    /// IDF weight per selected bucket.
    pub idf: Vec<f32>,
    /// `buckets.len() × classes.len()`, row per bucket.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    /// `buckets` as a bitset, built with them.
    known: BucketSet,
}

/// Selected buckets as a bitset over the hash space (32 KiB, so it stays in the L1 cache): most
/// of a message's n-grams are not selected, and one bit says so where a binary search over the
/// buckets would take a dozen dependent loads.
#[derive(Debug, Clone, PartialEq)]
struct BucketSet {
    bits: Vec<u64>,
    /// Selected buckets before each word of `bits`, when the buckets are strictly ascending (as
    /// every model file's are): a selected bucket's feature index is then this count plus the
    /// bits below it in its word, where a binary search over the few thousand buckets for every
    /// selected n-gram was a good part of [`CategoryModel::features`] (3 % of the gateway's CPU
    /// under the intake load). `None` for other bucket lists, which are searched as before.
    rank: Option<Vec<u32>>,
}

impl BucketSet {
    fn of(buckets: &[u32]) -> Self {
        let mut bits = vec![0u64; 1 << (HASH_BITS - 6)];
        for b in buckets {
            // A bucket outside the hash space (a foreign file) can never be hashed to: skip it.
            if let Some(word) = bits.get_mut((b >> 6) as usize) {
                *word |= 1 << (b & 63);
            }
        }
        // Ascending, so buckets outside the hash space come last and shift no index.
        let rank = buckets.windows(2).all(|w| w[0] < w[1]).then(|| {
            let mut before = 0u32;
            bits.iter()
                .map(|w| {
                    let r = before;
                    before += w.count_ones();
                    r
                })
                .collect()
        });
        BucketSet { bits, rank }
    }

    /// The feature index of `bucket` in `buckets` (the list this set was built from), or `None`
    /// when it is not selected.
    fn index(&self, bucket: u32, buckets: &[u32]) -> Option<usize> {
        let at = (bucket >> 6) as usize;
        let word = *self.bits.get(at)?;
        let bit = bucket & 63;
        if (word >> bit) & 1 == 0 {
            return None;
        }
        match &self.rank {
            Some(rank) => {
                let below = (word & ((1u64 << bit) - 1)).count_ones();
                Some(rank[at] as usize + below as usize)
            }
            None => buckets.binary_search(&bucket).ok(),
        }
    }
}

/// Characters that carry no category signal here: whitespace, ASCII letters and digits
/// (disguised place codes such as `A3区`, dates, amounts) and full-width digits.
fn is_noise(c: char) -> bool {
    c.is_whitespace() || c.is_ascii_alphanumeric() || ('０'..='９').contains(&c)
}

/// FNV-1a over UTF-8 bytes with a final avalanche, stable across platforms and releases
/// (`std`'s hasher is not).
fn hash_gram(chars: &[char]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = [0u8; 4];
    for c in chars {
        for b in c.encode_utf8(&mut buf).bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h & ((1u64 << HASH_BITS) - 1)) as u32
}

/// Calls `f(bucket, weight)` for every character unigram and bigram of the message, noise
/// skipped: subject n-grams weigh [`SUBJECT_WEIGHT`], and no bigram crosses from subject to
/// detail. Training ([`hashed_counts`]) and inference ([`CategoryModel::features`]) both read a
/// message through this one function, so they cannot drift apart.
fn for_each_gram(subject: &str, detail: &str, mut f: impl FnMut(u32, f32)) {
    for (text, weight) in [(subject, SUBJECT_WEIGHT), (detail, 1.0)] {
        let mut prev: Option<char> = None;
        for c in text.chars().filter(|c| !is_noise(*c)) {
            f(hash_gram(&[c]), weight);
            if let Some(p) = prev {
                f(hash_gram(&[p, c]), weight);
            }
            prev = Some(c);
        }
    }
}

/// Sorts `(key, weight)` pairs by key and adds up the weights of equal keys.
fn sum_by_key<K: Ord + Copy>(mut pairs: Vec<(K, f32)>) -> Vec<(K, f32)> {
    pairs.sort_unstable_by_key(|(k, _)| *k);
    let mut merged: Vec<(K, f32)> = Vec::with_capacity(pairs.len());
    for (k, w) in pairs {
        match merged.last_mut() {
            Some((last, total)) if *last == k => *total += w,
            _ => merged.push((k, w)),
        }
    }
    merged
}

/// Weighted n-gram counts of a message by hash bucket, ascending and merged. Subject n-grams
/// count [`SUBJECT_WEIGHT`] times; bigrams do not cross from subject to detail.
pub fn hashed_counts(subject: &str, detail: &str) -> Vec<(u32, f32)> {
    let mut grams = Vec::with_capacity(2 * (subject.len() + detail.len()) / 3 + 4);
    for_each_gram(subject, detail, |b, w| grams.push((b, w)));
    sum_by_key(grams)
}

/// Sublinear term frequency: ten mentions of `噪音` are not ten times the evidence of one.
pub fn sublinear_tf(count: f32) -> f32 {
    1.0 + count.ln()
}

impl CategoryModel {
    /// A model over these selected buckets (ascending), with one IDF value per bucket, a row of
    /// `classes.len()` weights per bucket and one bias per class.
    pub fn new(
        classes: Vec<String>,
        buckets: Vec<u32>,
        idf: Vec<f32>,
        weights: Vec<f32>,
        bias: Vec<f32>,
    ) -> Self {
        let known = BucketSet::of(&buckets);
        CategoryModel {
            classes,
            buckets,
            idf,
            weights,
            bias,
            known,
        }
    }

    /// The selected hash buckets, ascending: feature `i` is `buckets()[i]`.
    pub fn buckets(&self) -> &[u32] {
        &self.buckets
    }

    /// The model's sparse input for a message: (feature index, L2-normalized TF-IDF), by
    /// ascending index. Only n-grams the model knows are kept and sorted (a message has a few
    /// hundred n-grams, the model knows a few thousand buckets), which is what makes this cheap.
    pub fn features(&self, subject: &str, detail: &str) -> Vec<(usize, f32)> {
        let mut known = Vec::with_capacity(64);
        for_each_gram(subject, detail, |b, w| {
            if let Some(i) = self.known.index(b, &self.buckets) {
                known.push((i, w));
            }
        });
        let mut feats = sum_by_key(known);
        for (i, v) in &mut feats {
            *v = sublinear_tf(*v) * self.idf[*i];
        }
        let norm = feats.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            for (_, v) in &mut feats {
                *v /= norm;
            }
        }
        feats
    }

    /// Most likely category, or `None` when the text has no known n-gram at all.
    pub fn predict(&self, subject: &str, detail: &str) -> Option<Prediction<'_>> {
        let feats = self.features(subject, detail);
        if feats.is_empty() {
            return None;
        }
        let n = self.classes.len();
        let mut scores = self.bias.clone();
        for (i, v) in feats {
            let row = &self.weights[i * n..(i + 1) * n];
            for (s, w) in scores.iter_mut().zip(row) {
                *s += v * w;
            }
        }
        let (best, max) =
            scores
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, (i, s)| if s > acc.1 { (i, s) } else { acc },
                );
        let total: f32 = scores.iter().map(|s| (s - max).exp()).sum();
        Some(Prediction {
            category: &self.classes[best],
            confidence: 1.0 / total,
        })
    }

    /// Serialize in the documented format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        let u32le = |out: &mut Vec<u8>, v: usize| {
            out.extend_from_slice(&u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes());
        };
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&HASH_BITS.to_le_bytes());
        out.extend_from_slice(&SUBJECT_WEIGHT.to_le_bytes());
        u32le(&mut out, self.classes.len());
        for c in &self.classes {
            u32le(&mut out, c.len());
            out.extend_from_slice(c.as_bytes());
        }
        u32le(&mut out, self.buckets.len());
        for b in &self.buckets {
            out.extend_from_slice(&b.to_le_bytes());
        }
        for v in self.idf.iter().chain(&self.weights).chain(&self.bias) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parse a model file, checking every length so a truncated or foreign file is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<CategoryModel, ModelError> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(MAGIC.len())? != MAGIC {
            return Err(ModelError("not a category model (bad magic)".into()));
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(ModelError(format!(
                "format version {version}, expected {VERSION}"
            )));
        }
        let bits = r.u32()?;
        let subject_weight = r.f32()?;
        if bits != HASH_BITS || subject_weight != SUBJECT_WEIGHT {
            return Err(ModelError(format!(
                "trained with {bits} hash bits and subject weight {subject_weight}, this build uses \
                 {HASH_BITS} and {SUBJECT_WEIGHT}: retrain"
            )));
        }
        let n_classes = r.u32()? as usize;
        if n_classes == 0 || n_classes > 1000 {
            return Err(ModelError(format!("{n_classes} classes")));
        }
        let mut classes = Vec::with_capacity(n_classes);
        for _ in 0..n_classes {
            let len = r.u32()? as usize;
            let name = std::str::from_utf8(r.take(len)?)
                .map_err(|_| ModelError("class name is not UTF-8".into()))?;
            classes.push(name.to_owned());
        }
        let k = r.u32()? as usize;
        let buckets = (0..k).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
        if buckets.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ModelError("buckets are not ascending".into()));
        }
        let idf = (0..k).map(|_| r.f32()).collect::<Result<Vec<_>, _>>()?;
        let weights = (0..k * n_classes)
            .map(|_| r.f32())
            .collect::<Result<Vec<_>, _>>()?;
        let bias = (0..n_classes)
            .map(|_| r.f32())
            .collect::<Result<Vec<_>, _>>()?;
        if r.pos != bytes.len() {
            return Err(ModelError("trailing bytes".into()));
        }
        Ok(CategoryModel::new(classes, buckets, idf, weights, bias))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| ModelError("truncated".into()))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, ModelError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn f32(&mut self) -> Result<f32, ModelError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(f32::from_le_bytes(b))
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The stratified held-out split: for each row `(id, label)`, whether it is held out. Within each
/// label, rows are ordered by a seeded hash of their id and the first [`HOLDOUT_SHARE`] are held
/// out, so the split depends neither on row order nor on a random generator's version. The
/// shipped model is trained on the other rows only, which keeps the held-out accuracy honest.
pub fn holdout_split(rows: &[(&str, &str)]) -> Vec<bool> {
    let mut labels: Vec<&str> = rows.iter().map(|(_, l)| *l).collect();
    labels.sort_unstable();
    labels.dedup();
    let mut held = vec![false; rows.len()];
    for label in labels {
        let mut members: Vec<(u64, usize)> = rows
            .iter()
            .enumerate()
            .filter(|(_, (_, l))| *l == label)
            .map(|(i, (id, _))| {
                let h = id
                    .bytes()
                    .fold(SPLIT_SEED, |h, b| splitmix(h ^ u64::from(b)));
                (h, i)
            })
            .collect();
        members.sort_unstable();
        let n = (members.len() as f64 * HOLDOUT_SHARE).round() as usize;
        for (_, i) in members.into_iter().take(n) {
            held[i] = true;
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rank lookup gives every bucket the index the binary search gave, and lists that are
    /// not strictly ascending are still searched.
    #[test]
    fn bucket_indices_are_the_searched_ones() {
        let model = shipped_model().expect("shipped model");
        assert!(model.known.rank.is_some());
        for b in 0..(1u32 << HASH_BITS) {
            assert_eq!(
                model.known.index(b, &model.buckets),
                model.buckets.binary_search(&b).ok(),
                "bucket {b}"
            );
        }
        let repeated = [3u32, 3, 9, 1 << HASH_BITS];
        let set = BucketSet::of(&repeated);
        assert!(set.rank.is_none());
        assert_eq!(set.index(9, &repeated), Some(2));
        assert_eq!(set.index(4, &repeated), None);
    }

    #[test]
    fn counts_merge_and_weight_the_subject() {
        let c = hashed_counts("噪音", "噪音 ABC 123");
        // 噪, 音, 噪音 from both parts: subject 2 + detail 1.
        assert_eq!(c.len(), 3);
        assert!(c.iter().all(|(_, w)| (*w - 3.0).abs() < 1e-6), "{c:?}");
        assert!(hashed_counts("", " 12 ab ").is_empty());
    }

    #[test]
    fn model_round_trips_and_rejects_damage() {
        let m = CategoryModel::new(
            vec!["甲".into(), "乙".into()],
            vec![1, 5],
            vec![1.0, 2.0],
            vec![0.5, -0.5, -1.0, 1.0],
            vec![0.0, 0.1],
        );
        let bytes = m.to_bytes();
        assert_eq!(CategoryModel::from_bytes(&bytes), Ok(m));
        for cut in [0, 8, 20, bytes.len() - 1] {
            assert!(CategoryModel::from_bytes(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(CategoryModel::from_bytes(&longer).is_err());
    }

    #[test]
    fn split_is_stratified_and_stable() {
        let rows: Vec<(String, &str)> = (0..100)
            .map(|i| (i.to_string(), if i % 4 == 0 { "a" } else { "b" }))
            .collect();
        let refs: Vec<(&str, &str)> = rows.iter().map(|(i, l)| (i.as_str(), *l)).collect();
        let held = holdout_split(&refs);
        let held_a = (0..100).filter(|i| i % 4 == 0 && held[*i]).count();
        assert_eq!((held.iter().filter(|h| **h).count(), held_a), (20, 5));
        let mut reversed = refs.clone();
        reversed.reverse();
        let mut again = holdout_split(&reversed);
        again.reverse();
        assert_eq!(held, again);
    }

    #[test]
    fn shipped_model_loads_and_classifies() {
        let m = shipped_model().expect("shipped model parses");
        assert_eq!(m.classes.len(), 7);
        let p = m
            .predict(
                "小区旁边工地夜间施工噪音扰民",
                "每天晚上十二点还在打桩，吵得睡不着",
            )
            .expect("prediction");
        assert!(m.classes.iter().any(|c| c == p.category));
        assert!(p.confidence > 0.0 && p.confidence <= 1.0);
        assert_eq!(m.predict("", "123 abc"), None);
    }
}
