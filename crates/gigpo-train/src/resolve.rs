//! The defaults that depend on `model.profile` (the table at [`Profile`]): each resolved
//! field has a method here, and [`TrainConfig::resolved`] writes them all out.

use gigpo_env::seed::SeedSplit;
use gigpo_env::spec::EnvSpec;
use gigpo_env::Observation;
use gigpo_model::{
    AdamWConfig, LogitProcessing, LoraConfig, SamplingParams, TinyConfig, Tokenizer, TrainMemory,
};

use crate::config::TrainConfig;
use crate::context::{longest_sequence, sized_context, EpisodeShape};
use crate::error::Result;
use crate::eval::EvalPlan;
use crate::loss::LossConfig;
use crate::profile::{Finetune, Profile, SCRATCH_LR_AFTER_SFT};
use crate::prompt::PromptStyle;
use crate::samples::SampleLayout;
use crate::sft::{SftPlan, SCRATCH_SFT_LEVELS};
use crate::update::{OldLogprobs, UpdatePlan};

impl TrainConfig {
    /// `model.profile` resolved: `pretrained` when a model path is set.
    pub fn profile(&self) -> Profile {
        self.model.profile.unwrap_or(if self.model.path.is_some() {
            Profile::Pretrained
        } else {
            Profile::Scratch
        })
    }

    fn pretrained(&self) -> bool {
        self.profile() == Profile::Pretrained
    }

    /// `model.finetune` resolved: LoRA when its settings are given or the model is pretrained.
    pub fn finetune(&self) -> Finetune {
        self.model
            .finetune
            .unwrap_or(if self.model.lora.is_some() || self.pretrained() {
                Finetune::Lora
            } else {
                Finetune::Full
            })
    }

    /// The LoRA adapter to add, when `finetune` is `lora`.
    pub fn lora(&self) -> Option<LoraConfig> {
        (self.finetune() == Finetune::Lora).then(|| self.model.lora.clone().unwrap_or_default())
    }

    /// `model.tiny` resolved: `max_position_embeddings = 0` becomes the longest sequence of an
    /// episode of this configuration (measured by rendering its last prompt with the tiny
    /// tokenizer, `crate::context`), rounded up to a multiple of 256 and at least 1024. A
    /// remote environment is not started for this: it gets 1024.
    pub fn tiny_config(&self) -> Result<TinyConfig> {
        let mut tiny = self.model.tiny.clone();
        if tiny.max_position_embeddings == 0 {
            let tokens = self.episode_tokens(&Tokenizer::tiny()?)?;
            tiny.max_position_embeddings = sized_context(tokens.unwrap_or(0));
        }
        Ok(tiny)
    }

    /// `rollout.max_new_tokens` resolved.
    pub fn max_new_tokens(&self) -> usize {
        self.rollout
            .max_new_tokens
            .unwrap_or(if self.pretrained() { 256 } else { 1 })
    }

    /// `update.old_logprobs` resolved.
    pub fn old_logprobs(&self) -> OldLogprobs {
        self.update.old_logprobs.unwrap_or(OldLogprobs::Recompute)
    }

    /// `rollout.history_length` resolved.
    pub fn history_length(&self) -> usize {
        self.rollout
            .history_length
            .unwrap_or(if self.pretrained() { 2 } else { 0 })
    }

    /// `rollout.instructions` resolved: on for a pretrained model or when a system prompt is
    /// given.
    pub fn instructions(&self) -> bool {
        self.rollout
            .instructions
            .unwrap_or(self.pretrained() || self.rollout.system_prompt.is_some())
    }

    /// `loss.beta` resolved.
    pub fn beta(&self) -> f64 {
        self.loss
            .beta
            .unwrap_or(if self.pretrained() { 0.01 } else { 0.0 })
    }

    /// `optim.lr` resolved.
    pub fn lr(&self) -> f64 {
        self.optim
            .lr
            .unwrap_or(match (self.profile(), self.finetune()) {
                (Profile::Scratch, _) if self.sft_levels() > 0 => SCRATCH_LR_AFTER_SFT,
                (Profile::Scratch, _) => 3e-3,
                (Profile::Pretrained, Finetune::Lora) => 1e-4,
                (Profile::Pretrained, Finetune::Full) => 1e-6,
            })
    }

    /// `sft.levels` resolved: the tiny model trained from scratch on the built-in Sokoban starts
    /// from a warm start on the solver's demonstrations; other setups start RL directly.
    pub fn sft_levels(&self) -> usize {
        self.sft.levels.unwrap_or(
            if !self.pretrained() && matches!(self.env, EnvSpec::Sokoban(_)) {
                SCRATCH_SFT_LEVELS
            } else {
                0
            },
        )
    }

    /// `update.micro_batch_size` resolved.
    pub fn micro_batch_size(&self) -> usize {
        self.update
            .micro_batch_size
            .unwrap_or(if self.pretrained() { 4 } else { 64 })
    }

