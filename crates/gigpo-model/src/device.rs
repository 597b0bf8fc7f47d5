//! Choosing where tensors live.

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ModelError, Result};

pub use candle_core::Device;

/// Which device to run on. Read from `"cpu"`, `"cuda"`, `"cuda:N"` or `{cuda = N}`; written as
/// `"cpu"` or `{cuda = N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
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

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Table { cuda: usize },
        }
        match Form::deserialize(d) {
            Ok(Form::Text(s)) => s
                .parse()
                .map_err(|_| D::Error::custom(format!("{s:?}: expected cpu, cuda or cuda:N"))),
            Ok(Form::Table { cuda }) => Ok(DeviceChoice::Cuda(cuda)),
            Err(_) => Err(D::Error::custom("expected \"cpu\", \"cuda\" or \"cuda:N\"")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct Doc {
        device: DeviceChoice,
    }

    fn read(text: &str) -> std::result::Result<DeviceChoice, String> {
        serde_json::from_str::<Doc>(text)
            .map(|d| d.device)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_names_and_the_written_form() {
        assert_eq!(read(r#"{"device":"cpu"}"#), Ok(DeviceChoice::Cpu));
        assert_eq!(read(r#"{"device":"cuda"}"#), Ok(DeviceChoice::Cuda(0)));
        assert_eq!(read(r#"{"device":"cuda:1"}"#), Ok(DeviceChoice::Cuda(1)));
        assert_eq!(read(r#"{"device":{"cuda":2}}"#), Ok(DeviceChoice::Cuda(2)));
        let written = serde_json::to_string(&Doc {
            device: DeviceChoice::Cuda(3),
        })
        .unwrap();
        assert_eq!(read(&written), Ok(DeviceChoice::Cuda(3)));
        let e = read(r#"{"device":"gpu"}"#).unwrap_err();
        assert!(e.contains("\"gpu\": expected cpu, cuda or cuda:N"), "{e}");
        let e = read(r#"{"device":7}"#).unwrap_err();
        assert!(e.contains("expected \"cpu\""), "{e}");
    }
}
