//! A GGUF header reader of our own, run before llama.cpp sees the file.
//!
//! llama.cpp aborts or logs cryptic errors on some malformed files; this module reads the
//! container (magic, version, metadata, tensor directory) with every length checked against the
//! file size, so a file that is not GGUF, is truncated or is corrupt is refused with a message
//! that says which. It also reports the architecture, the trained context length and the
//! quantization, which is checked against what the operator asked for.
//!
//! Format reference: ggml's `docs/gguf.md` (little-endian, versions 2 and 3).

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::str::FromStr;

/// `GGUF` read as a little-endian u32.
const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the tensor data section when `general.alignment` is absent (gguf.md).
const DEFAULT_ALIGNMENT: u64 = 32;
/// Upper bounds that no real model reaches; they keep a corrupt count from allocating gigabytes.
const MAX_TENSORS: u64 = 1 << 20;
const MAX_METADATA: u64 = 1 << 20;
const MAX_DIMS: u32 = 4;

/// Why a file was refused.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("failed to open model file {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read model file")]
    Io(#[source] std::io::Error),
    #[error("model file is not GGUF: it starts with {found:?}, a GGUF file starts with \"GGUF\"")]
    NotGguf { found: String },
    #[error("model file is truncated: {what} ends at byte {needed} but the file has {size} bytes")]
    Truncated {
        what: String,
        needed: u64,
        size: u64,
    },
    #[error("model file is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported GGUF version {0}: the runtime reads versions 2 and 3")]
    UnsupportedVersion(u32),
    #[error("quantization mismatch: asked for {expected}, the file holds {found}")]
    QuantizationMismatch { expected: String, found: String },
    #[error(
        "unknown quantization {0:?}: use Auto or a GGUF type such as Q4_0, Q4_1, Q4_K_M, Q8_0, F16"
    )]
    UnknownQuantization(String),
}

impl GgufError {
    /// A bounded label for metrics and the reason shown by the operator.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Open { .. } | Self::Io(_) => "io",
            Self::NotGguf { .. } => "not_gguf",
            Self::Truncated { .. } => "truncated",
            Self::Corrupt(_) => "corrupt",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::QuantizationMismatch { .. } => "quantization_mismatch",
            Self::UnknownQuantization(_) => "unknown_quantization",
        }
    }
}

/// A scalar metadata value; arrays are skipped except for their length.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Uint(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array { len: u64 },
}

impl MetaValue {
    fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Uint(v) => Some(*v),
            Self::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub offset: u64,
    pub size: u64,
}

/// What the runtime needs to know about a GGUF file before loading it.
#[derive(Debug, Clone)]
pub struct GgufSummary {
    pub version: u32,
    pub architecture: String,
    pub name: Option<String>,
    /// `<arch>.context_length`: the context the model was trained with.
    pub context_length: Option<u64>,
    /// `general.file_type` (llama.cpp's `llama_ftype`), when present.
    pub file_type: Option<u32>,
    pub tensors: Vec<TensorInfo>,
    pub metadata: HashMap<String, MetaValue>,
    pub has_chat_template: bool,
    pub file_size: u64,
}

impl GgufSummary {
    /// The quantization name of the file: from `general.file_type` when present, else the tensor
    /// type holding the most bytes.
    pub fn quantization(&self) -> String {
        if let Some(name) = self.file_type.and_then(ftype_name) {
            return name.to_string();
        }
        let mut bytes: HashMap<u32, u64> = HashMap::new();
        for t in &self.tensors {
            *bytes.entry(t.ggml_type).or_default() += t.size;
        }
        bytes
            .into_iter()
            .max_by_key(|(_, b)| *b)
            .and_then(|(ty, _)| ggml_type(ty).map(|t| t.0.to_string()))
            .unwrap_or_else(|| "unknown".to_string())
    }

    /// Total bytes of tensor data.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.size).sum()
    }
}

/// The quantization the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quantization {
    /// Accept whatever the file holds.
    Auto,
    /// A GGUF file type name such as `Q4_1`.
    Named(String),
}

