//! Choosing where tensors live.

use serde::{Deserialize, Serialize};

use crate::error::{CudaUnavailable, Result};

pub use candle_core::Device;

/// Which device to run on. In configuration files: `"cpu"`, `"auto"`, `"cuda"`, `"cuda:N"` or
/// `{ cuda = N }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "DeviceRepr")]
pub enum DeviceChoice {
    /// The CPU (always available; f32).
    #[default]
    Cpu,
    /// CUDA GPU with this ordinal; needs a build with the crate feature `cuda`.
    Cuda(usize),
    /// CUDA GPU 0 when one can be used, else the CPU.
    Auto,
}

/// A [`DeviceChoice`] checked against the machine: what [`ResolvedDevice::open`] opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedDevice {
    /// The CPU, as asked.
    Cpu,
    /// This CUDA device, checked to be usable.
    Cuda(usize),
    /// The CPU, because `auto` found no usable CUDA device; says why.
    CpuFallback(CudaUnavailable),
}

impl ResolvedDevice {
    /// Opens the device.
    pub fn open(&self) -> Result<Device> {
        match self {
            ResolvedDevice::Cpu | ResolvedDevice::CpuFallback(_) => Ok(Device::Cpu),
            ResolvedDevice::Cuda(i) => Ok(Device::new_cuda(*i)?),
        }
    }
}

impl DeviceChoice {
    /// Checks the choice against the machine without opening anything: `cuda` fails with
    /// [`CudaUnavailable`] (a [`crate::ModelError::NoCuda`]) when its device cannot be used,
    /// `auto` falls back to the CPU and says why.
    pub fn resolve(self) -> Result<ResolvedDevice> {
        self.resolve_with(probe_cuda)
    }

    /// Opens the device ([`DeviceChoice::resolve`], then [`ResolvedDevice::open`]).
    pub fn open(self) -> Result<Device> {
        self.resolve()?.open()
    }

    fn resolve_with(
        self,
        probe: impl Fn(usize) -> std::result::Result<(), CudaUnavailable>,
    ) -> Result<ResolvedDevice> {
        Ok(match self {
            DeviceChoice::Cpu => ResolvedDevice::Cpu,
            DeviceChoice::Cuda(i) => {
                probe(i)?;
                ResolvedDevice::Cuda(i)
            }
            DeviceChoice::Auto => match probe(0) {
                Ok(()) => ResolvedDevice::Cuda(0),
                Err(why) => ResolvedDevice::CpuFallback(why),
            },
        })
    }
}

#[cfg(not(feature = "cuda"))]
fn probe_cuda(_ordinal: usize) -> std::result::Result<(), CudaUnavailable> {
    Err(CudaUnavailable::NotBuilt)
}

/// Checks, before candle creates a device, everything whose absence would make the CUDA
/// libraries abort the process: the driver library, a GPU, a driver new enough for this
/// build, and the cuBLAS and cuRAND libraries the backend loads when a device is created.
#[cfg(feature = "cuda")]
fn probe_cuda(ordinal: usize) -> std::result::Result<(), CudaUnavailable> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};

    if !library_present("libcuda.so.1") && !library_present("libcuda.so") {
        return Err(CudaUnavailable::NoDriver);
    }
    result::init().map_err(|e| CudaUnavailable::NoDevice(e.to_string()))?;
    let mut driver = 0;
    // SAFETY: writes one int; the driver library is loaded and initialised above.
    unsafe { sys::cuDriverGetVersion(&mut driver) }
        .result()
        .map_err(|e| CudaUnavailable::NoDevice(e.to_string()))?;
    let needed = sys::CUDA_VERSION as i32;
    if driver < needed {
        return Err(CudaUnavailable::DriverTooOld { driver, needed });
    }
    let count =
        result::device::get_count().map_err(|e| CudaUnavailable::NoDevice(e.to_string()))?;
    let count = usize::try_from(count).unwrap_or(0);
    if count == 0 {
        return Err(CudaUnavailable::NoDevice("0 devices".into()));
    }
    if ordinal >= count {
        return Err(CudaUnavailable::NoOrdinal { ordinal, count });
    }
    let major = needed / 1000;
    for lib in [
        format!("libcublas.so.{major}"),
        format!("libcublasLt.so.{major}"),
        "libcurand.so.10".to_string(),
    ] {
        if !library_present(&lib) {
            return Err(CudaUnavailable::MissingLibrary(lib));
        }
    }
    Ok(())
}

/// Whether the dynamic loader finds this shared library (loaded and unloaded again).
#[cfg(feature = "cuda")]
fn library_present(name: &str) -> bool {
    // SAFETY: loading a CUDA library runs only its own initialisers, as using it would.
    unsafe { libloading::Library::new(name) }.is_ok()
}

