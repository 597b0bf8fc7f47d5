//! Whether the episodes of a configuration fit the model's context.
//!
//! The longest sequence an episode produces is the prompt of its last turn followed by a full
//! response:
//!
//! - `trajectory` layout: the running chat of `rollout.max_steps` turns, every earlier answer
//!   `rollout.max_new_tokens` tokens long (no EOS, so the template's end-of-turn token stays),
//!   then the last answer. The chat grows by one user turn and one answer per step.
//! - `step` layout: one step prompt whose `rollout.history_length` past steps show answers whose
//!   action is as long as an answer can be, then the answer.
//!
//! The prompt is rendered by the rollout's own code ([`next_prompt`]) from an observation of
//! the configured environment, so the chat template and the tokenizer are counted exactly.
//! [`crate::policy::check_context`] runs before the warm start and the first rollout; a
//! rollout checks its first observation the same way before it samples, and every turn's
//! prompt with [`fits`] (observations of remote environments may grow).

use gigpo_env::Observation;
use gigpo_model::{Policy, Tokenizer};

use crate::error::{Result, TrainError};
use crate::prompt::{next_prompt, PastTurn, PromptStyle};

/// The smallest context the tiny model gets when it is sized for the episode.
pub const MIN_TINY_CONTEXT: usize = 1024;
/// A sized context is rounded up to a multiple of this.
const CONTEXT_STEP: usize = 256;

/// What an episode's longest sequence is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpisodeShape<'a> {
    /// How prompts are built.
    pub style: &'a PromptStyle,
    /// The instructions (system turn), if shown.
    pub instructions: Option<&'a str>,
    /// Most turns of an episode.
    pub max_steps: usize,
    /// Most tokens of one answer.
    pub max_new_tokens: usize,
}

/// The number of tokens of the longest sequence of an episode starting from `obs` (every
/// observation the length of `obs`).
pub fn longest_sequence(
    tok: &Tokenizer,
    shape: &EpisodeShape<'_>,
    obs: &Observation,
) -> Result<usize> {
    let (ids, text) = longest_answer(tok, shape.max_new_tokens)?;
    let user = crate::prompt::user_message(&[], &obs.text, obs.admissible_actions.as_deref());
    let turn = PastTurn {
        user: &user,
        response: &ids,
        observation: &obs.text,
        action_text: &text,
    };
    let past = vec![turn; shape.max_steps.saturating_sub(1)];
    let (_, prompt) = next_prompt(tok, shape.style, shape.instructions, &past, obs)?;
    Ok(prompt.len() + shape.max_new_tokens)
}

/// An answer of `n` tokens (ids, and text whose whole length the step history shows).
fn longest_answer(tok: &Tokenizer, n: usize) -> Result<(Vec<u32>, String)> {
    let word = tok.encode(" up")?;
    let Some(&id) = word.first() else {
        return Err(TrainError::config(
            "tokenizer",
            "encodes \" up\" to nothing",
        ));
    };
    let ids = vec![id; n];
    let text = format!("<action>{}</action>", tok.decode(&ids)?);
    Ok((ids, text))
}

/// The tiny model's context sized for `tokens`: rounded up to a multiple of 256, at least
/// [`MIN_TINY_CONTEXT`].
pub fn sized_context(tokens: usize) -> usize {
    (tokens.div_ceil(CONTEXT_STEP) * CONTEXT_STEP).max(MIN_TINY_CONTEXT)
}

/// Checks that a sequence of `needed` tokens, after `turns` turns of prompts built in `style`,
/// fits `policy`'s context.
pub fn fits(policy: &Policy, style: &PromptStyle, needed: usize, turns: usize) -> Result<()> {
    if needed > policy.config().max_position_embeddings {
        return Err(too_long(style, policy, needed, turns));
    }
    Ok(())
}

/// Checks that a sequence of `needed` tokens, after `turns` turns of prompts built in `style`,
/// fits the `context` tokens that inference servers serve (their `--max-model-len`).
pub fn fits_served(style: &PromptStyle, context: usize, needed: usize, turns: usize) -> Result<()> {
    if needed <= context {
        return Ok(());
    }
    let (layout, history) = layout_words(style);
    Err(TrainError::Context {
        sequence: format!("a {layout}-layout sequence after {turns} turns"),
        needed,
        context,
        fix: format!(
            "lower rollout.max_steps, rollout.max_new_tokens{history}, or start the servers with a larger --max-model-len"
        ),
    })
}

/// The layout's name and the history field that lengthens its prompts.
fn layout_words(style: &PromptStyle) -> (&'static str, &'static str) {
    if style.chat {
        ("trajectory", "")
    } else {
        ("step", ", rollout.history_length")
    }
}

/// The error for a sequence of `needed` tokens after `steps` turns.
fn too_long(style: &PromptStyle, policy: &Policy, needed: usize, steps: usize) -> TrainError {
    let (layout, history) = layout_words(style);
    let context_field = context_field(policy);
    let longer = if policy.source() == "tiny" {
        format!("raise {context_field} (0 sizes it for the episode)")
    } else {
        format!("use a model with a longer context ({context_field})")
    };
    TrainError::Context {
        sequence: format!("a {layout}-layout sequence after {steps} turns"),
        needed,
        context: policy.config().max_position_embeddings,
        fix: format!("lower rollout.max_steps, rollout.max_new_tokens{history}, or {longer}"),
    }
}

