//! The trainer's error type.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, training, evaluating or plotting.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value that is out of range or inconsistent.
    #[error("config: {field}: {message}")]
    Config { field: String, message: String },
    /// A configuration file that could not be parsed.
    #[error("config file {path}: {message}")]
    ConfigFile { path: PathBuf, message: String },
    /// An episode whose longest sequence does not fit the model's context.
    #[error(
        "context: {sequence} needs {needed} tokens, the model's context holds {context}: {fix}"
    )]
    Context {
        /// Which sequence (layout and turns).
        sequence: String,
        /// Tokens it needs.
        needed: usize,
        /// Tokens the model's context holds.
        context: usize,
        /// The fields to change.
        fix: String,
    },
    /// A file or directory operation failed.
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    /// Writing a file or directory failed or was refused.
    #[error(transparent)]
    Write(#[from] gigpo_model::atomic::WriteError),
    /// A fresh run was asked to start in a directory that holds an earlier run.
    #[error(
        "run directory {path} already holds a run ({found}); continue it with --resume {path}, \
         start over with --force (removes those files), or choose another --run-dir"
    )]
    RunDirInUse { path: PathBuf, found: String },
    /// The advantage computation rejected the batch.
    #[error("advantages: {0}")]
    Advantage(gigpo_core::AdvantageError),
    /// An environment or the environment pool failed.
    #[error("environment: {0}")]
    Env(String),
    /// An inference server of the vLLM backend that is down, keeps failing, or does not
    /// serve what it should.
    #[error("vLLM endpoint {endpoint}: {message}")]
    Endpoint { endpoint: String, message: String },
    /// The model failed (loading, sampling, scoring, optimizer).
    #[error("model: {0}")]
    Model(gigpo_model::ModelError),
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Tensor(candle_core::Error),
    /// A checkpoint that is missing or does not match the run.
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// Drawing a plot failed.
    #[error("plot: {0}")]
    Plot(String),
    /// A metrics file that could not be read.
    #[error("metrics {path}: {message}")]
    Metrics { path: PathBuf, message: String },
}

impl TrainError {
    /// A configuration error for `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        Self::Io {
            path: path.into(),
            message: err.to_string(),
        }
    }
}

// The wrapped errors are shown in the message and not also exposed as a source, so a
// printed error chain names each cause once.
impl From<gigpo_core::AdvantageError> for TrainError {
    fn from(e: gigpo_core::AdvantageError) -> Self {
        Self::Advantage(e)
    }
}

impl From<gigpo_model::ModelError> for TrainError {
    fn from(e: gigpo_model::ModelError) -> Self {
        Self::Model(e)
    }
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        Self::Tensor(e)
    }
}

impl From<gigpo_env::EnvError> for TrainError {
    fn from(e: gigpo_env::EnvError) -> Self {
        Self::Env(e.to_string())
    }
}

impl From<gigpo_env::pool::PoolError> for TrainError {
    fn from(e: gigpo_env::pool::PoolError) -> Self {
        Self::Env(e.to_string())
    }
}

/// Result with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
