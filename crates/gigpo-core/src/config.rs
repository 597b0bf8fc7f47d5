//! Options of the advantage computation and their defaults (docs/advantages.md, "Options").

use crate::error::AdvantageError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which advantage estimator (docs/advantages.md, "Estimators").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Estimator {
    /// Episode advantage only: `A_t = A^E(τ)`.
    Grpo,
    /// Leave-one-out baseline: `A_t = R(τ_i) − mean_{j≠i} R(τ_j)`.
    Rloo,
    /// Episode plus step (anchor-state) advantage.
    #[default]
    Gigpo,
}

/// The normalisation factor F of both levels (docs/advantages.md, "Normalisation").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// F = sample standard deviation (n − 1) + ε.
    #[default]
    Std,
    /// F = a constant (`fixed_norm`), i.e. mean-centering only.
    Fixed,
}

/// How episode and step advantages are combined (arXiv 2505.10978 Eq. 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// `A = A^E + ω·A^S` (the paper's Eq. 8).
    #[default]
    Additive,
    /// `A = ω·A^E + (1 − ω)·A^S`.
    Convex,
}

/// Which levels of Eq. 8 the combined GiGPO advantage keeps: the paper's ablations drop one
/// (docs/advantages.md, "Ablations"). A dropped part is reported as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Levels {
    /// Both terms of Eq. 8: `A = A^E + ω·A^S` (`additive`) or `ω·A^E + (1 − ω)·A^S` (`convex`).
    #[default]
    Both,
    /// The episode term alone: `A = A^E` (`additive`) or `ω·A^E` (`convex`); with `additive`
    /// this is GRPO's advantage (Eq. 3).
    Episode,
    /// The step term alone: `A = ω·A^S` (`additive`) or `(1 − ω)·A^S` (`convex`), A^S of Eq. 7.
    Step,
}

/// Whose numeric conventions to follow (docs/advantages.md, "The `verl-agent` preset").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Convention {
    /// The paper's equations: statistics over trajectories, penalty before discounting.
    #[default]
    Paper,
    /// verl-agent's: episode statistics over step rows, a one-row group keeps its raw score,
    /// the penalty subtracted after discounting and from each row's episode score.
    VerlAgent,
}

macro_rules! parse_enum {
    ($ty:ident, $option:literal, $expected:literal, { $($text:literal => $variant:expr),+ $(,)? }) => {
        impl FromStr for $ty {
            type Err = AdvantageError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.to_ascii_lowercase().as_str() {
                    $($text => Ok($variant),)+
                    _ => Err(AdvantageError::UnknownOption {
                        option: $option,
                        value: s.to_owned(),
                        expected: $expected,
                    }),
                }
            }
        }

        /// Read as [`FromStr`] reads it: case-insensitive.
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

parse_enum!(Estimator, "advantage estimator", "gigpo, grpo, rloo",
    { "gigpo" => Estimator::Gigpo, "grpo" => Estimator::Grpo, "rloo" => Estimator::Rloo });
parse_enum!(Norm, "norm", "std, fixed", { "std" => Norm::Std, "fixed" => Norm::Fixed });
parse_enum!(Combine, "combine", "additive, convex",
    { "additive" => Combine::Additive, "convex" => Combine::Convex });
parse_enum!(Levels, "levels", "both, episode, step",
    { "both" => Levels::Both, "episode" => Levels::Episode, "step" => Levels::Step });
parse_enum!(Convention, "preset", "paper, verl-agent",
    { "paper" => Convention::Paper, "verl-agent" => Convention::VerlAgent,
      "verl_agent" => Convention::VerlAgent });

impl fmt::Display for Estimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Estimator::Gigpo => "gigpo",
            Estimator::Grpo => "grpo",
            Estimator::Rloo => "rloo",
        })
    }
}

impl fmt::Display for Levels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Levels::Both => "both",
            Levels::Episode => "episode",
            Levels::Step => "step",
        })
    }
}

