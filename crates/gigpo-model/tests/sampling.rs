//! Sampling: determinism per seed, stop strings, batches equal to one-at-a-time.

mod common;

use common::*;
use gigpo_model::*;

fn sampled() -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        top_p: 0.95,
        top_k: 100,
        max_new_tokens: 24,
        stop_strings: vec![],
    }
}

#[test]
fn same_seed_same_tokens_different_seed_different_tokens() {
    let p = policy(1);
    let pr = prompts(&p);
    let a = p.generate(&pr, &sampled(), 5).unwrap();
    let b = p.generate(&pr, &sampled(), 5).unwrap();
    let c = p.generate(&pr, &sampled(), 6).unwrap();
    assert_eq!(a, b);
    assert_ne!(
        a.iter().map(|g| &g.tokens).collect::<Vec<_>>(),
        c.iter().map(|g| &g.tokens).collect::<Vec<_>>()
    );
    // A second model built from the same seed samples the same.
    let q = policy(1);
    assert_eq!(q.generate(&pr, &sampled(), 5).unwrap(), a);
}

#[test]
fn mixed_length_batch_equals_one_at_a_time() {
    let p = policy(2);
    let pr = prompts(&p);
    assert!(pr[0].len() != pr[1].len() && pr[1].len() != pr[2].len());
    for params in [sampled(), SamplingParams::greedy(20)] {
        let batch = p.generate(&pr, &params, 11).unwrap();
        for (i, g) in batch.iter().enumerate() {
            let alone = p
                .generate_seeded(&pr[i..=i], &params, &[row_seed(11, i)])
                .unwrap();
            assert_eq!(g.tokens, alone[0].tokens, "row {i}");
            assert_eq!(g.finish_reason, alone[0].finish_reason);
            let d = max_abs_diff(
                std::slice::from_ref(&g.logprobs),
                std::slice::from_ref(&alone[0].logprobs),
            );
            assert!(d < 1e-4, "row {i}: logprobs differ by {d}");
        }
    }
}

/// Generations of the test prompts, and each prompt followed by its response.
struct Sampled {
    /// The log-probabilities `generate` reported, one row per prompt.
    logprobs: Vec<Vec<f32>>,
    /// Prompt + response of each row.
    seqs: Vec<Vec<u32>>,
    /// Where each response starts in its row.
    starts: Vec<usize>,
}

fn sample(p: &Policy, params: &SamplingParams, seed: u64) -> Sampled {
    let pr = prompts(p);
    assert!(pr[0].len() != pr[1].len() && pr[1].len() != pr[2].len());
    let gens = p.generate(&pr, params, seed).unwrap();
    Sampled {
        logprobs: gens.iter().map(|g| g.logprobs.clone()).collect(),
        seqs: pr
            .iter()
            .zip(&gens)
            .map(|(a, g)| [a.clone(), g.tokens.clone()].concat())
            .collect(),
        starts: pr.iter().map(Vec::len).collect(),
    }
}

/// Max and mean |generate's log-probabilities − score_with's| for the same prompt + response.
fn behaviour_mismatch(p: &Policy, params: &SamplingParams, seed: u64) -> (f32, f32) {
    let sampled = sample(p, params, seed);
    let processing = LogitProcessing::from_sampling(params);
    let s = p
        .score_with(&sampled.seqs, &sampled.starts, ScoreMode::OLD, &processing)
        .unwrap();
    let got = s.logprob_rows().unwrap();
    let want = &sampled.logprobs;
    let diffs: Vec<f32> = got
        .iter()
        .zip(want)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .collect();
    assert!(!diffs.is_empty());
    let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
    (max_abs_diff(&got, want), mean)
}

#[test]
fn generation_logprobs_equal_scores() {
    let p = policy(3);
    for params in [sampled(), SamplingParams::greedy(24)] {
        let (max, mean) = behaviour_mismatch(&p, &params, 9);
        assert!(
            max < 1e-4 && mean < 1e-5,
            "{params:?}: max {max}, mean {mean}"
        );
    }
}

#[test]
fn generation_logprobs_are_those_of_the_processed_distribution() {
    let p = policy(4);
    for (top_p, top_k) in [(0.9, 0), (0.9, 20), (1.0, 20)] {
        let params = SamplingParams {
            temperature: 0.7,
            top_p,
            top_k,
            max_new_tokens: 24,
            stop_strings: vec![],
        };
        let (max, mean) = behaviour_mismatch(&p, &params, 21);
        assert!(
            max < 1e-4 && mean < 1e-5,
            "{params:?}: max {max}, mean {mean}"
        );
        // They differ from the raw distribution's.
        let sampled = sample(&p, &params, 21);
        let raw = p
            .score(&sampled.seqs, &sampled.starts, ScoreMode::OLD)
            .unwrap();
        assert!(max_abs_diff(&raw.logprob_rows().unwrap(), &sampled.logprobs) > 1e-2);
    }
}