    /// `update.recompute_activations` resolved.
    pub fn recompute_activations(&self) -> bool {
        self.update
            .recompute_activations
            .unwrap_or(self.pretrained())
    }

    /// How rollouts build prompts: the running chat with the trajectory layout, single-turn
    /// prompts with a history window with the step layout.
    pub fn prompt_style(&self) -> PromptStyle {
        PromptStyle {
            chat: self.sample_layout == SampleLayout::Trajectory,
            history_length: self.history_length(),
            history_action: self.rollout.history_action,
            instructions: self.instructions(),
            system_prompt: self.rollout.system_prompt.clone(),
            response_prefix: self.rollout.response_prefix.clone(),
        }
    }

    /// The configuration with every model-dependent default written out (what `--print-config`
    /// shows and the run directory records). The tiny model's context is sized only when it
    /// is the model trained.
    pub fn resolved(&self) -> Result<Self> {
        let mut c = self.clone();
        if self.model.path.is_none() {
            c.model.tiny = self.tiny_config()?;
        }
        c.model.profile = Some(self.profile());
        c.model.finetune = Some(self.finetune());
        c.model.lora = self.lora().or(c.model.lora);
        c.rollout.max_new_tokens = Some(self.max_new_tokens());
        c.rollout.history_length = Some(self.history_length());
        c.rollout.instructions = Some(self.instructions());
        c.loss.beta = Some(self.beta());
        c.optim.lr = Some(self.lr());
        c.sft.levels = Some(self.sft_levels());
        c.update.micro_batch_size = Some(self.micro_batch_size());
        c.update.old_logprobs = Some(self.old_logprobs());
        c.update.recompute_activations = Some(self.recompute_activations());
        Ok(c)
    }

    /// The loss settings with β resolved.
    pub fn loss_config(&self) -> LossConfig {
        LossConfig {
            beta: Some(self.beta()),
            ..self.loss.clone()
        }
    }

    /// The optimizer settings of the RL updates, with the learning rate resolved.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr(),
            ..self.optim.adamw.clone()
        }
    }

    /// The sampling parameters of training rollouts.
    pub fn sampling(&self) -> SamplingParams {
        self.rollout.sampling(self.max_new_tokens())
    }

    /// What the update phase reads, resolved.
    pub fn update_plan(&self) -> UpdatePlan {
        UpdatePlan {
            ppo_epochs: self.update.ppo_epochs,
            mini_batch_size: self.update.mini_batch_size,
            micro_batch_size: self.micro_batch_size(),
            old_logprobs: self.old_logprobs(),
            memory: TrainMemory {
                recompute: self.recompute_activations(),
            },
            loss: self.loss_config(),
            behaviour: LogitProcessing::from_sampling(&self.sampling()),
            seed: self.seed,
        }
    }

    /// What an evaluation reads, resolved.
    pub fn eval_plan(&self) -> EvalPlan {
        EvalPlan {
            env: self.env.clone(),
            seed: self.seed,
            eval: self.eval.clone(),
            max_steps: self.rollout.max_steps,
            max_new_tokens: self.max_new_tokens(),
            prompt: self.prompt_style(),
            stop: self.rollout.stop.clone(),
        }
    }

    /// What the warm start reads, resolved.
    pub fn sft_plan(&self) -> SftPlan {
        SftPlan {
            sft: self.sft.clone(),
            levels: self.sft_levels(),
            env: self.env.clone(),
            seed: self.seed,
            max_steps: self.rollout.max_steps,
            max_new_tokens: self.max_new_tokens(),
            prompt: self.prompt_style(),
            optim: self.adamw(),
            micro_batch_size: self.micro_batch_size(),
        }
    }

    /// The longest sequence of an episode of this configuration under `tok`
    /// (docs/training.md); `None` for a remote environment, which is not started for this.
    pub fn episode_tokens(&self, tok: &Tokenizer) -> Result<Option<usize>> {
        let Some((obs, instructions)) = self.first_observation()? else {
            return Ok(None);
        };
        let style = self.prompt_style();
        let system = style.system_turn(|| instructions);
        let shape = EpisodeShape {
            style: &style,
            instructions: system.as_deref(),
            max_steps: self.rollout.max_steps,
            max_new_tokens: self.max_new_tokens(),
        };
        Ok(Some(longest_sequence(tok, &shape, &obs)?))
    }

    /// The first observation and the instructions of a built-in environment (training level
    /// 0); `None` for a remote environment.
    fn first_observation(&self) -> Result<Option<(Observation, String)>> {
        if matches!(self.env, EnvSpec::Remote(_)) {
            return Ok(None);
        }
        let mut env = self.env.build()?;
        let obs = env.reset(SeedSplit::new(self.seed).train(0))?;
        Ok(Some((obs, env.instructions())))
    }
}