impl FromStr for Quantization {
    type Err = GgufError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        let upper = s.to_ascii_uppercase();
        let known = FTYPES.iter().any(|(_, n)| *n == upper)
            || GGML_TYPES.iter().any(|(_, n, ..)| *n == upper);
        if known {
            Ok(Self::Named(upper))
        } else {
            Err(GgufError::UnknownQuantization(s.to_string()))
        }
    }
}

impl fmt::Display for Quantization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("Auto"),
            Self::Named(n) => f.write_str(n),
        }
    }
}

/// Checks the file's quantization against the requested one.
pub fn check_quantization(summary: &GgufSummary, expected: &Quantization) -> Result<(), GgufError> {
    match expected {
        Quantization::Auto => Ok(()),
        Quantization::Named(name) => {
            let found = summary.quantization();
            if &found == name {
                Ok(())
            } else {
                Err(GgufError::QuantizationMismatch {
                    expected: name.clone(),
                    found,
                })
            }
        }
    }
}

/// llama.cpp's `llama_ftype` values (include/llama.h) and their usual names.
const FTYPES: &[(u32, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (7, "Q8_0"),
    (8, "Q5_0"),
    (9, "Q5_1"),
    (10, "Q2_K"),
    (11, "Q3_K_S"),
    (12, "Q3_K_M"),
    (13, "Q3_K_L"),
    (14, "Q4_K_S"),
    (15, "Q4_K_M"),
    (16, "Q5_K_S"),
    (17, "Q5_K_M"),
    (18, "Q6_K"),
    (19, "IQ2_XXS"),
    (20, "IQ2_XS"),
    (21, "Q2_K_S"),
    (22, "IQ3_XS"),
    (23, "IQ3_XXS"),
    (24, "IQ1_S"),
    (25, "IQ4_NL"),
    (26, "IQ3_S"),
    (27, "IQ3_M"),
    (28, "IQ2_S"),
    (29, "IQ2_M"),
    (30, "IQ4_XS"),
    (31, "IQ1_M"),
    (32, "BF16"),
    (36, "TQ1_0"),
    (37, "TQ2_0"),
    (38, "MXFP4_MOE"),
];

/// The name of a `general.file_type` value, with the "guessed" flag (1024) cleared.
pub fn ftype_name(ftype: u32) -> Option<&'static str> {
    let ftype = ftype & !1024;
    FTYPES.iter().find(|(v, _)| *v == ftype).map(|(_, n)| *n)
}

/// ggml tensor types: (id, name, elements per block, bytes per block), from ggml.c's type_traits.
const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

fn ggml_type(id: u32) -> Option<(&'static str, u64, u64)> {
    GGML_TYPES
        .iter()
        .find(|(v, ..)| *v == id)
        .map(|(_, n, b, s)| (*n, *b, *s))
}

/// A reader that counts its position and refuses to read past the file size.
struct Cursor<R> {
    inner: R,
    pos: u64,
    size: u64,
}