#[test]
fn processed_scores_exclude_tokens_outside_the_kept_set() {
    let p = policy(5);
    let pr = prompts(&p);
    let seq = pr[0].clone();
    let logits = p.logits(&seq, ScoreMode::OLD).unwrap();
    let last: Vec<f32> = logits.get(seq.len() - 1).unwrap().to_vec1().unwrap();
    let worst = (0..last.len())
        .min_by(|&a, &b| last[a].total_cmp(&last[b]))
        .unwrap() as u32;
    let best = (0..last.len())
        .max_by(|&a, &b| last[a].total_cmp(&last[b]))
        .unwrap() as u32;
    let k = LogitProcessing {
        temperature: 0.5,
        top_k: 3,
        top_p: 1.0,
    };
    let seqs = vec![
        [seq.clone(), vec![worst]].concat(),
        [seq.clone(), vec![best]].concat(),
    ];
    let starts = vec![seq.len(); 2];
    let s = p.score_with(&seqs, &starts, ScoreMode::OLD, &k).unwrap();
    let rows = s.logprob_rows().unwrap();
    assert_eq!(rows[0][0], EXCLUDED_LOGPROB);
    // The best token under T = 0.5 over its top 3: logit/T − logsumexp of the three.
    let mut top: Vec<f32> = last.clone();
    top.sort_by(|a, b| b.total_cmp(a));
    let z: Vec<f32> = top[..3].iter().map(|l| l / 0.5).collect();
    let lse = z[0] + z.iter().map(|v| (v - z[0]).exp()).sum::<f32>().ln();
    assert!((rows[1][0] - (z[0] - lse)).abs() < 1e-5);
    let ent = s.entropy_rows().unwrap();
    let want: f32 = -z.iter().map(|v| (v - lse).exp() * (v - lse)).sum::<f32>();
    assert!((ent[1][0] - want).abs() < 1e-5);
    let bad = LogitProcessing {
        temperature: 0.0,
        ..k
    };
    assert!(p.score_with(&seqs, &starts, ScoreMode::OLD, &bad).is_err());
}

#[test]
fn stop_string_ends_generation() {
    let p = policy(4);
    let pr = prompts(&p);
    let params = SamplingParams {
        max_new_tokens: 16,
        ..sampled()
    };
    let free = p.generate(&pr[..1], &params, 3).unwrap().remove(0);
    assert!(free.tokens.len() >= 6, "need a long enough sample");
    // Stop at the last three characters of the text of the first five tokens.
    let head = p.tokenizer().decode_raw(&free.tokens[..5]).unwrap();
    let stop: String = head
        .chars()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let with_stop = SamplingParams {
        stop_strings: vec!["never-produced-xyz".into(), stop.clone()],
        ..params
    };
    let g = p.generate(&pr[..1], &with_stop, 3).unwrap().remove(0);
    assert_eq!(g.finish_reason, FinishReason::Stop(stop.clone()));
    assert!(g.tokens.len() <= 5 && free.tokens.starts_with(&g.tokens));
    let text = p.tokenizer().decode_raw(&g.tokens).unwrap();
    assert!(text.contains(&stop));
    let shorter = p
        .tokenizer()
        .decode_raw(&g.tokens[..g.tokens.len() - 1])
        .unwrap();
    assert!(!shorter.contains(&stop), "stopped one token late");
}

#[test]
fn eos_ends_generation_and_length_limit_holds() {
    let p = policy(5);
    let pr = prompts(&p);
    let eos = p.tokenizer().eos_ids()[0];
    for seed in 0..20 {
        for g in p
            .generate(
                &pr,
                &SamplingParams {
                    max_new_tokens: 6,
                    ..sampled()
                },
                seed,
            )
            .unwrap()
        {
            assert!(g.tokens.len() <= 6);
            match g.finish_reason {
                FinishReason::Eos => assert_eq!(*g.tokens.last().unwrap(), eos),
                FinishReason::Length => assert_eq!(g.tokens.len(), 6),
                FinishReason::Stop(_) => panic!("no stop strings given"),
            }
            assert!(!g.tokens[..g.tokens.len() - 1].contains(&eos));
        }
    }
}

#[test]
fn greedy_top_k_one_and_tiny_temperature_agree() {
    let p = policy(6);
    let pr = prompts(&p);
    let greedy = p.generate(&pr, &SamplingParams::greedy(10), 0).unwrap();
    let topk1 = p
        .generate(
            &pr,
            &SamplingParams {
                top_k: 1,
                max_new_tokens: 10,
                ..SamplingParams::default()
            },
            77,
        )
        .unwrap();
    for (a, b) in greedy.iter().zip(&topk1) {
        assert_eq!(a.tokens, b.tokens);
    }
}

/// The message of an error that must be there.
fn error(r: Result<Vec<Generation>>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn bad_sampling_arguments_are_errors() {
    let p = policy(7);
    let pr = prompts(&p);
    let bad = SamplingParams {
        top_p: 0.0,
        ..sampled()
    };
    assert!(error(p.generate(&pr, &bad, 0)).contains("top_p"));
    let bad = SamplingParams {
        temperature: -1.0,
        ..sampled()
    };
    assert!(error(p.generate(&pr, &bad, 0)).contains("temperature"));
    assert!(error(p.generate(&[vec![]], &sampled(), 0)).contains("empty"));
    assert!(error(p.generate(&[vec![100_000]], &sampled(), 0)).contains("vocabulary"));
    assert!(error(p.generate_seeded(&pr, &sampled(), &[1])).contains("seeds"));
}
