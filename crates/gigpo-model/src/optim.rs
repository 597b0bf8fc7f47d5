//! AdamW updating each parameter in place in one pass, with global gradient-norm clipping.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Storage, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::atomic::atomic_file;
use crate::error::{ModelError, Result};

/// AdamW hyper-parameters (PyTorch's `torch.optim.AdamW` semantics: decoupled weight decay,
/// bias-corrected moments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// Learning rate (default 1e-5).
    pub lr: f64,
    /// β₁ (default 0.9).
    pub beta1: f64,
    /// β₂ (default 0.999).
    pub beta2: f64,
    /// ε (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay λ (default 0.01).
    pub weight_decay: f64,
    /// Scale all gradients so their global L2 norm is at most this (default 1.0; `None` = off).
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
        }
    }
}

/// What one [`AdamW::step`] saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Global L2 norm of the gradients before clipping.
    pub grad_norm: f64,
    /// Factor the gradients were multiplied by (1 when not clipped).
    pub clip_scale: f64,
}

struct Param {
    name: String,
    var: Var,
    m: Moment,
    v: Moment,
}

/// First or second moment: a host buffer for CPU parameters, a tensor elsewhere.
enum Moment {
    Host(Vec<f32>),
    Device(Tensor),
}

impl Moment {
    fn zeros(var: &Var) -> Result<Self> {
        Ok(if var.device().is_cpu() {
            Moment::Host(vec![0.0; var.elem_count()])
        } else {
            Moment::Device(var.zeros_like()?)
        })
    }

    fn to_tensor(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(match self {
            Moment::Host(v) => Tensor::from_slice(v, shape, &candle_core::Device::Cpu)?,
            Moment::Device(t) => t.to_device(&candle_core::Device::Cpu)?,
        })
    }
}

/// AdamW over a fixed list of named variables (f32).
///
/// ```no_run
/// # use gigpo_model::{AdamW, AdamWConfig, Policy, TinyConfig, ScoreMode};
/// # fn main() -> gigpo_model::Result<()> {
/// let policy = Policy::tiny(&TinyConfig::default(), 0, &candle_core::Device::Cpu)?;
/// let mut opt = AdamW::new(policy.named_trainable_vars().to_vec(), AdamWConfig::default())?;
/// let scores = policy.score(&[vec![1, 2, 3]], &[1], ScoreMode::TRAIN)?;
/// let loss = scores.logprobs.sum_all()?.neg()?;
/// let stats = opt.step(&loss.backward()?)?;
/// # let _ = stats; Ok(()) }
/// ```
pub struct AdamW {
    cfg: AdamWConfig,
    params: Vec<Param>,
    step: u64,
}

impl AdamW {
    /// An optimizer for `vars` (names are used in saved state) with zero moments.
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let mut params = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            if var.dtype() != DType::F32 {
                return Err(ModelError::arg(
                    "vars",
                    format!("{name} is {:?}; AdamW needs f32", var.dtype()),
                ));
            }
            params.push(Param {
                m: Moment::zeros(&var)?,
                v: Moment::zeros(&var)?,
                name,
                var,
            });
        }
        Ok(AdamW {
            cfg,
            params,
            step: 0,
        })
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// Changes the learning rate (for schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Clips the gradients to `max_grad_norm` (one read pass to get the norm) and updates every
    /// variable that has a gradient in `grads` in place (one pass over each buffer). Variables
    /// without a gradient are left as they are.
    pub fn step(&mut self, grads: &GradStore) -> Result<StepStats> {
        let vars: Vec<Var> = self.params.iter().map(|p| p.var.clone()).collect();
        let grad_norm = global_grad_norm(grads, &vars)?;
        if !grad_norm.is_finite() {
            return Err(ModelError::arg(
                "grads",
                format!("gradient norm is {grad_norm}"),
            ));
        }
        let clip_scale = match self.cfg.max_grad_norm {
            Some(max) if grad_norm > max => max / (grad_norm + 1e-6),
            _ => 1.0,
        };
        self.step += 1;
        let c = &self.cfg;
        let t = self.step as i32;
        let hyper = Hyper {
            lr: c.lr as f32,
            b1: c.beta1 as f32,
            b2: c.beta2 as f32,
            eps: c.eps as f32,
            decay: (1.0 - c.lr * c.weight_decay) as f32,
            bc1: (1.0 - c.beta1.powi(t)) as f32,
            bc2: (1.0 - c.beta2.powi(t)) as f32,
            gscale: clip_scale as f32,
        };
        for p in self.params.iter_mut() {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            update(p, g, &hyper)?;
        }
        Ok(StepStats {
            grad_norm,
            clip_scale,
        })
    }

    /// Saves step count and moments to a safetensors file, atomically.
    pub fn save_state(&self, path: &Path) -> Result<()> {
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for p in &self.params {
            map.insert(format!("m.{}", p.name), p.m.to_tensor(p.var.dims())?);
            map.insert(format!("v.{}", p.name), p.v.to_tensor(p.var.dims())?);
        }
        map.insert(
            "step".into(),
            Tensor::new(&[self.step as i64], &candle_core::Device::Cpu)?,
        );
        atomic_file(path, |tmp| crate::fsutil::write_safetensors(&map, tmp))
    }

    /// Restores what [`AdamW::save_state`] wrote; names and shapes must match.
    pub fn load_state(&mut self, path: &Path) -> Result<()> {
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "the optimizer state",
            });
        }
        let map = crate::fsutil::read_safetensors(path, &candle_core::Device::Cpu)?;
        let mismatch = |message: String| ModelError::Mismatch {
            path: path.to_path_buf(),
            message,
        };
        let step = map
            .get("step")
            .ok_or_else(|| mismatch("no \"step\" entry".into()))?;
        let step = step.to_vec1::<i64>()?.first().copied().unwrap_or(0);
        let mut loaded = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let get = |k: &str| -> Result<Tensor> {
                let key = format!("{k}.{}", p.name);
                let t = map
                    .get(&key)
                    .ok_or_else(|| mismatch(format!("no entry {key}")))?;
                if t.dims() != p.var.dims() {
                    return Err(mismatch(format!(
                        "{key} has shape {:?}, the variable {:?}",
                        t.dims(),
                        p.var.dims()
                    )));
                }
                Ok(t.to_dtype(DType::F32)?)
            };
            loaded.push((get("m")?, get("v")?));
        }
        for (p, (m, v)) in self.params.iter_mut().zip(loaded) {
            p.m = moment_from(m, &p.var)?;
            p.v = moment_from(v, &p.var)?;
        }
        self.step = step.max(0) as u64;
        Ok(())
    }
}