impl<R: Read> Cursor<R> {
    fn need(&self, n: u64, what: &str) -> Result<(), GgufError> {
        let end = self.pos.saturating_add(n);
        if end > self.size {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                needed: end,
                size: self.size,
            });
        }
        Ok(())
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, GgufError> {
        self.need(n, what)?;
        let len =
            usize::try_from(n).map_err(|_| GgufError::Corrupt(format!("{what} is too long")))?;
        let mut buf = vec![0u8; len];
        self.inner.read_exact(&mut buf).map_err(GgufError::Io)?;
        self.pos += n;
        Ok(buf)
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), GgufError> {
        self.need(n, what)?;
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())
            .map_err(GgufError::Io)?;
        if copied != n {
            return Err(GgufError::Io(std::io::Error::from(
                std::io::ErrorKind::UnexpectedEof,
            )));
        }
        self.pos += n;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        self.need(N as u64, what)?;
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(GgufError::Io)?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let bytes = self.bytes(len, what)?;
        String::from_utf8(bytes)
            .map_err(|_| GgufError::Corrupt(format!("{what} is not valid UTF-8")))
    }

    fn skip_string(&mut self, what: &str) -> Result<(), GgufError> {
        let len = self.u64(what)?;
        self.skip(len, what)
    }

    /// Reads one value of `ty`; arrays are walked (to check their bounds) but not kept.
    fn value(&mut self, ty: u32, key: &str) -> Result<MetaValue, GgufError> {
        let what = format!("metadata value {key:?}");
        Ok(match ty {
            0 => MetaValue::Uint(u64::from(self.array::<1>(&what)?[0])),
            1 => MetaValue::Int(i64::from(i8::from_le_bytes(self.array(&what)?))),
            2 => MetaValue::Uint(u64::from(u16::from_le_bytes(self.array(&what)?))),
            3 => MetaValue::Int(i64::from(i16::from_le_bytes(self.array(&what)?))),
            4 => MetaValue::Uint(u64::from(self.u32(&what)?)),
            5 => MetaValue::Int(i64::from(i32::from_le_bytes(self.array(&what)?))),
            6 => MetaValue::Float(f64::from(f32::from_le_bytes(self.array(&what)?))),
            7 => match self.array::<1>(&what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => {
                    return Err(GgufError::Corrupt(format!(
                        "{what} is a bool with byte {b}"
                    )));
                }
            },
            8 => MetaValue::Str(self.string(&what)?),
            9 => {
                let elem = self.u32(&what)?;
                let len = self.u64(&what)?;
                match elem {
                    8 => {
                        for _ in 0..len {
                            self.skip_string(&what)?;
                        }
                    }
                    9 => return Err(GgufError::Corrupt(format!("{what} is a nested array"))),
                    _ => {
                        let width = scalar_width(elem).ok_or_else(|| {
                            GgufError::Corrupt(format!("{what} has unknown element type {elem}"))
                        })?;
                        self.skip(len.saturating_mul(width), &what)?;
                    }
                }
                MetaValue::Array { len }
            }
            10 => MetaValue::Uint(self.u64(&what)?),
            11 => MetaValue::Int(i64::from_le_bytes(self.array(&what)?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.array(&what)?)),
            other => {
                return Err(GgufError::Corrupt(format!(
                    "{what} has unknown type {other}"
                )));
            }
        })
    }
}