/// The forms a configuration file may give a [`DeviceChoice`] in.
#[derive(Deserialize)]
#[serde(untagged)]
enum DeviceRepr {
    Name(String),
    Table(CudaTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CudaTable {
    cuda: usize,
}

impl TryFrom<DeviceRepr> for DeviceChoice {
    type Error = crate::ModelError;

    fn try_from(r: DeviceRepr) -> Result<Self> {
        match r {
            DeviceRepr::Name(s) => s.parse(),
            DeviceRepr::Table(t) => Ok(DeviceChoice::Cuda(t.cuda)),
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = crate::ModelError;

    /// Parses `cpu`, `auto`, `cuda` (ordinal 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "auto" => Ok(DeviceChoice::Auto),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    crate::ModelError::arg(
                        "device",
                        format!("{s:?}: expected cpu, auto, cuda or cuda:N"),
                    )
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_gpu(_: usize) -> std::result::Result<(), CudaUnavailable> {
        Err(CudaUnavailable::NoDriver)
    }

    fn two_gpus(i: usize) -> std::result::Result<(), CudaUnavailable> {
        if i < 2 {
            Ok(())
        } else {
            Err(CudaUnavailable::NoOrdinal {
                ordinal: i,
                count: 2,
            })
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!(
            "cuda".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(3)
        );
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            let err = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(
                err.contains("device") && err.contains("auto"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn cpu_never_probes() {
        let probe = |_: usize| -> std::result::Result<(), CudaUnavailable> {
            panic!("the CPU choice must not look for CUDA")
        };
        assert_eq!(
            DeviceChoice::Cpu.resolve_with(probe).unwrap(),
            ResolvedDevice::Cpu
        );
    }

    #[test]
    fn auto_takes_the_gpu_when_there_is_one() {
        assert_eq!(
            DeviceChoice::Auto.resolve_with(two_gpus).unwrap(),
            ResolvedDevice::Cuda(0)
        );
    }

    #[test]
    fn auto_falls_back_to_the_cpu_and_says_why() {
        let r = DeviceChoice::Auto.resolve_with(no_gpu).unwrap();
        assert_eq!(r, ResolvedDevice::CpuFallback(CudaUnavailable::NoDriver));
        assert!(r.open().unwrap().is_cpu());
    }

    #[test]
    fn cuda_without_a_gpu_is_an_error_naming_it() {
        let err = DeviceChoice::Cuda(0)
            .resolve_with(no_gpu)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("no CUDA device"), "{err}");
        assert!(err.contains("libcuda.so.1"), "{err}");
        let err = DeviceChoice::Cuda(2)
            .resolve_with(two_gpus)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "no CUDA device 2: the CUDA driver reports 2");
        assert_eq!(
            DeviceChoice::Cuda(1).resolve_with(two_gpus).unwrap(),
            ResolvedDevice::Cuda(1)
        );
    }

    #[test]
    fn driver_versions_read_as_cuda_versions() {
        let msg = CudaUnavailable::DriverTooOld {
            driver: 12080,
            needed: 13000,
        }
        .to_string();
        assert_eq!(
            msg,
            "no CUDA device: the CUDA driver supports CUDA 12.8, this build needs 13.0 or newer"
        );
    }

    /// What this build does on this machine: without the `cuda` feature, `cuda` is refused
    /// and `auto` is the CPU.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn this_build_has_no_cuda() {
        let err = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
        assert!(err.starts_with("no CUDA device"), "{err}");
        assert!(err.contains("--features cuda"), "{err}");
        assert_eq!(
            DeviceChoice::Auto.resolve().unwrap(),
            ResolvedDevice::CpuFallback(CudaUnavailable::NotBuilt)
        );
        assert!(DeviceChoice::Auto.open().unwrap().is_cpu());
    }

    #[test]
    fn serde_forms() {
        #[derive(Deserialize)]
        struct W {
            device: DeviceChoice,
        }
        let w: W = from_json(r#"{"device": "auto"}"#);
        assert_eq!(w.device, DeviceChoice::Auto);
        let w: W = from_json(r#"{"device": {"cuda": 1}}"#);
        assert_eq!(w.device, DeviceChoice::Cuda(1));
        let w: W = from_json(r#"{"device": "cuda:2"}"#);
        assert_eq!(w.device, DeviceChoice::Cuda(2));
        let err = serde_json::from_str::<W>(r#"{"device": "gpu"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("expected cpu, auto, cuda or cuda:N"), "{err}");
        assert!(serde_json::from_str::<W>(r#"{"device": {"cuda": 1, "x": 2}}"#).is_err());
        for d in [DeviceChoice::Cpu, DeviceChoice::Auto, DeviceChoice::Cuda(3)] {
            let text = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<DeviceChoice>(&text).unwrap(), d);
        }
    }

    fn from_json<T: serde::de::DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).unwrap()
    }
}