fn moment_from(t: Tensor, var: &Var) -> Result<Moment> {
    Ok(if var.device().is_cpu() {
        Moment::Host(t.flatten_all()?.to_vec1::<f32>()?)
    } else {
        Moment::Device(t.to_device(var.device())?)
    })
}

/// Global L2 norm √(Σ‖g‖²) over the gradients of `vars` present in `grads`.
pub fn global_grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    let mut total = 0f64;
    for v in vars {
        let Some(g) = grads.get(v.as_tensor()) else {
            continue;
        };
        total += sum_sq(g)?;
    }
    Ok(total.sqrt())
}

fn sum_sq(g: &Tensor) -> Result<f64> {
    let (storage, layout) = g.storage_and_layout();
    if let (Storage::Cpu(CpuStorage::F32(data)), Some((a, b))) =
        (&*storage, layout.contiguous_offsets())
    {
        return Ok(data[a..b].iter().map(|&x| (x as f64) * (x as f64)).sum());
    }
    drop(storage);
    Ok(g.to_dtype(DType::F64)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()?)
}

#[derive(Clone, Copy)]
struct Hyper {
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    decay: f32,
    bc1: f32,
    bc2: f32,
    gscale: f32,
}

fn update(p: &mut Param, g: &Tensor, h: &Hyper) -> Result<()> {
    match (&mut p.m, &mut p.v) {
        (Moment::Host(m), Moment::Host(v)) => {
            let g = g.contiguous()?;
            let op = HostAdamW {
                m: RefCell::new(m),
                v: RefCell::new(v),
                h: *h,
            };
            p.var.as_tensor().inplace_op2(&g, &op)?;
        }
        (Moment::Device(m), Moment::Device(v)) => {
            let g = (g * h.gscale as f64)?;
            let m_new = ((&*m * h.b1 as f64)? + (&g * (1.0 - h.b1 as f64))?)?;
            let v_new = ((&*v * h.b2 as f64)? + (g.sqr()? * (1.0 - h.b2 as f64))?)?;
            let denom = ((&v_new / h.bc2 as f64)?.sqrt()? + h.eps as f64)?;
            let upd = ((&m_new / h.bc1 as f64)? / denom)?;
            let w = p.var.as_tensor();
            let next = ((w * h.decay as f64)? - (upd * h.lr as f64)?)?;
            p.var.set(&next)?;
            *m = m_new;
            *v = v_new;
        }
        _ => unreachable!("both moments live on the same side"),
    }
    Ok(())
}

/// The fused update over one CPU parameter.
struct HostAdamW<'a> {
    m: RefCell<&'a mut Vec<f32>>,
    v: RefCell<&'a mut Vec<f32>>,
    h: Hyper,
}

impl InplaceOp2 for HostAdamW<'_> {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(w), CpuStorage::F32(g)) = (s1, s2) else {
            candle_core::bail!("adamw: parameters and gradients must be f32")
        };
        let (Some((wa, wb)), Some((ga, gb))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("adamw: parameters and gradients must be contiguous")
        };
        let (w, g) = (&mut w[wa..wb], &g[ga..gb]);
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        if w.len() != g.len() || w.len() != m.len() {
            candle_core::bail!(
                "adamw: {} weights, {} gradients, {} moments",
                w.len(),
                g.len(),
                m.len()
            )
        }
        let h = self.h;
        let (step_size, inv_bc2_sqrt) = (h.lr / h.bc1, 1.0 / h.bc2.sqrt());
        for i in 0..w.len() {
            let gi = g[i] * h.gscale;
            let mi = h.b1 * m[i] + (1.0 - h.b1) * gi;
            let vi = h.b2 * v[i] + (1.0 - h.b2) * gi * gi;
            m[i] = mi;
            v[i] = vi;
            w[i] = w[i] * h.decay - step_size * mi / (vi.sqrt() * inv_bc2_sqrt + h.eps);
        }
        Ok(())
    }
}