fn scalar_width(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// Reads and checks the GGUF container at `path`.
pub fn read_summary(path: &Path) -> Result<GgufSummary, GgufError> {
    let file = File::open(path).map_err(|source| GgufError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let size = file.metadata().map_err(GgufError::Io)?.len();
    parse(BufReader::with_capacity(1 << 16, file), size)
}

/// Parses a GGUF container of `size` bytes from `reader`.
pub fn parse<R: Read>(reader: R, size: u64) -> Result<GgufSummary, GgufError> {
    let mut c = Cursor {
        inner: reader,
        pos: 0,
        size,
    };
    if size < 4 {
        let mut found = vec![0u8; usize::try_from(size).unwrap_or(0)];
        c.inner.read_exact(&mut found).map_err(GgufError::Io)?;
        return Err(GgufError::NotGguf {
            found: String::from_utf8_lossy(&found).into_owned(),
        });
    }
    let magic: [u8; 4] = c.array("magic")?;
    if magic != MAGIC {
        return Err(GgufError::NotGguf {
            found: String::from_utf8_lossy(&magic).into_owned(),
        });
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let tensor_count = c.u64("tensor count")?;
    let kv_count = c.u64("metadata count")?;
    if tensor_count > MAX_TENSORS {
        return Err(GgufError::Corrupt(format!(
            "tensor count {tensor_count} exceeds {MAX_TENSORS}"
        )));
    }
    if kv_count > MAX_METADATA {
        return Err(GgufError::Corrupt(format!(
            "metadata count {kv_count} exceeds {MAX_METADATA}"
        )));
    }

    let mut metadata = HashMap::new();
    for i in 0..kv_count {
        let key = c.string(&format!("metadata key #{i}"))?;
        let ty = c.u32(&format!("type of metadata key {key:?}"))?;
        let value = c.value(ty, &key)?;
        metadata.insert(key, value);
    }

    let mut tensors = Vec::with_capacity(usize::try_from(tensor_count).unwrap_or(0));
    for i in 0..tensor_count {
        let name = c.string(&format!("tensor name #{i}"))?;
        let what = format!("tensor {name:?}");
        let n_dims = c.u32(&what)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::Corrupt(format!(
                "{what} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&what)?);
        }
        let ggml_type_id = c.u32(&what)?;
        let offset = c.u64(&what)?;
        let (_, block, bytes) = ggml_type(ggml_type_id).ok_or_else(|| {
            GgufError::Corrupt(format!("{what} has unknown tensor type {ggml_type_id}"))
        })?;
        let elements = dims
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(*d))
            .ok_or_else(|| {
                GgufError::Corrupt(format!("{what} has an element count that overflows"))
            })?;
        if dims.first().is_some_and(|d| d % block != 0) {
            return Err(GgufError::Corrupt(format!(
                "{what} has a row of {} elements, not a multiple of the block size {block}",
                dims[0]
            )));
        }
        let size = (elements / block)
            .checked_mul(bytes)
            .ok_or_else(|| GgufError::Corrupt(format!("{what} has a size that overflows")))?;
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type: ggml_type_id,
            offset,
            size,
        });
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() => a,
            _ => {
                return Err(GgufError::Corrupt(format!(
                    "general.alignment {v:?} is not a power of two"
                )));
            }
        },
    };
    let data_start = c.pos.div_ceil(alignment) * alignment;
    let mut expected_offset = 0u64;
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::Corrupt(format!(
                "tensor {:?} starts at offset {}, not a multiple of the alignment {alignment}",
                t.name, t.offset
            )));
        }
        if t.offset < expected_offset {
            return Err(GgufError::Corrupt(format!(
                "tensor {:?} overlaps the tensor before it",
                t.name
            )));
        }
        let end = data_start
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.size))
            .ok_or_else(|| {
                GgufError::Corrupt(format!("tensor {:?} has an offset that overflows", t.name))
            })?;
        if end > size {
            return Err(GgufError::Truncated {
                what: format!("data of tensor {:?}", t.name),
                needed: end,
                size,
            });
        }
        expected_offset = (t.offset + t.size).div_ceil(alignment) * alignment;
    }

    let architecture = match metadata.get("general.architecture") {
        Some(MetaValue::Str(a)) if !a.is_empty() => a.clone(),
        Some(_) => {
            return Err(GgufError::Corrupt(
                "general.architecture is not a string".into(),
            ));
        }
        None => return Err(GgufError::Corrupt("general.architecture is missing".into())),
    };
    let context_length = metadata
        .get(&format!("{architecture}.context_length"))
        .and_then(MetaValue::as_u64);
    let file_type = metadata
        .get("general.file_type")
        .and_then(MetaValue::as_u64)
        .and_then(|v| u32::try_from(v).ok());
    let name = match metadata.get("general.name") {
        Some(MetaValue::Str(n)) => Some(n.clone()),
        _ => None,
    };
    let has_chat_template = matches!(
        metadata.get("tokenizer.chat_template"),
        Some(MetaValue::Str(_))
    );
    Ok(GgufSummary {
        version,
        architecture,
        name,
        context_length,
        file_type,
        tensors,
        metadata,
        has_chat_template,
        file_size: size,
    })
}

/// Writes small GGUF files; used by tests to build edge cases without a real model.
pub mod write {
    /// A metadata value to write.
    #[derive(Debug, Clone)]
    pub enum Value {
        U32(u32),
        U64(u64),
        Str(String),
        StrArray(Vec<String>),
        F32Array(Vec<f32>),
        I32Array(Vec<i32>),
    }