/// All options of the advantage computation. `Default` gives the defaults of docs/advantages.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdvantageConfig {
    /// Estimator. Default `gigpo`.
    pub estimator: Estimator,
    /// Discount γ of the step returns, in [0, 1]. Default 0.95.
    pub gamma: f64,
    /// Penalty λ subtracted from the reward of a step whose action was invalid. Default 0.1.
    pub invalid_action_penalty: f64,
    /// Step-advantage weight ω ≥ 0 (≤ 1 with `convex`). Default 1.0.
    pub step_advantage_weight: f64,
    /// Normalisation of both levels. Default `std`.
    pub norm: Norm,
    /// The constant F when `norm = fixed`. Default 1.0; must be > 0.
    pub fixed_norm: f64,
    /// ε added to the standard deviation. Default 1e-6.
    pub epsilon: f64,
    /// Combination of the two levels. Default `additive`.
    pub combine: Combine,
    /// Which terms of Eq. 8 `gigpo` keeps: `both`, `episode` (A^E alone) or `step` (ω·A^S
    /// alone). Default `both`; anything else needs `estimator = gigpo`.
    pub levels: Levels,
    /// Similarity threshold s in (0, 1) for grouping text anchors; `None` = exact equality.
    pub anchor_similarity: Option<f64>,
    /// Numeric conventions. Default `paper`.
    pub convention: Convention,
}

impl Default for AdvantageConfig {
    fn default() -> Self {
        Self {
            estimator: Estimator::Gigpo,
            gamma: 0.95,
            invalid_action_penalty: 0.1,
            step_advantage_weight: 1.0,
            norm: Norm::Std,
            fixed_norm: 1.0,
            epsilon: 1e-6,
            combine: Combine::Additive,
            levels: Levels::Both,
            anchor_similarity: None,
            convention: Convention::Paper,
        }
    }
}

impl AdvantageConfig {
    /// The `verl-agent` compatibility preset: its conventions and `norm = fixed`.
    pub fn verl_agent() -> Self {
        Self {
            convention: Convention::VerlAgent,
            norm: Norm::Fixed,
            ..Self::default()
        }
    }

    /// Check every value against its allowed range (docs/advantages.md, "Options").
    pub fn validate(&self) -> Result<(), AdvantageError> {
        let bad = |field, value, requirement| {
            Err(AdvantageError::InvalidConfig {
                field,
                value,
                requirement,
            })
        };
        if !(0.0..=1.0).contains(&self.gamma) {
            return bad("gamma", self.gamma, "must be in [0, 1]");
        }
        if !(self.step_advantage_weight >= 0.0 && self.step_advantage_weight.is_finite()) {
            return bad(
                "step_advantage_weight",
                self.step_advantage_weight,
                "must be finite and >= 0",
            );
        }
        if self.combine == Combine::Convex && self.step_advantage_weight > 1.0 {
            return bad(
                "step_advantage_weight",
                self.step_advantage_weight,
                "must be <= 1 with combine = convex",
            );
        }
        if !self.invalid_action_penalty.is_finite() {
            return bad(
                "invalid_action_penalty",
                self.invalid_action_penalty,
                "must be finite",
            );
        }
        if !(self.fixed_norm > 0.0 && self.fixed_norm.is_finite()) {
            return bad("fixed_norm", self.fixed_norm, "must be finite and > 0");
        }
        if !(self.epsilon >= 0.0 && self.epsilon.is_finite()) {
            return bad("epsilon", self.epsilon, "must be finite and >= 0");
        }
        if self.levels != Levels::Both && self.estimator != Estimator::Gigpo {
            return Err(AdvantageError::ConflictingOptions {
                field: "levels",
                value: self.levels.to_string(),
                requirement: "needs estimator = gigpo (grpo and rloo have one level only)",
            });
        }
        if let Some(s) = self.anchor_similarity {
            if !(s > 0.0 && s < 1.0) {
                return bad("anchor_similarity", s, "must be in (0, 1)");
            }
        }
        Ok(())
    }
}
