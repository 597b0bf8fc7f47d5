//! Choosing where tensors live.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

pub use candle_core::Device;

/// Which device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// The CPU (always available; f32).
    #[default]
    Cpu,
    /// CUDA GPU with this ordinal; needs the crate feature `cuda`.
    Cuda(usize),
}

impl DeviceChoice {
    /// Opens the device. `Cuda` fails with a clear error when the crate was built without the
    /// `cuda` feature or no GPU is present.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(i) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(ModelError::arg(
                        "device",
                        "CUDA requested but this build has no CUDA support (build with --features cuda)",
                    ));
                }
                Ok(Device::new_cuda(i)?)
            }
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = ModelError;

    /// Parses `cpu`, `cuda` (ordinal 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    ModelError::arg("device", format!("{s:?}: expected cpu, cuda or cuda:N"))
                }),
        }
    }
}
