//! Checks of a decoder configuration before anything is allocated: every size positive and
//! below a fixed limit, the floating-point fields positive and finite, and the memory the
//! weights and rotary tables need (estimated from the shapes) within the machine's memory.
//!
//! The limits are generous (far above any released model of the families supported) and only
//! keep an absurd value from reaching the allocator, where it would abort the process.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

/// The largest `vocab_size` and `max_position_embeddings` accepted (2^24 = 16,777,216).
pub const MAX_TOKENS: usize = 1 << 24;
/// The largest `hidden_size`, `intermediate_size` and query width (`num_heads · head_dim`)
/// accepted (2^20 = 1,048,576).
pub const MAX_WIDTH: usize = 1 << 20;
/// The largest `num_hidden_layers` accepted.
pub const MAX_LAYERS: usize = 4096;

impl ModelConfig {
    /// Checks every field before the model is built; errors name the field and its limit.
    pub fn validate(&self) -> Result<()> {
        self.check_sizes()?;
        self.check_floats()?;
        check_memory(self.estimated_bytes(), self)
    }

    fn check_sizes(&self) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size, MAX_TOKENS),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_TOKENS,
            ),
            ("hidden_size", self.hidden_size, MAX_WIDTH),
            ("intermediate_size", self.intermediate_size, MAX_WIDTH),
            ("num_hidden_layers", self.num_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_heads, MAX_WIDTH),
            ("num_key_value_heads", self.num_kv_heads, MAX_WIDTH),
            ("head_dim", self.head_dim, MAX_WIDTH),
        ];
        for (field, value, limit) in sizes {
            if value == 0 || value > limit {
                return Err(ModelError::config(
                    field,
                    format!("{value} is out of range; must be in 1..={limit}"),
                ));
            }
        }
        let width = self.num_heads.saturating_mul(self.head_dim);
        if width > MAX_WIDTH {
            return Err(ModelError::config(
                "num_attention_heads",
                format!(
                    "{} heads of width {} make {width} > {MAX_WIDTH}",
                    self.num_heads, self.head_dim
                ),
            ));
        }
        Ok(())
    }

    fn check_floats(&self) -> Result<()> {
        positive("rope_theta", self.rope_theta)?;
        if !(self.rms_norm_eps >= 0.0 && self.rms_norm_eps.is_finite()) {
            return Err(ModelError::config(
                "rms_norm_eps",
                format!("{} must be a finite number >= 0", self.rms_norm_eps),
            ));
        }
        if let Some(s) = &self.rope_scaling {
            positive("rope_scaling.factor", s.factor)?;
            positive("rope_scaling.low_freq_factor", s.low_freq_factor)?;
            positive("rope_scaling.high_freq_factor", s.high_freq_factor)?;
            if s.high_freq_factor <= s.low_freq_factor {
                return Err(ModelError::config(
                    "rope_scaling.high_freq_factor",
                    format!(
                        "{} must exceed low_freq_factor {}",
                        s.high_freq_factor, s.low_freq_factor
                    ),
                ));
            }
            if s.original_max_position_embeddings == 0 {
                return Err(ModelError::config(
                    "rope_scaling.original_max_position_embeddings",
                    "must be positive",
                ));
            }
        }
        Ok(())
    }

    /// Bytes of the f32 weights and rotary tables this configuration needs (an estimate that
    /// leaves out biases and norms; activations come on top).
    pub fn estimated_bytes(&self) -> f64 {
        let f = |n: usize| n as f64;
        let (d, hd) = (f(self.hidden_size), f(self.head_dim));
        let heads = if self.tie_word_embeddings { 1.0 } else { 2.0 };
        let embed = heads * f(self.vocab_size) * d;
        let attn = 2.0 * d * f(self.num_heads) * hd + 2.0 * d * f(self.num_kv_heads) * hd;
        let mlp = 3.0 * d * f(self.intermediate_size);
        let params = embed + f(self.num_layers) * (attn + mlp);
        let rope = f(self.max_position_embeddings) * hd;
        4.0 * (params + rope)
    }
}

fn positive(field: &str, value: f64) -> Result<()> {
    if value > 0.0 && value.is_finite() {
        Ok(())
    } else {
        Err(ModelError::config(
            field,
            format!("{value} must be a finite number > 0"),
        ))
    }
}

fn check_memory(bytes: f64, cfg: &ModelConfig) -> Result<()> {
    let Some(limit) = host_memory_bytes() else {
        return Ok(());
    };
    if bytes <= limit as f64 {
        return Ok(());
    }
    let gib = |b: f64| b / (1u64 << 30) as f64;
    Err(ModelError::config(
        "hidden_size",
        format!(
            "the weights need about {:.1} GiB (vocab_size {}, hidden_size {}, \
             intermediate_size {}, num_hidden_layers {}, max_position_embeddings {}), \
             more than this machine's {:.1} GiB of memory and swap",
            gib(bytes),
            cfg.vocab_size,
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_layers,
            cfg.max_position_embeddings,
            gib(limit as f64)
        ),
    ))
}

/// Physical memory plus swap, from `/proc/meminfo`; `None` where that cannot be read.
fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb.saturating_mul(1024))
    };
    Some(field("MemTotal:")?.saturating_add(field("SwapTotal:").unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use crate::config::TinyConfig;
    use crate::ModelConfig;

    fn tiny() -> ModelConfig {
        TinyConfig::default().model_config(300).unwrap()
    }

    fn err(cfg: ModelConfig) -> String {
        cfg.validate().unwrap_err().to_string()
    }

    #[test]
    fn the_default_tiny_model_passes() {
        tiny().validate().unwrap();
    }

    #[test]
    fn sizes_beyond_the_limits_name_the_field() {
        let mut c = tiny();
        c.max_position_embeddings = 1_000_000_000_000;
        assert!(err(c).contains("max_position_embeddings"));
        let mut c = tiny();
        c.vocab_size = 0;
        assert!(err(c).contains("vocab_size"));
        let mut c = tiny();
        c.num_layers = 1 << 40;
        assert!(err(c).contains("num_hidden_layers"));
    }

    #[test]
    fn weights_larger_than_memory_are_refused_before_allocation() {
        let mut c = tiny();
        c.hidden_size = 1 << 20;
        c.intermediate_size = 1 << 20;
        c.num_heads = 1 << 13;
        c.num_kv_heads = 1 << 13;
        c.num_layers = 4000;
        // 4000 layers of 7 · 2^40 bytes each: no machine has that.
        if super::host_memory_bytes().is_some() {
            let e = err(c);
            assert!(e.contains("GiB") && e.contains("hidden_size"), "{e}");
        }
    }

    #[test]
    fn rope_theta_and_eps_must_be_sensible() {
        for theta in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut c = tiny();
            c.rope_theta = theta;
            assert!(err(c).contains("rope_theta"), "{theta}");
        }
        for eps in [-1e-6, f64::NAN] {
            let mut c = tiny();
            c.rms_norm_eps = eps;
            assert!(err(c).contains("rms_norm_eps"), "{eps}");
        }
    }
}