/// Where the model's context length is set.
fn context_field(policy: &Policy) -> String {
    let source = policy.source();
    if source == "tiny" {
        "model.tiny.max_position_embeddings".into()
    } else if source.to_ascii_lowercase().ends_with(".gguf") {
        format!("context_length of {source}")
    } else {
        format!("max_position_embeddings of {source}/config.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;
    use crate::policy::check_context;
    use crate::rollout::{collect, RolloutPlan};
    use crate::samples::SampleLayout;
    use gigpo_env::action::ActionFormat;
    use gigpo_env::sokoban::SokobanConfig;
    use gigpo_env::spec::EnvSpec;
    use gigpo_model::{Device, SamplingParams, TinyConfig};

    fn trajectory_config() -> TrainConfig {
        TrainConfig {
            sample_layout: SampleLayout::Trajectory,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn the_tiny_context_is_sized_for_the_episode() {
        let tok = Tokenizer::tiny().unwrap();
        let step = TrainConfig::default()
            .episode_tokens(&tok)
            .unwrap()
            .unwrap();
        let chat = trajectory_config().episode_tokens(&tok).unwrap().unwrap();
        assert!(step < MIN_TINY_CONTEXT, "{step}");
        // 15 turns of a 6×6 grid with the chat template: more than 1024 tokens.
        assert!(chat > 1024 && chat <= 1280, "{chat}");
        let default = TrainConfig::default().tiny_config().unwrap();
        assert_eq!(default.max_position_embeddings, 1024);
        let sized = trajectory_config().tiny_config().unwrap();
        assert_eq!(sized.max_position_embeddings, 1280);
        assert_eq!(
            (sized_context(0), sized_context(1025), sized_context(2048)),
            (1024, 1280, 2048)
        );
        // An explicit context is kept.
        let mut cfg = trajectory_config();
        cfg.model.tiny.max_position_embeddings = 512;
        assert_eq!(cfg.tiny_config().unwrap().max_position_embeddings, 512);
    }

    fn small_policy(context: usize) -> Policy {
        let tiny = TinyConfig {
            max_position_embeddings: context,
            ..crate::small_tiny(16)
        };
        Policy::tiny(&tiny, 5, &Device::Cpu).unwrap()
    }

    #[test]
    fn the_bound_is_the_longest_trajectory_a_rollout_builds() {
        // Tagged answers only: the random model never names a move, so every episode runs all
        // its steps from one state, and an answer without EOS is the longest one.
        let sokoban = SokobanConfig {
            action_format: ActionFormat::Tagged,
            ..SokobanConfig::default()
        };
        let env = EnvSpec::Sokoban(sokoban);
        let policy = small_policy(1024);
        let tok = policy.tokenizer();
        let sampling = SamplingParams {
            max_new_tokens: 3,
            ..SamplingParams::default()
        };
        let instructions = env.build().unwrap().instructions();
        let style = trajectory_config().prompt_style();
        let shape = EpisodeShape {
            style: &style,
            instructions: Some(&instructions),
            max_steps: 4,
            max_new_tokens: 3,
        };
        let plan = RolloutPlan {
            env: &env,
            seeds: &[3, 8],
            group_size: 3,
            max_steps: 4,
            prompt: PromptStyle {
                instructions: true,
                system_prompt: None,
                response_prefix: String::new(),
                ..shape.style.clone()
            },
            sampling: &sampling,
            sample_seed: 1,
        };
        let rollout = collect(&policy, &plan).unwrap();
        let mut full = 0;
        for t in &rollout.trajectories {
            let obs = Observation {
                text: t.steps[0].observation.clone(),
                anchor: String::new(),
                admissible_actions: t.steps[0].admissible.clone(),
            };
            let bound = longest_sequence(tok, &shape, &obs).unwrap();
            let last = t.steps.last().unwrap();
            let len = last.prompt.len() + last.response.len();
            assert!(len <= bound, "{len} > {bound}");
            let eos = |s: &crate::rollout::StepRecord| {
                s.response.len() < 3 || tok.eos_ids().contains(s.response.last().unwrap())
            };
            if t.steps.len() == 4 && !t.steps.iter().any(eos) {
                assert_eq!(len, bound);
                full += 1;
            }
        }
        assert!(full > 0, "no trajectory of four full answers");
    }

    #[test]
    fn an_episode_too_long_for_the_context_is_refused_before_it_runs() {
        let mut cfg = trajectory_config();
        cfg.model.tiny.max_position_embeddings = 1024;
        let policy = small_policy(1024);
        let e = check_context(&cfg, &policy).unwrap_err();
        assert!(
            matches!(e, TrainError::Context { context: 1024, .. }),
            "{e}"
        );
        let text = e.to_string();
        for field in [
            "rollout.max_steps",
            "rollout.max_new_tokens",
            "model.tiny.max_position_embeddings",
            "trajectory",
        ] {
            assert!(text.contains(field), "{text}");
        }
        // Fewer steps fit.
        cfg.rollout.max_steps = 10;
        check_context(&cfg, &policy).unwrap();
        // So does the step layout with its history window.
        let mut step = TrainConfig::default();
        step.rollout.history_length = Some(2);
        check_context(&step, &policy).unwrap();
    }

    #[test]
    fn a_rollout_that_would_not_fit_stops_before_it_samples() {
        let cfg = trajectory_config();
        let sampling = SamplingParams {
            max_new_tokens: 1,
            ..SamplingParams::default()
        };
        let plan = RolloutPlan {
            env: &cfg.env,
            seeds: &[1],
            group_size: 2,
            max_steps: 15,
            prompt: cfg.prompt_style(),
            sampling: &sampling,
            sample_seed: 0,
        };
        let e = collect(&small_policy(512), &plan).unwrap_err();
        assert!(
            matches!(e, TrainError::Context { context: 512, needed, .. } if needed > 1024),
            "{e}"
        );
        assert!(e.to_string().contains("after 15 turns"), "{e}");
        collect(&small_policy(1280), &plan).unwrap();
    }
}
