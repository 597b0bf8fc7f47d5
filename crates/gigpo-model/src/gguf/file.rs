//! An open GGUF file: its header, and typed access to its metadata and tensor list.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};

use crate::config::Architecture;
use crate::error::{ModelError, Result};

/// The four bytes every GGUF file starts with.
const MAGIC: &[u8; 4] = b"GGUF";

/// An open GGUF file: its parsed header and a reader for the tensor data.
pub(crate) struct GgufFile {
    pub(super) path: PathBuf,
    pub(super) content: Content,
    pub(super) reader: BufReader<File>,
    pub(super) arch: Architecture,
}

impl GgufFile {
    /// Opens `path` and parses its header; errors when it is not a GGUF file or is truncated.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| ModelError::io("open", path, e))?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut file, &mut magic).map_err(|e| ModelError::io("read", path, e))?;
        if n < 4 || &magic != MAGIC {
            return Err(gguf_err(
                path,
                format!(
                    "not a GGUF file (starts with {:?}, expected \"GGUF\")",
                    &magic[..n]
                ),
            ));
        }
        let mut reader =
            BufReader::new(File::open(path).map_err(|e| ModelError::io("open", path, e))?);
        let content = Content::read(&mut reader).map_err(|e| {
            gguf_err(
                path,
                format!("unreadable header (truncated?): {}", candle_message(&e)),
            )
        })?;
        let mut g = GgufFile {
            path: path.to_path_buf(),
            content,
            reader,
            arch: Architecture::Llama,
        };
        g.arch = match g.string("general.architecture")?.as_str() {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            other => {
                return Err(g.field_err(
                    "general.architecture",
                    format!("{other:?} unsupported; supported: llama, qwen2"),
                ))
            }
        };
        Ok(g)
    }

    pub(super) fn field_err(&self, key: &str, message: impl std::fmt::Display) -> ModelError {
        gguf_err(&self.path, format!("metadata {key}: {message}"))
    }

    pub(super) fn value(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| self.field_err(key, "missing"))
    }

    pub(super) fn string(&self, key: &str) -> Result<String> {
        match self.value(key)? {
            Value::String(s) => Ok(s.clone()),
            v => Err(self.field_err(key, format!("expected a string, found {v:?}"))),
        }
    }

    pub(super) fn opt_string(&self, key: &str) -> Result<Option<String>> {
        self.content
            .metadata
            .contains_key(key)
            .then(|| self.string(key))
            .transpose()
    }

    pub(super) fn uint(&self, key: &str) -> Result<usize> {
        let v = self.value(key)?;
        as_i64(v)
            .filter(|x| *x >= 0)
            .map(|x| x as usize)
            .ok_or_else(|| {
                self.field_err(key, format!("expected an unsigned integer, found {v:?}"))
            })
    }

    pub(super) fn opt_uint(&self, key: &str) -> Result<Option<usize>> {
        self.content
            .metadata
            .contains_key(key)
            .then(|| self.uint(key))
            .transpose()
    }

    pub(super) fn opt_float(&self, key: &str) -> Result<Option<f64>> {
        let Some(v) = self.content.metadata.get(key) else {
            return Ok(None);
        };
        match v {
            // The shortest decimal that rounds to the f32 (1e-6, not 9.99999997e-7), as
            // config.json would spell it.
            Value::F32(x) => Ok(Some(x.to_string().parse().unwrap_or(*x as f64))),
            Value::F64(x) => Ok(Some(*x)),
            v => Err(self.field_err(key, format!("expected a number, found {v:?}"))),
        }
    }

    pub(super) fn strings(&self, key: &str) -> Result<Vec<String>> {
        let Value::Array(items) = self.value(key)? else {
            return Err(self.field_err(key, "expected an array of strings"));
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                v => Err(self.field_err(key, format!("expected strings, found {v:?}"))),
            })
            .collect()
    }

    pub(super) fn ints(&self, key: &str) -> Result<Vec<i64>> {
        let Value::Array(items) = self.value(key)? else {
            return Err(self.field_err(key, "expected an array of integers"));
        };
        items
            .iter()
            .map(|v| as_i64(v).ok_or_else(|| self.field_err(key, "expected integers")))
            .collect()
    }

    /// `{arch}.{suffix}`, e.g. `llama.block_count`.
    pub(super) fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch.model_type())
    }

    pub(super) fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    pub(super) fn tensor_dims(&self, name: &str) -> Result<Vec<usize>> {
        self.content
            .tensor_infos
            .get(name)
            .map(|t| t.shape.dims().to_vec())
            .ok_or_else(|| ModelError::MissingWeight {
                name: name.to_string(),
                path: self.path.clone(),
            })
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::U8(x) => Some(*x as i64),
        Value::I8(x) => Some(*x as i64),
        Value::U16(x) => Some(*x as i64),
        Value::I16(x) => Some(*x as i64),
        Value::U32(x) => Some(*x as i64),
        Value::I32(x) => Some(*x as i64),
        Value::U64(x) => i64::try_from(*x).ok(),
        Value::I64(x) => Some(*x),
        _ => None,
    }
}

/// Reads until `buf` is full or the file ends; returns the number of bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// An error about the GGUF file `path`.
pub(crate) fn gguf_err(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Gguf {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The message of a candle error without the backtrace candle appends when
/// `RUST_BACKTRACE` is set.
pub(crate) fn candle_message(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}
