//! [`Policy`]: a decoder, its tokenizer, optional LoRA adapter, and the trainable variables.

use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{ModelConfig, TinyConfig};
use crate::error::{ModelError, Result};
use crate::fsutil::read_text;
use crate::load::Checkpoint;
use crate::lora::{new_adapter, LoraConfig, TargetModule};
use crate::tokenizer::Tokenizer;
use crate::transformer::{Init, Transformer};

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
        let mut src = |_: &str, shape: &[usize], init: Init| -> Result<Tensor> {
            let n: usize = shape.iter().product();
            let data = match init {
                Init::Normal => normals(n, init_std, &mut rng),
                Init::Ones => vec![1.0; n],
                Init::Zeros => vec![0.0; n],
            };
            Ok(Tensor::from_vec(data, shape, device)?)
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

    /// Loads a Hugging Face Qwen2 or Llama directory: `config.json`, `model.safetensors` (or
    /// `model.safetensors.index.json` and its shards), `tokenizer.json`, and optionally
    /// `tokenizer_config.json` / `chat_template.jinja` / `generation_config.json`. Weights are
    /// converted to f32. With `lora`, the base weights are frozen and a fresh adapter is
    /// trainable; without, every weight is trainable.
    ///
    /// `dir` may also be a llama.cpp GGUF file (Llama or Qwen2): its weights are dequantized
    /// to f32 and its tokenizer and chat template are built from the file's metadata.
    pub fn load(dir: &Path, device: &Device, lora: Option<LoraConfig>) -> Result<Self> {
        if crate::gguf::is_gguf_path(dir) {
            return Self::load_gguf(dir, device, lora);
        }
        let cfg_path = dir.join("config.json");
        if !cfg_path.is_file() {
            return Err(ModelError::MissingFile {
                path: cfg_path,
                what: "the model configuration",
            });
        }
        let text = read_text(&cfg_path)?;
        let mcfg = ModelConfig::from_hf_json(&text, &cfg_path)?;
        let hf_config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Json {
                path: cfg_path.clone(),
                message: e.to_string(),
            })?;
        let dtype_field = hf_config
            .get("torch_dtype")
            .or_else(|| hf_config.get("dtype"));
        let save_dtype = match dtype_field.and_then(|v| v.as_str()) {
            Some("bfloat16") => DType::BF16,
            Some("float16") => DType::F16,
            _ => DType::F32,
        };
        let tokenizer = Tokenizer::from_dir(dir)?;
        if tokenizer.vocab_size() > mcfg.vocab_size {
            return Err(ModelError::config(
                "vocab_size",
                format!(
                    "{} is smaller than the tokenizer's {} ids",
                    mcfg.vocab_size,
                    tokenizer.vocab_size()
                ),
            ));
        }
        let ckpt = Checkpoint::open(dir)?;
        let mut src =
            |name: &str, shape: &[usize], _: Init| ckpt.load(name, shape, DType::F32, device);
        let model = Transformer::build(&mcfg, device, &mut src)?;
        drop(ckpt);
        let seed = lora.as_ref().map_or(0, |l| l.seed);
        let mut policy = Self::assemble(
            model,
            tokenizer,
            device,
            Some(hf_config),
            dir.display().to_string(),
            save_dtype,
            seed,
        )?;
        if let Some(l) = lora {
            policy.add_lora(l)?;
        }
        Ok(policy)
    }

    /// Loads `dir` as [`Policy::load`] does, with the adapter of a PEFT directory
    /// (`adapter_config.json`, `adapter_model.safetensors`) applied on top.
    pub fn load_with_adapter(dir: &Path, adapter_dir: &Path, device: &Device) -> Result<Self> {
        let lora = crate::save::read_adapter_config(adapter_dir)?;
        let mut p = Self::load(dir, device, Some(lora))?;
        p.load_adapter_weights(adapter_dir)?;
        Ok(p)
    }

    /// Adds the adapter of a PEFT directory (`adapter_config.json`,
    /// `adapter_model.safetensors`) to a model that has none, e.g. the tiny model; the base
    /// weights are frozen and the adapter becomes the trainable part.
    pub fn apply_adapter(&mut self, adapter_dir: &Path) -> Result<()> {
        let lora = crate::save::read_adapter_config(adapter_dir)?;
        self.add_lora(lora)?;
        self.load_adapter_weights(adapter_dir)
    }

    pub(crate) fn assemble(
        model: Transformer,
        tokenizer: Tokenizer,
        device: &Device,
        hf_config: Option<serde_json::Value>,
        source: String,
        save_dtype: DType,
        seed: u64,
    ) -> Result<Self> {
        let mut trainable = Vec::new();
        let model = model.map_weights(&mut |name, t| {
            let v = Var::from_tensor(t)?;
            trainable.push((name.to_string(), v.clone()));
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
                let prefix = format!("base_model.model.model.layers.{i}.{}", t.path());
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
        for layer in model.layers.iter_mut() {
            for t in TargetModule::ALL {
                let lin = layer.proj_mut(t);
                if let Some(ad) = lin.adapter.as_mut() {
                    ad.a = Var::from_tensor(&ad.a.as_tensor().detach().copy()?)?;
                    ad.b = Var::from_tensor(&ad.b.as_tensor().detach().copy()?)?;
                }
            }
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
