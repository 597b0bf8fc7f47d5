//! Collecting episodes: `groups × group_size` environments, each group reset with one seed, all
//! running environments sampled in one `generate` batch per step (docs/training.md,
//! docs/environments.md).
//!
//! Deterministic: the same policy weights, seeds and `sample_seed` give the same episodes (the
//! sampling seed of step t is derived from `sample_seed` and t; row i of the batch from that and
//! i).

use std::collections::HashSet;
use std::time::Instant;

use gigpo_env::pool::{EnvIndex, EnvPool, PoolConfig};
use gigpo_env::seed::mix_seed;
use gigpo_env::spec::EnvSpec;
use gigpo_model::SamplingParams;

use crate::context::{longest_sequence, EpisodeShape};
use crate::error::Result;
use crate::prompt::{next_prompt, PastTurn, PromptStyle};
use crate::sampler::{RowFault, Sampler};

mod config;
mod record;

pub use config::{RolloutBackend, RolloutConfig, MAX_EPISODES, MAX_REPLY_TOKENS};
pub use record::{EpisodeStats, Rollout, StepRecord, TrajectoryRecord};

/// What to collect.
#[derive(Debug, Clone)]
pub struct RolloutPlan<'a> {
    /// The environment.
    pub env: &'a EnvSpec,
    /// One level seed per group.
    pub seeds: &'a [u64],
    /// Trajectories per group.
    pub group_size: usize,
    /// Trainer step limit per episode.
    pub max_steps: usize,
    /// How prompts are built.
    pub prompt: PromptStyle,
    /// Sampling parameters.
    pub sampling: &'a SamplingParams,
    /// Seed of the sampling randomness.
    pub sample_seed: u64,
}

