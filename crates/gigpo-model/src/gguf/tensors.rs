//! Reading a GGUF file's tensors as the Hugging Face weights they hold.

use candle_core::{DType, Device, Tensor};

use super::file::{candle_message, gguf_err, GgufFile};
use crate::config::{Architecture, ModelConfig};
use crate::error::{ModelError, Result};
use crate::lora::TargetModule;
use crate::weights::WeightSpec;

impl GgufFile {
    /// Reads the tensor that holds the weight `spec`, dequantized to f32 on the CPU, q/k rows
    /// restored to the Hugging Face order for Llama, shape checked.
    pub fn load(&mut self, spec: &WeightSpec, cfg: &ModelConfig) -> Result<Tensor> {
        let name = spec.role.gguf_name();
        let dims = self.tensor_dims(&name)?;
        if dims != spec.shape {
            return Err(ModelError::WeightShape {
                name: format!("{name} ({})", spec.name()),
                actual: dims,
                expected: spec.shape.clone(),
            });
        }
        let q = self
            .content
            .tensor(&mut self.reader, &name, &Device::Cpu)
            .map_err(|e| gguf_err(&self.path, format!("tensor {name}: {}", candle_message(&e))))?;
        let t = q.dequantize(&Device::Cpu)?.to_dtype(DType::F32)?;
        if self.arch != Architecture::Llama {
            return Ok(t);
        }
        match spec.role.proj() {
            Some(TargetModule::QProj) => unpermute(&t, cfg.num_heads),
            Some(TargetModule::KProj) => unpermute(&t, cfg.num_kv_heads),
            _ => Ok(t),
        }
    }
}

/// Undoes llama.cpp's row permutation of a q/k projection (weight [heads·d, in] or bias
/// [heads·d]): per head, GGUF holds rows in the order (i, 2) for i < d/2, Hugging Face in the
/// order (2, i).
fn unpermute(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let half = rows / heads / 2;
    let mut split = vec![heads, half, 2];
    split.extend_from_slice(&dims[1..]);
    Ok(t.reshape(split)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}
