//! The error types of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading, running, training or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed (shape mismatch, device error, ...).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// A file the model directory must contain is not there.
    #[error("missing file {}: {what}", path.display())]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
        /// What the file is for.
        what: &'static str,
    },
    /// Reading or writing a file failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "write", "rename", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or does not have the expected fields.
    #[error("invalid JSON in {}: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong, including line and column when known.
        message: String,
    },
    /// A configuration value is invalid or unsupported.
    #[error("invalid model configuration: {field}: {message}")]
    Config {
        /// The name of the offending field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A weight the architecture needs is absent from the checkpoint.
    #[error("weight {name} not found in {}", path.display())]
    MissingWeight {
        /// The Hugging Face tensor name.
        name: String,
        /// The checkpoint directory or file.
        path: PathBuf,
    },
    /// A weight holds NaN or infinite values.
    #[error("weight {name} in {} holds NaN or infinite values", path.display())]
    NonFiniteWeight {
        /// The tensor name.
        name: String,
        /// The checkpoint directory or file.
        path: PathBuf,
    },
    /// A weight has an unexpected shape.
    #[error("weight {name} has shape {actual:?}, expected {expected:?}")]
    WeightShape {
        /// The Hugging Face tensor name.
        name: String,
        /// Shape found in the file.
        actual: Vec<usize>,
        /// Shape the configuration implies.
        expected: Vec<usize>,
    },
    /// The tokenizer failed or its files are invalid.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// The caller passed arguments that do not fit together.
    #[error("invalid argument {name}: {message}")]
    Argument {
        /// The argument (or field) that is wrong.
        name: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A GGUF file is not one, is truncated, or lacks or misstates a field the model needs.
    #[error("GGUF file {}: {message}", path.display())]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong: the metadata field or tensor, and why.
        message: String,
    },
    /// A CUDA device was asked for and cannot be used.
    #[error(transparent)]
    NoCuda(#[from] CudaUnavailable),
    /// A checkpoint (optimizer state, adapter) does not match the model it is loaded into.
    #[error("checkpoint {} does not match: {message}", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What differs.
        message: String,
    },
}

/// Why a CUDA device cannot be used. Every message starts with "no CUDA device".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CudaUnavailable {
    /// The program was built without the `cuda` feature.
    #[error("no CUDA device: this build has no CUDA support (build it with scripts/build-cuda.sh or --features cuda)")]
    NotBuilt,
    /// The CUDA driver library is not installed.
    #[error("no CUDA device: the CUDA driver library (libcuda.so.1) was not found")]
    NoDriver,
    /// The driver is there but reports no GPU (or failed to start).
    #[error("no CUDA device: the CUDA driver reports none ({0})")]
    NoDevice(String),
    /// The requested ordinal is beyond the GPUs the driver reports.
    #[error("no CUDA device {ordinal}: the CUDA driver reports {count}")]
    NoOrdinal {
        /// The ordinal asked for.
        ordinal: usize,
        /// How many devices there are.
        count: usize,
    },
    /// The driver is older than the CUDA version this program was built with.
    #[error(
        "no CUDA device: the CUDA driver supports CUDA {}.{}, this build needs {}.{} or newer",
        driver / 1000, driver % 1000 / 10, needed / 1000, needed % 1000 / 10
    )]
    DriverTooOld {
        /// The driver's CUDA version (major · 1000 + minor · 10).
        driver: i32,
        /// The CUDA version of the build.
        needed: i32,
    },
    /// A CUDA library the backend loads (cuBLAS, cuRAND) is not found.
    #[error(
        "no CUDA device: the CUDA library {0} was not found (add its directory to LD_LIBRARY_PATH)"
    )]
    MissingLibrary(String),
}

/// Result alias used throughout this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ModelError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn arg(name: &'static str, message: impl Into<String>) -> Self {
        ModelError::Argument {
            name,
            message: message.into(),
        }
    }

    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        ModelError::Config {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<crate::atomic::WriteError> for ModelError {
    fn from(e: crate::atomic::WriteError) -> Self {
        ModelError::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    }
}
