//! Opening the device and loading a model, for the commands that take `--device` and `--model`.

use std::path::PathBuf;

use anyhow::Context;
use gigpo_model::{Device, DeviceChoice, Policy, ResolvedDevice, TinyConfig};

/// Opens the device of a `--device` option or a `model.device` field; for `auto`, says on
/// standard error which device it took and, for the CPU, why.
pub(crate) fn open_device(choice: DeviceChoice) -> anyhow::Result<Device> {
    let resolved = choice.resolve()?;
    report_auto(choice, &resolved);
    Ok(resolved.open()?)
}

/// For `auto`, says on standard error which device it resolved to.
pub(crate) fn report_auto(choice: DeviceChoice, resolved: &ResolvedDevice) {
    if choice != DeviceChoice::Auto {
        return;
    }
    match resolved {
        ResolvedDevice::CpuFallback(why) => eprintln!("{why}; using the CPU"),
        ResolvedDevice::Cuda(i) => eprintln!("using CUDA device {i}"),
        ResolvedDevice::Cpu => {}
    }
}

/// Loads `tiny` (from `tiny_seed`), a Hugging Face directory or a GGUF file onto `device`.
pub(crate) fn load_on(model: &str, tiny_seed: u64, device: &Device) -> anyhow::Result<Policy> {
    if model == "tiny" {
        return Ok(Policy::tiny(&TinyConfig::default(), tiny_seed, device)?);
    }
    let path = PathBuf::from(model);
    Policy::load(&path, device, None)
        .with_context(|| format!("loading model from {}", path.display()))
}
