//! [`Policy`]: a decoder, its tokenizer, optional LoRA adapter, and the trainable variables.

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{ModelConfig, TinyConfig};
use crate::error::{ModelError, Result};
use crate::lora::{new_adapter, LoraConfig, TargetModule};
use crate::tokenizer::Tokenizer;
use crate::transformer::Transformer;
use crate::weights::{Init, Role, WeightSpec};

/// A language-model policy: the decoder, its tokenizer, and what is trained.
///
/// Without LoRA every weight is a trainable [`Var`]; with LoRA only the adapters are, and the
/// reference policy is the same model with the adapter switched off
/// ([`crate::ScoreMode::REFERENCE`]). For full-weight training hold a frozen reference with
/// [`Policy::frozen_copy`].
pub struct Policy {
    pub(crate) model: Transformer,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) device: Device,
    pub(crate) lora: Option<LoraConfig>,
    pub(crate) trainable: Vec<(String, Var)>,
    /// `config.json` as read (its extra fields are written back on save), if loaded from disk.
    pub(crate) hf_config: Option<serde_json::Value>,
    /// Where the model came from (`"tiny"` or the directory), for `adapter_config.json`.
    pub(crate) source: String,
    /// The dtype weights are written in by [`Policy::save`].
    pub(crate) save_dtype: DType,
    pub(crate) dropout_rng: Mutex<ChaCha8Rng>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("source", &self.source)
            .field("config", &self.model.cfg)
            .field("lora", &self.lora)
            .field("trainable_tensors", &self.trainable.len())
            .finish()
    }
}

/// Normal(0, std) samples by the Box–Muller transform.
fn normals(n: usize, std: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let a = 2.0 * std::f64::consts::PI * u2;
        out.push((r * a.cos()) as f32);
        out.push((r * a.sin()) as f32);
    }
    out.truncate(n);
    out
}

impl Policy {
    /// The tiny built-in model with the built-in tokenizer, every weight drawn from `seed`
    /// (matrices Normal(0, `init_std`), norm gains 1, biases 0). All weights are trainable.
    pub fn tiny(cfg: &TinyConfig, seed: u64, device: &Device) -> Result<Self> {
        let vocab = Tokenizer::tiny()?.vocab_size();
        let mcfg = cfg.model_config(vocab)?;
        Self::random(&mcfg, cfg.init_std, seed, device)
    }

