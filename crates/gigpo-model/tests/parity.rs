//! Parity with Hugging Face transformers on the fixtures made by python/make_model_fixtures.py.

use std::path::PathBuf;

use gigpo_model::*;
use serde_json::Value;

fn fixture(name: &str) -> (PathBuf, Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
    (dir, serde_json::from_str(&text).expect("valid JSON"))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check_logits(name: &str) {
    let (dir, exp) = fixture(name);
    let policy = Policy::load(&dir, &Device::Cpu, None).unwrap();
    for (p, want) in exp["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(exp["logits"].as_array().unwrap())
    {
        let prompt = ids(p);
        for mode in [ScoreMode::OLD, ScoreMode::TRAIN] {
            let got = policy
                .logits(&prompt, mode)
                .unwrap()
                .detach()
                .to_vec2::<f32>()
                .unwrap();
            let mut max_diff = 0f32;
            for (grow, wrow) in got.iter().zip(want.as_array().unwrap()) {
                for (g, w) in grow.iter().zip(wrow.as_array().unwrap()) {
                    max_diff = max_diff.max((g - w.as_f64().unwrap() as f32).abs());
                }
            }
            assert_eq!(got.len(), prompt.len());
            assert!(
                max_diff < 1e-4,
                "{name} {mode:?}: logits differ by {max_diff}"
            );
        }
    }
}

fn check_greedy(name: &str) {
    let (dir, exp) = fixture(name);
    let policy = Policy::load(&dir, &Device::Cpu, None).unwrap();
    let prompts: Vec<Vec<u32>> = exp["prompts"].as_array().unwrap().iter().map(ids).collect();
    let max_new = exp["max_new_tokens"].as_u64().unwrap() as usize;
    let want: Vec<Vec<u32>> = exp["greedy"].as_array().unwrap().iter().map(ids).collect();
    // Batched (mixed lengths, left padding) and one at a time must both match transformers.
    let batched = policy
        .generate(&prompts, &SamplingParams::greedy(max_new), 0)
        .unwrap();
    for (i, (g, w)) in batched.iter().zip(&want).enumerate() {
        let single = policy
            .generate(&prompts[i..=i], &SamplingParams::greedy(max_new), 0)
            .unwrap();
        for got in [g, &single[0]] {
            match got.finish_reason {
                FinishReason::Length => assert_eq!(&got.tokens, w, "{name} prompt {i}"),
                _ => assert_eq!(got.tokens[..], w[..got.tokens.len()], "{name} prompt {i}"),
            }
        }
    }
}

fn check_chat(name: &str) {
    let (dir, exp) = fixture(name);
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let msgs: Vec<ChatMessage> = serde_json::from_value(exp["chat_messages"].clone()).unwrap();
    let text = tok.apply_chat(&msgs, true).unwrap();
    assert_eq!(text, exp["chat_text"].as_str().unwrap());
}

#[test]
fn qwen2_logits_match_transformers() {
    check_logits("qwen2");
}

#[test]
fn llama_logits_match_transformers() {
    check_logits("llama");
}

#[test]
fn qwen2_greedy_matches_transformers() {
    check_greedy("qwen2");
}

#[test]
fn llama_greedy_matches_transformers() {
    check_greedy("llama");
}

#[test]
fn chat_template_matches_transformers() {
    check_chat("qwen2");
}

#[test]
fn llama_config_is_read() {
    let (dir, _) = fixture("llama");
    let policy = Policy::load(&dir, &Device::Cpu, None).unwrap();
    let c = policy.config();
    assert_eq!(c.architecture, Architecture::Llama);
    assert!(c.tie_word_embeddings);
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 2, 16));
    assert_eq!(c.rope_theta, 50000.0);
    assert!(c.rope_scaling.is_some());
}

fn copy_fixture(name: &str, skip: &[&str]) -> tempfile::TempDir {
    let (dir, _) = fixture(name);
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let f = e.file_name().to_string_lossy().into_owned();
        if !skip.contains(&f.as_str()) {
            std::fs::copy(e.path(), tmp.path().join(&f)).unwrap();
        }
    }
    tmp
}

#[test]
fn missing_files_are_named() {
    for (name, skip) in [
        ("qwen2", "config.json"),
        ("qwen2", "model.safetensors"),
        ("qwen2", "tokenizer.json"),
        ("llama", "model-00002-of-00002.safetensors"),
    ] {
        let tmp = copy_fixture(name, &[skip]);
        let err = Policy::load(tmp.path(), &Device::Cpu, None).unwrap_err();
        assert!(matches!(err, ModelError::MissingFile { .. }), "{err}");
        let msg = err.to_string();
        let wanted = if skip == "model.safetensors" {
            "model.safetensors"
        } else {
            skip
        };
        assert!(msg.contains(wanted), "{msg}");
    }
}

#[test]
fn missing_weight_and_bad_config_are_named() {
    let tmp = copy_fixture("qwen2", &[]);
    let cfg_path = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    // One more layer than the file has.
    std::fs::write(
        &cfg_path,
        text.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"),
    )
    .unwrap();
    let err = Policy::load(tmp.path(), &Device::Cpu, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.layers.2."), "{err}");
    std::fs::write(
        &cfg_path,
        text.replace("Qwen2ForCausalLM", "GPT2LMHeadModel"),
    )
    .unwrap();
    let err = Policy::load(tmp.path(), &Device::Cpu, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("GPT2LMHeadModel"), "{err}");
    std::fs::write(&cfg_path, "{ not json").unwrap();
    let err = Policy::load(tmp.path(), &Device::Cpu, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::write(
        &cfg_path,
        text.replace("\"hidden_size\": 64", "\"hidden_size\": 32"),
    )
    .unwrap();
    let err = Policy::load(tmp.path(), &Device::Cpu, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("shape"), "{err}");
}

#[test]
fn loaded_model_trains_with_lora_and_saves_loadable_merged_weights() {
    let (dir, exp) = fixture("llama");
    let lora = LoraConfig {
        rank: 2,
        alpha: 4.0,
        target_modules: vec![TargetModule::QProj, TargetModule::VProj],
        ..LoraConfig::default()
    };
    let p = Policy::load(&dir, &Device::Cpu, Some(lora)).unwrap();
    let prompt = ids(&exp["prompts"][0]);
    let s = p
        .score(std::slice::from_ref(&prompt), &[3], ScoreMode::TRAIN)
        .unwrap();
    let mut opt = AdamW::new(
        p.named_trainable_vars().to_vec(),
        AdamWConfig {
            lr: 1e-2,
            ..AdamWConfig::default()
        },
    )
    .unwrap();
    opt.step(&s.logprobs.sum_all().unwrap().backward().unwrap())
        .unwrap();
    let on = p
        .score(std::slice::from_ref(&prompt), &[3], ScoreMode::OLD)
        .unwrap()
        .logprob_rows()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    p.save(tmp.path(), SaveMode::Merged).unwrap();
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["torch_dtype"], "bfloat16");
    let m = Policy::load(tmp.path(), &Device::Cpu, None).unwrap();
    let ms = m
        .score(&[prompt], &[3], ScoreMode::OLD)
        .unwrap()
        .logprob_rows()
        .unwrap();
    // bfloat16 storage rounds the merged weights.
    let d = on[0]
        .iter()
        .zip(&ms[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(d < 0.1, "{d}");
}