    /// A tensor to write: name, dims, ggml type id and its raw bytes.
    #[derive(Debug, Clone)]
    pub struct Tensor {
        pub name: String,
        pub dims: Vec<u64>,
        pub ggml_type: u32,
        pub data: Vec<u8>,
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// Serialises a GGUF v3 file with 32-byte alignment.
    pub fn gguf(metadata: &[(&str, Value)], tensors: &[Tensor]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata {
            string(&mut out, key);
            match value {
                Value::U32(v) => {
                    out.extend_from_slice(&4u32.to_le_bytes());
                    out.extend_from_slice(&v.to_le_bytes());
                }
                Value::U64(v) => {
                    out.extend_from_slice(&10u32.to_le_bytes());
                    out.extend_from_slice(&v.to_le_bytes());
                }
                Value::Str(s) => {
                    out.extend_from_slice(&8u32.to_le_bytes());
                    string(&mut out, s);
                }
                Value::StrArray(items) => {
                    out.extend_from_slice(&9u32.to_le_bytes());
                    out.extend_from_slice(&8u32.to_le_bytes());
                    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                    for s in items {
                        string(&mut out, s);
                    }
                }
                Value::F32Array(items) => {
                    out.extend_from_slice(&9u32.to_le_bytes());
                    out.extend_from_slice(&6u32.to_le_bytes());
                    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                    for v in items {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
                Value::I32Array(items) => {
                    out.extend_from_slice(&9u32.to_le_bytes());
                    out.extend_from_slice(&5u32.to_le_bytes());
                    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                    for v in items {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
        let mut offset = 0u64;
        for t in tensors {
            string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + t.data.len() as u64).div_ceil(32) * 32;
        }
        for t in tensors {
            while out.len() % 32 != 0 {
                out.push(0);
            }
            out.extend_from_slice(&t.data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::write::{Tensor, Value, gguf};
    use super::*;

    fn sample() -> Vec<u8> {
        gguf(
            &[
                ("general.architecture", Value::Str("llama".into())),
                ("llama.context_length", Value::U32(2048)),
                ("general.file_type", Value::U32(3)),
                (
                    "tokenizer.ggml.tokens",
                    Value::StrArray(vec!["a".into(), "b".into()]),
                ),
            ],
            &[
                Tensor {
                    name: "a".into(),
                    dims: vec![32, 2],
                    ggml_type: 3,
                    data: vec![0; 40],
                },
                Tensor {
                    name: "b".into(),
                    dims: vec![4],
                    ggml_type: 0,
                    data: vec![0; 16],
                },
            ],
        )
    }

    fn parse_bytes(b: &[u8]) -> Result<GgufSummary, GgufError> {
        parse(b, b.len() as u64)
    }

    #[test]
    fn reads_a_valid_file() {
        let s = parse_bytes(&sample()).unwrap();
        assert_eq!(s.architecture, "llama");
        assert_eq!(s.context_length, Some(2048));
        assert_eq!(s.quantization(), "Q4_1");
        assert_eq!(s.tensors.len(), 2);
        assert_eq!(s.tensor_bytes(), 56);
    }

    #[test]
    fn refuses_other_files() {
        let err = parse_bytes(b"PK\x03\x04 a zip file").unwrap_err();
        assert!(matches!(err, GgufError::NotGguf { .. }), "{err}");
        assert!(err.to_string().contains("not GGUF"));
        assert!(matches!(
            parse_bytes(b"GG").unwrap_err(),
            GgufError::NotGguf { .. }
        ));
    }

    #[test]
    fn refuses_every_truncation() {
        let full = sample();
        for len in 4..full.len() {
            let err = parse_bytes(&full[..len]).unwrap_err();
            assert!(
                matches!(err, GgufError::Truncated { .. }),
                "cut at {len}: {err}"
            );
        }
    }

    #[test]
    fn refuses_corrupt_headers() {
        let mut bad_version = sample();
        bad_version[4] = 9;
        assert!(matches!(
            parse_bytes(&bad_version).unwrap_err(),
            GgufError::UnsupportedVersion(9)
        ));

        let mut huge_count = sample();
        huge_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = parse_bytes(&huge_count).unwrap_err();
        assert!(matches!(err, GgufError::Corrupt(_)), "{err}");

        let mut bad_type = sample();
        // The first metadata value type sits after the header (24 bytes) and the key.
        let at = 24 + 8 + "general.architecture".len();
        bad_type[at..at + 4].copy_from_slice(&77u32.to_le_bytes());
        let err = parse_bytes(&bad_type).unwrap_err();
        assert!(err.to_string().contains("unknown type 77"), "{err}");
    }

    #[test]
    fn checks_quantization() {
        let s = parse_bytes(&sample()).unwrap();
        check_quantization(&s, &"auto".parse().unwrap()).unwrap();
        check_quantization(&s, &"q4_1".parse().unwrap()).unwrap();
        let err = check_quantization(&s, &"Q4_0".parse().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "quantization mismatch: asked for Q4_0, the file holds Q4_1"
        );
        assert!("Q9_Z".parse::<Quantization>().is_err());
    }
}