    /// A randomly initialised decoder of any shape `cfg` (matrices Normal(0, `init_std`), norm
    /// gains 1, biases 0, drawn from `seed`) with the built-in tokenizer, for benchmarks and
    /// tests of real model shapes without their weights. `cfg.vocab_size` may exceed the
    /// tokenizer's vocabulary (ids beyond it can be scored and sampled but not decoded to
    /// text); it may not be smaller. All weights are trainable.
    pub fn random(cfg: &ModelConfig, init_std: f64, seed: u64, device: &Device) -> Result<Self> {
        let tokenizer = Tokenizer::tiny()?;
        if cfg.vocab_size < tokenizer.vocab_size() {
            return Err(ModelError::config(
                "vocab_size",
                format!(
                    "{} is smaller than the built-in tokenizer's {} ids",
                    cfg.vocab_size,
                    tokenizer.vocab_size()
                ),
            ));
        }
        if !(init_std > 0.0 && init_std.is_finite()) {
            return Err(ModelError::arg("init_std", "must be a positive number"));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut src = |spec: &WeightSpec| -> Result<Tensor> {
            let n: usize = spec.shape.iter().product();
            let data = match spec.role.init() {
                Init::Normal => normals(n, init_std, &mut rng),
                Init::Ones => vec![1.0; n],
                Init::Zeros => vec![0.0; n],
            };
            Ok(Tensor::from_vec(data, spec.shape.as_slice(), device)?)
        };
        let model = Transformer::build(cfg, device, &mut src)?;
        Self::assemble(
            model,
            tokenizer,
            device,
            None,
            "tiny".into(),
            DType::F32,
            seed,
        )
    }

    /// A policy of `model` whose every weight is a trainable variable, without an adapter.
    pub(crate) fn assemble(
        model: Transformer,
        tokenizer: Tokenizer,
        device: &Device,
        hf_config: Option<serde_json::Value>,
        source: String,
        save_dtype: DType,
        seed: u64,
    ) -> Result<Self> {
        crate::cpu::tune_matmul_threading();
        let mut trainable = Vec::new();
        let model = model.map_weights(&mut |spec, t| {
            let v = Var::from_tensor(t)?;
            trainable.push((spec.name(), v.clone()));
            Ok(v.as_tensor().clone())
        })?;
        Ok(Policy {
            model,
            tokenizer,
            device: device.clone(),
            lora: None,
            trainable,
            hf_config,
            source,
            save_dtype,
            dropout_rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_d40f)),
        })
    }

    /// Freezes the base weights and adds a fresh LoRA adapter (A from `cfg.seed`, B = 0);
    /// afterwards only the adapter is trainable. Errors when an adapter is already present.
    pub fn add_lora(&mut self, cfg: LoraConfig) -> Result<()> {
        cfg.validate()?;
        if self.lora.is_some() {
            return Err(ModelError::arg("lora", "the model already has an adapter"));
        }
        self.model = self.model.map_weights(&mut |_, t| Ok(t.detach()))?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut trainable = Vec::new();
        for (i, layer) in self.model.layers.iter_mut().enumerate() {
            for t in TargetModule::ALL
                .into_iter()
                .filter(|t| cfg.target_modules.contains(t))
            {
                let lin = layer.proj_mut(t);
                let ad = new_adapter(&lin.weight, &cfg, &mut rng)?;
                let module = Role::Weight { layer: i, proj: t }.module();
                let prefix = format!("base_model.model.{module}");
                trainable.push((format!("{prefix}.lora_A.weight"), ad.a.clone()));
                trainable.push((format!("{prefix}.lora_B.weight"), ad.b.clone()));
                lin.adapter = Some(ad);
            }
        }
        self.trainable = trainable;
        *self.dropout_rng.lock().unwrap_or_else(|e| e.into_inner()) =
            ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_d40f);
        self.lora = Some(cfg);
        Ok(())
    }

    /// A deep copy whose weights (adapter included) are constants: nothing in it is trainable
    /// and later optimizer steps on `self` do not change it. Use it as the frozen reference
    /// policy of full-weight training.
    pub fn frozen_copy(&self) -> Result<Self> {
        let mut model = self.model.map_weights(&mut |_, t| Ok(t.detach().copy()?))?;
        for ad in model.linears_mut().filter_map(|lin| lin.adapter.as_mut()) {
            ad.a = Var::from_tensor(&ad.a.as_tensor().detach().copy()?)?;
            ad.b = Var::from_tensor(&ad.b.as_tensor().detach().copy()?)?;
        }
        Ok(Policy {
            model,
            tokenizer: self.tokenizer.clone(),
            device: self.device.clone(),
            lora: self.lora.clone(),
            trainable: Vec::new(),
            hf_config: self.hf_config.clone(),
            source: self.source.clone(),
            save_dtype: self.save_dtype,
            dropout_rng: Mutex::new(ChaCha8Rng::seed_from_u64(0)),
        })
    }

    /// The trainable variables (all weights, or only the adapter with LoRA), in a fixed order.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.trainable.iter().map(|(_, v)| v.clone()).collect()
    }

    /// The trainable variables with their names (Hugging Face names; PEFT names for adapters).
    pub fn named_trainable_vars(&self) -> &[(String, Var)] {
        &self.trainable
    }

    /// Number of trainable scalars.
    pub fn num_trainable_parameters(&self) -> usize {
        self.trainable.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The decoder's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.model.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The LoRA configuration, when the model has an adapter.
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    /// Where the model was loaded from (`"tiny"` for the built-in model).
    pub fn source(&self) -> &str {
        &self.source
    }
}