/// Runs every episode of `plan` to its end or to `max_steps`, sampling with `sampler`.
///
/// A prompt the sampler could not answer ([`RowFault`]) ends its episode with a faulted step
/// (no response, truncated), as an environment fault does.
pub fn collect(sampler: &dyn Sampler, plan: &RolloutPlan<'_>) -> Result<Rollout> {
    let start = Instant::now();
    let groups = plan.seeds.len();
    let mut pool = EnvPool::from_fn(groups, plan.group_size, PoolConfig::default(), || {
        plan.env.build()
    })?;
    let instructions = plan
        .prompt
        .system_turn(|| pool.env(EnvIndex(0)).instructions());
    let faults_before = pool.fault_count();
    let resets = pool.reset_groups(plan.seeds)?;
    let mut trajectories: Vec<TrajectoryRecord> = resets
        .iter()
        .map(|r| TrajectoryRecord {
            group: r.group.0,
            member: r.index.0 % plan.group_size,
            seed: plan.seeds[r.group.0],
            steps: Vec::new(),
        })
        .collect();
    let tok = sampler.tokenizer();
    let shape = EpisodeShape {
        style: &plan.prompt,
        instructions: instructions.as_deref(),
        max_steps: plan.max_steps,
        max_new_tokens: plan.sampling.max_new_tokens,
    };
    if let Some(obs) = pool.active().first().and_then(|&i| pool.observation(i)) {
        let needed = longest_sequence(tok, &shape, obs)?;
        sampler.fits(&plan.prompt, needed, plan.max_steps)?;
    }
    let mut cut: HashSet<EnvIndex> = HashSet::new();
    let (mut generated_tokens, mut prompt_tokens) = (0, 0);
    for t in 0..plan.max_steps {
        let active: Vec<EnvIndex> = pool
            .active()
            .into_iter()
            .filter(|i| !cut.contains(i))
            .collect();
        if active.is_empty() {
            break;
        }
        let mut turns = Vec::with_capacity(active.len());
        for &index in &active {
            let obs = pool
                .observation(index)
                .cloned()
                .expect("an active environment has an observation");
            let past: Vec<PastTurn<'_>> =
                trajectories[index.0].steps.iter().map(Into::into).collect();
            let (user, prompt) =
                next_prompt(tok, &plan.prompt, instructions.as_deref(), &past, &obs)?;
            let needed = prompt.len() + plan.sampling.max_new_tokens;
            sampler.fits(&plan.prompt, needed, t + 1)?;
            turns.push(Turn {
                index,
                prompt,
                user,
                obs,
            });
        }
        prompt_tokens += turns.iter().map(|x| x.prompt.len()).sum::<usize>();
        let prompts: Vec<Vec<u32>> = turns.iter().map(|x| x.prompt.clone()).collect();
        let gens = sampler.generate(
            &prompts,
            plan.sampling,
            mix_seed(plan.sample_seed, t as u64),
        )?;
        let mut sampled = Vec::with_capacity(turns.len());
        for (turn, gen) in turns.into_iter().zip(gens) {
            match gen {
                Ok(gen) => sampled.push((turn, gen)),
                Err(fault) => {
                    cut.insert(turn.index);
                    trajectories[turn.index.0].steps.push(turn.faulted(&fault));
                }
            }
        }
        generated_tokens += sampled.iter().map(|(_, g)| g.tokens.len()).sum::<usize>();
        if sampled.is_empty() {
            continue;
        }
        let actions: Vec<(EnvIndex, String)> = sampled
            .iter()
            .map(|(turn, g)| (turn.index, plan.prompt.answer_text(&g.text)))
            .collect();
        let results = pool.step(&actions)?;
        let last = t + 1 == plan.max_steps;
        for (res, (turn, gen)) in results.into_iter().zip(sampled) {
            let o = res.outcome;
            trajectories[res.index.0].steps.push(StepRecord {
                prompt: turn.prompt,
                user: turn.user,
                response: gen.tokens,
                logprobs: gen.logprobs,
                observation: turn.obs.text,
                admissible: turn.obs.admissible_actions,
                action_text: plan.prompt.answer_text(&gen.text),
                anchor: turn.obs.anchor,
                reward: o.reward,
                action_valid: o.action_valid,
                won: o.won,
                terminated: o.terminated,
                truncated: o.truncated || (last && !o.terminated),
                fault: res.fault,
                advantage: None,
            });
        }
    }
    Ok(Rollout {
        trajectories,
        instructions,
        faults: pool.fault_count() - faults_before,
        sampler_faults: cut.len() as u64,
        generated_tokens,
        prompt_tokens,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// One running episode's turn: its prompt, before the sampler answers it.
struct Turn {
    index: EnvIndex,
    prompt: Vec<u32>,
    user: String,
    obs: gigpo_env::Observation,
}

impl Turn {
    /// The step of a turn the sampler could not answer: no response, no reward, the episode
    /// cut off, left out of advantages and loss.
    fn faulted(self, fault: &RowFault) -> StepRecord {
        StepRecord {
            prompt: self.prompt,
            user: self.user,
            response: Vec::new(),
            logprobs: Vec::new(),
            observation: self.obs.text,
            admissible: self.obs.admissible_actions,
            action_text: String::new(),
            anchor: self.obs.anchor,
            reward: 0.0,
            action_valid: true,
            won: false,
            terminated: false,
            truncated: true,
            fault: Some(format!("sampler: {fault}")),
            advantage: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::HistoryAction;
    use gigpo_core::AdvantageConfig;
    use gigpo_env::sokoban::SokobanConfig;
    use gigpo_model::{Device, Generation, Policy, Tokenizer};

    fn tiny() -> Policy {
        Policy::tiny(&crate::small_tiny(16), 3, &Device::Cpu).unwrap()
    }

    fn plan<'a>(
        env: &'a EnvSpec,
        seeds: &'a [u64],
        sampling: &'a SamplingParams,
    ) -> RolloutPlan<'a> {
        RolloutPlan {
            env,
            seeds,
            group_size: 3,
            max_steps: 4,
            prompt: PromptStyle {
                chat: false,
                history_length: 2,
                history_action: HistoryAction::Parsed,
                instructions: false,
                system_prompt: None,
                response_prefix: String::new(),
            },
            sampling,
            sample_seed: 11,
        }
    }

    #[test]
    fn groups_share_levels_and_collection_is_deterministic() {
        let env = EnvSpec::Sokoban(SokobanConfig::default());
        let sampling = SamplingParams {
            max_new_tokens: 2,
            ..SamplingParams::default()
        };
        let seeds = [5, 9];
        let policy = tiny();
        let a = collect(&policy, &plan(&env, &seeds, &sampling)).unwrap();
        let b = collect(&policy, &plan(&env, &seeds, &sampling)).unwrap();
        assert_eq!(a.trajectories, b.trajectories);
        assert_eq!(a.trajectories.len(), 6);
        for t in &a.trajectories {
            // Random tiny model: tagged format never parses, so every episode runs 4 steps.
            assert_eq!(t.steps.len(), 4);
            assert!(t
                .steps
                .iter()
                .all(|s| !s.action_valid && s.response.len() == s.logprobs.len()));
            assert!(t.steps[3].truncated);
            let first = &a.trajectories[t.group * 3].steps[0];
            assert_eq!(
                t.steps[0].anchor, first.anchor,
                "members of a group start from one level"
            );
        }
        assert_ne!(
            a.trajectories[0].steps[0].anchor,
            a.trajectories[3].steps[0].anchor
        );
        // The second prompt carries the first step as history.
        let text = policy
            .tokenizer()
            .decode_raw(&a.trajectories[0].steps[1].prompt)
            .unwrap();
        assert!(
            text.contains("Previous steps:") && text.contains("Current observation:"),
            "{text}"
        );
        let stats = a.stats();
        assert_eq!(stats.episodes, 6);
        assert_eq!(stats.invalid_action_rate, 1.0);
        assert_eq!(stats.episode_length, 4.0);
        assert!((stats.mean_return - (-0.4)).abs() < 1e-9);
    }

    /// The policy, each row of its answers passed through `edit(call, row, generation)`.
    struct Edited {
        policy: Policy,
        edit: fn(usize, usize, Generation) -> crate::sampler::RowResult,
        calls: std::cell::Cell<usize>,
    }

    impl Edited {
        fn new(edit: fn(usize, usize, Generation) -> crate::sampler::RowResult) -> Self {
            Self {
                policy: tiny(),
                edit,
                calls: Default::default(),
            }
        }
    }

    impl Sampler for Edited {
        fn tokenizer(&self) -> &Tokenizer {
            self.policy.tokenizer()
        }

        fn generate(
            &self,
            prompts: &[Vec<u32>],
            params: &SamplingParams,
            seed: u64,
        ) -> Result<Vec<crate::sampler::RowResult>> {
            let call = self.calls.replace(self.calls.get() + 1);
            let gens: Vec<Generation> = self.policy.generate(prompts, params, seed)?;
            Ok(gens
                .into_iter()
                .enumerate()
                .map(|(i, g)| (self.edit)(call, i, g))
                .collect())
        }

        fn fits(&self, style: &PromptStyle, needed: usize, turns: usize) -> Result<()> {
            self.policy.fits(style, needed, turns)
        }
    }

    #[test]
    fn a_sampler_fault_ends_the_episode_as_a_fault() {
        let env = EnvSpec::Sokoban(SokobanConfig::default());
        let sampling = SamplingParams {
            max_new_tokens: 2,
            ..SamplingParams::default()
        };
        let seeds = [5, 9];
        // In the second call the rows with an odd number fault.
        let flaky = Edited::new(|call, i, g| {
            if call == 1 && i % 2 == 1 {
                Err(RowFault(format!("server gone (row {i})")))
            } else {
                Ok(g)
            }
        });
        let r = collect(&flaky, &plan(&env, &seeds, &sampling)).unwrap();
        let clean = collect(&flaky.policy, &plan(&env, &seeds, &sampling)).unwrap();
        // Rows 1, 3, 5 of the second call fault: their episodes end after one good step.
        assert_eq!(r.sampler_faults, 3);
        assert_eq!(r.faults, 0, "no environment faulted");
        for (k, t) in r.trajectories.iter().enumerate() {
            if k % 2 == 1 {
                assert_eq!(t.steps.len(), 2, "episode {k}");
                let s = &t.steps[1];
                assert!(s
                    .fault
                    .as_deref()
                    .unwrap()
                    .starts_with("sampler: server gone"));
                assert!(s.truncated && s.response.is_empty() && s.logprobs.is_empty());
                assert_eq!(s.reward, 0.0);
                assert_eq!(s.prompt, clean.trajectories[k].steps[1].prompt);
                assert_eq!(t.steps[0], clean.trajectories[k].steps[0]);
            } else {
                assert_eq!(t.steps.len(), 4, "episode {k}");
                assert!(t.steps.iter().all(|s| s.fault.is_none()));
            }
        }
        // Faulted steps get no advantage and no training sample.
        let mut r = r;
        r.assign_advantages(&AdvantageConfig::default()).unwrap();
        let samples = r.samples(crate::samples::SampleLayout::Step).unwrap();
        assert_eq!(samples.len(), 3 + 3 * 4);
    }

    #[test]
    fn the_response_prefix_ends_the_prompt_and_starts_the_answer() {
        let env = EnvSpec::Sokoban(SokobanConfig::default());
        let sampling = SamplingParams {
            max_new_tokens: 2,
            ..SamplingParams::default()
        };
        let seeds = [5];
        // The policy's tokens, but every answer's text is "up</action>".
        let answers = Edited::new(|_, _, g| {
            Ok(Generation {
                text: "up</action>".into(),
                ..g
            })
        });
        let without = collect(&answers, &plan(&env, &seeds, &sampling)).unwrap();
        assert!(without.trajectories[0]
            .steps
            .iter()
            .all(|s| !s.action_valid));
        let mut with = plan(&env, &seeds, &sampling);
        with.prompt.response_prefix = "<action>".into();
        let r = collect(&answers, &with).unwrap();
        let step = &r.trajectories[0].steps[0];
        assert!(step.action_valid, "the environment reads prefix + answer");
        assert_eq!(step.action_text, "<action>up</action>");
        let prompt = answers.tokenizer().decode_raw(&step.prompt).unwrap();
        assert!(
            prompt.ends_with("<|im_start|>assistant\n<action>"),
            "{prompt}"
        );
        let second = answers
            .tokenizer()
            .decode_raw(&r.trajectories[0].steps[1].prompt)
            .unwrap();
        assert!(
            second.contains("Action: up\n"),
            "history shows the parsed action: {second}"
        );
    }

    #[test]
    fn a_system_prompt_replaces_the_instructions() {
        let env = EnvSpec::Sokoban(SokobanConfig::default());
        let sampling = SamplingParams {
            max_new_tokens: 1,
            ..SamplingParams::default()
        };
        let seeds = [5];
        let policy = tiny();
        let mut p = plan(&env, &seeds, &sampling);
        p.max_steps = 1;
        p.prompt.instructions = true;
        p.prompt.system_prompt = Some("Push the box.".into());
        let r = collect(&policy, &p).unwrap();
        assert_eq!(r.instructions.as_deref(), Some("Push the box."));
        let prompt = policy
            .tokenizer()
            .decode_raw(&r.trajectories[0].steps[0].prompt)
            .unwrap();
        assert!(
            prompt.starts_with("<|im_start|>system\nPush the box.<|im_end|>"),
            "{prompt}"
        );
        p.prompt.instructions = false;
        let r = collect(&policy, &p).unwrap();
        assert_eq!(r.instructions, None, "instructions off: no system turn");
    }
}
