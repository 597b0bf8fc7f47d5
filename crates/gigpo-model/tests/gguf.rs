//! GGUF loading: small GGUF files written here from Hugging Face checkpoints load to the same
//! model (Qwen2, and Llama with llama.cpp's q/k row permutation), bad files give errors that
//! name the file and the field, and the real SmolLM2-135M-Instruct Q4_1 file matches
//! transformers' GGUF loader (fixture from python/make_gguf_reference.py).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device as CDevice, Tensor};
use gigpo_model::*;
use serde_json::Value as Json;

/// Largest difference allowed between gigpo's and transformers' log-probabilities on the real
/// model: both run in f32 on bit-identical dequantized weights; measured 2.5e-4 at worst over
/// the fixture's 52 tokens (log-probabilities down to -13, 30 layers), where transformers in
/// f32 is within 3e-5 of its own f64 run.
const REAL_TOL: f32 = 5e-4;

fn read_json(path: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every tensor of a Hugging Face directory (single file or shards).
fn hf_tensors(dir: &Path) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "safetensors") {
            out.extend(candle_core::safetensors::load(&p, &CDevice::Cpu).unwrap());
        }
    }
    out
}

/// llama.cpp's name for a Hugging Face weight.
fn gguf_name(hf: &str) -> String {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, rest) = rest.split_once('.').unwrap();
    let (module, kind) = rest.rsplit_once('.').unwrap();
    let short = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        m => panic!("unexpected module {m}"),
    };
    format!("blk.{layer}.{short}.{kind}")
}

/// llama.cpp's converter permutation of q/k rows (`LlamaModel.permute`).
fn permute(t: &Tensor, heads: usize) -> Tensor {
    let dims = t.dims().to_vec();
    let mut split = vec![heads, 2, dims[0] / heads / 2];
    split.extend_from_slice(&dims[1..]);
    t.reshape(split)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape(dims)
        .unwrap()
}

/// What to leave out of or change in a written GGUF file.
#[derive(Default)]
struct Edit {
    drop_key: Option<&'static str>,
    drop_tensor: Option<&'static str>,
    set: Vec<(&'static str, Value)>,
}

fn tokenizer_metadata(dir: &Path) -> Vec<(String, Value)> {
    let tok = read_json(&dir.join("tokenizer.json"));
    let cfg = read_json(&dir.join("tokenizer_config.json"));
    let vocab = tok["model"]["vocab"].as_object().unwrap();
    let added = tok["added_tokens"].as_array().unwrap();
    let n = vocab.len() + added.len();
    let mut tokens = vec![String::new(); n];
    let mut types = vec![1i32; n];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    for a in added {
        let id = a["id"].as_u64().unwrap() as usize;
        tokens[id] = a["content"].as_str().unwrap().to_string();
        types[id] = if a["special"].as_bool().unwrap() {
            3
        } else {
            4
        };
    }
    let merges: Vec<Value> = tok["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Json::String(s) => Value::String(s.clone()),
            Json::Array(p) => Value::String(format!(
                "{} {}",
                p[0].as_str().unwrap(),
                p[1].as_str().unwrap()
            )),
            _ => panic!("merge {m}"),
        })
        .collect();
    let id_of = |field: &str| {
        let name = cfg[field].as_str()?;
        tokens.iter().position(|t| t == name).map(|i| i as u32)
    };
    let mut meta = vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.iter().cloned().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        (
            "tokenizer.chat_template".into(),
            Value::String(cfg["chat_template"].as_str().unwrap().into()),
        ),
    ];
    for (field, key) in [
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(id) = id_of(field) {
            meta.push((key.into(), Value::U32(id)));
        }
    }
    meta
}

fn model_metadata(cfg: &Json, arch: &str) -> Vec<(String, Value)> {
    let u = |k: &str| Value::U32(cfg[k].as_u64().unwrap() as u32);
    let theta = cfg["rope_parameters"]["rope_theta"]
        .as_f64()
        .or(cfg["rope_theta"].as_f64())
        .unwrap();
    let k = |s: &str| format!("{arch}.{s}");
    vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (k("context_length"), u("max_position_embeddings")),
        (k("embedding_length"), u("hidden_size")),
        (k("block_count"), u("num_hidden_layers")),
        (k("feed_forward_length"), u("intermediate_size")),
        (k("attention.head_count"), u("num_attention_heads")),
        (k("attention.head_count_kv"), u("num_key_value_heads")),
        (k("rope.freq_base"), Value::F32(theta as f32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(cfg["rms_norm_eps"].as_f64().unwrap() as f32),
        ),
    ]
}

/// Writes the Hugging Face directory `dir` as a GGUF file (f32 tensors), permuting the q/k
/// rows of Llama models as llama.cpp's converter does.
fn write_gguf(dir: &Path, out: &Path, edit: &Edit) {
    let cfg = read_json(&dir.join("config.json"));
    let arch = cfg["model_type"].as_str().unwrap();
    let heads = cfg["num_attention_heads"].as_u64().unwrap() as usize;
    let kv_heads = cfg["num_key_value_heads"].as_u64().unwrap() as usize;
    let mut meta = model_metadata(&cfg, arch);
    meta.extend(tokenizer_metadata(dir));
    meta.retain(|(k, _)| Some(k.as_str()) != edit.drop_key);
    for (k, v) in &edit.set {
        meta.retain(|(m, _)| m != k);
        meta.push((k.to_string(), v.clone()));
    }
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (name, t) in hf_tensors(dir) {
        let g = gguf_name(&name);
        if Some(g.as_str()) == edit.drop_tensor {
            continue;
        }
        let t = t.to_dtype(candle_core::DType::F32).unwrap();
        let t = match (arch, g.contains(".attn_q."), g.contains(".attn_k.")) {
            ("llama", true, _) => permute(&t, heads),
            ("llama", _, true) => permute(&t, kv_heads),
            _ => t,
        };
        tensors.push((g, QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(out).unwrap();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
}

/// A tiny Qwen2 checkpoint (GQA, merges, special and added tokens) saved as Hugging Face files.
fn tiny_qwen2_dir(root: &Path) -> PathBuf {
    let dir = root.join("qwen2");
    common::policy(3).save(&dir, SaveMode::Full).unwrap();
    dir
}

/// The Llama fixture (GQA, tied embeddings, bf16 shards) without its Llama 3 rope scaling,
/// which GGUF files carry as a separate tensor this loader does not read.
fn plain_llama_dir(root: &Path) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama");
    let dir = root.join("llama");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    let mut cfg = read_json(&dir.join("config.json"));
    cfg["rope_parameters"] = serde_json::json!({"rope_theta": 50000.0, "rope_type": "default"});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    dir
}

fn logits(p: &Policy, ids: &[u32]) -> Vec<Vec<f32>> {
    p.logits(ids, ScoreMode::OLD)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

fn assert_same_model(hf: &Policy, gg: &Policy) {
    assert_eq!(hf.config(), gg.config());
    let texts = [
        "Push the box left, then <think>up</think> <action>down</action>!",
        "<|im_start|>user\nÜnïcödé  spaces\n\n<|im_end|>",
    ];
    for text in texts {
        let a = hf.tokenizer().encode(text).unwrap();
        assert_eq!(a, gg.tokenizer().encode(text).unwrap(), "{text:?}");
        let diff = common::max_abs_diff(&logits(hf, &a), &logits(gg, &a));
        assert!(diff < 1e-5, "logits differ by {diff}");
    }
    let msgs = [ChatMessage::new("user", "hi")];
    assert_eq!(
        hf.tokenizer().apply_chat(&msgs, true).unwrap(),
        gg.tokenizer().apply_chat(&msgs, true).unwrap()
    );
    assert_eq!(hf.tokenizer().eos_ids(), gg.tokenizer().eos_ids());
    assert_eq!(hf.tokenizer().pad_id(), gg.tokenizer().pad_id());
}

#[test]
fn qwen2_gguf_loads_as_the_hf_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_qwen2_dir(tmp.path());
    let file = tmp.path().join("tiny.gguf");
    write_gguf(&dir, &file, &Edit::default());
    let hf = Policy::load(&dir, &Device::Cpu, None).unwrap();
    let gg = Policy::load(&file, &Device::Cpu, None).unwrap();
    assert_same_model(&hf, &gg);
}

#[test]
fn llama_gguf_rows_are_unpermuted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = plain_llama_dir(tmp.path());
    let file = tmp.path().join("llama.gguf");
    write_gguf(&dir, &file, &Edit::default());
    let hf = Policy::load(&dir, &Device::Cpu, None).unwrap();
    let gg = Policy::load(&file, &Device::Cpu, None).unwrap();
    assert!(gg.config().tie_word_embeddings);
    assert_same_model(&hf, &gg);
}

#[test]
fn converted_gguf_is_a_loadable_hf_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = plain_llama_dir(tmp.path());
    let file = tmp.path().join("llama.gguf");
    write_gguf(&dir, &file, &Edit::default());
    let out = tmp.path().join("converted");
    convert_gguf(&file, &out).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let tcfg = read_json(&out.join("tokenizer_config.json"));
    assert!(tcfg["chat_template"].as_str().unwrap().contains("im_start"));
    let hf = Policy::load(&dir, &Device::Cpu, None).unwrap();
    let back = Policy::load(&out, &Device::Cpu, None).unwrap();
    assert_same_model(&hf, &back);
}

#[test]
fn gguf_base_takes_lora_and_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_qwen2_dir(tmp.path());
    let file = tmp.path().join("tiny.gguf");
    write_gguf(&dir, &file, &Edit::default());
    let p = Policy::load(&file, &Device::Cpu, Some(LoraConfig::default())).unwrap();
    assert!(p.lora_config().is_some());
    let ad = tmp.path().join("adapter");
    p.save(&ad, SaveMode::AdapterOnly).unwrap();
    Policy::load_with_adapter(&file, &ad, &Device::Cpu).unwrap();
}

fn load_err(path: &Path) -> String {
    format!("{}", Policy::load(path, &Device::Cpu, None).unwrap_err())
}

#[test]
fn bad_files_give_errors_naming_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_qwen2_dir(tmp.path());
    let good = tmp.path().join("good.gguf");
    write_gguf(&dir, &good, &Edit::default());
    let bytes = std::fs::read(&good).unwrap();

    let text = tmp.path().join("notes.gguf");
    std::fs::write(&text, "hello, not a model").unwrap();
    let e = load_err(&text);
    assert!(
        e.contains("notes.gguf") && e.contains("not a GGUF file"),
        "{e}"
    );

    let e = load_err(&tmp.path().join("absent.gguf"));
    assert!(e.contains("absent.gguf") && e.contains("open"), "{e}");

    let empty = tmp.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(load_err(&empty).contains("not a GGUF file"));

    for (name, len) in [("head.gguf", 200), ("tail.gguf", bytes.len() - 64)] {
        let p = tmp.path().join(name);
        std::fs::write(&p, &bytes[..len]).unwrap();
        let e = load_err(&p);
        assert!(e.contains(name) && !e.contains('\n'), "{e}");
    }

    let cases: Vec<(Edit, &str)> = vec![
        (
            Edit {
                drop_key: Some("qwen2.block_count"),
                ..Edit::default()
            },
            "qwen2.block_count: missing",
        ),
        (
            Edit {
                drop_tensor: Some("blk.1.ffn_down.weight"),
                ..Edit::default()
            },
            "blk.1.ffn_down.weight",
        ),
        (
            Edit {
                set: vec![("general.architecture", Value::String("gemma".into()))],
                ..Edit::default()
            },
            "general.architecture: \"gemma\" unsupported",
        ),
        (
            Edit {
                set: vec![("tokenizer.ggml.model", Value::String("llama".into()))],
                ..Edit::default()
            },
            "tokenizer.ggml.model",
        ),
        (
            Edit {
                set: vec![("tokenizer.ggml.eos_token_id", Value::U32(99_999))],
                ..Edit::default()
            },
            "tokenizer.ggml.eos_token_id: id 99999 is outside",
        ),
    ];
    for (i, (edit, want)) in cases.into_iter().enumerate() {
        let p = tmp.path().join(format!("edit{i}.gguf"));
        write_gguf(&dir, &p, &edit);
        let e = load_err(&p);
        assert!(
            e.contains(want) && e.contains(&format!("edit{i}.gguf")),
            "{e}"
        );
    }
}

/// The real SmolLM2-135M-Instruct Q4_1 file, found through `GIGPO_SMOLLM2_GGUF` (scripts/test.sh
/// fetches it). Skipped when unset, except under CI, where it must be there.
fn smollm2_path() -> Option<PathBuf> {
    match std::env::var_os("GIGPO_SMOLLM2_GGUF") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but GIGPO_SMOLLM2_GGUF is not set (scripts/test.sh sets it)")
        }
        None => {
            eprintln!("skipping: GIGPO_SMOLLM2_GGUF is not set (scripts/test.sh sets it)");
            None
        }
    }
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Checks token ids, template text and response log-probabilities against the fixture;
/// returns the largest log-probability difference.
fn check_reference(p: &Policy, reference: &Json) -> f32 {
    let tok = p.tokenizer();
    let mut worst = 0f32;
    for case in reference["cases"].as_array().unwrap() {
        let msgs: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let text = tok.apply_chat(&msgs, true).unwrap();
        assert_eq!(text, case["prompt_text"].as_str().unwrap());
        let prompt = tok.encode(&text).unwrap();
        assert_eq!(prompt, ids(&case["prompt_ids"]));
        let response = tok.encode(case["response"].as_str().unwrap()).unwrap();
        assert_eq!(response, ids(&case["response_ids"]));
        let seq = [prompt.clone(), response].concat();
        let got = p
            .score(&[seq], &[prompt.len()], ScoreMode::OLD)
            .unwrap()
            .logprob_rows()
            .unwrap()
            .remove(0);
        let want: Vec<f32> = case["logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        worst = worst.max(common::max_abs_diff(&[got], &[want]));
    }
    worst
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let Some(path) = smollm2_path() else { return };
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/smollm2_gguf_reference.json");
    let reference = read_json(&fixture);
    let p = Policy::load(&path, &Device::Cpu, None).unwrap();
    let cfg = p.config();
    assert_eq!(
        (cfg.architecture, cfg.num_layers, cfg.hidden_size),
        (Architecture::Llama, 30, 576)
    );
    assert_eq!((cfg.num_heads, cfg.num_kv_heads), (9, 3));
    assert!(cfg.tie_word_embeddings);
    assert_eq!(p.tokenizer().vocab_size(), 49152);
    let eos = reference["eos_token_id"].as_u64().unwrap() as u32;
    assert!(p.tokenizer().eos_ids().contains(&eos));
    let diff = check_reference(&p, &reference);
    eprintln!("GGUF: largest log-probability difference {diff:e}");
    assert!(diff < REAL_TOL, "GGUF log-probabilities differ by {diff}");

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("smollm2");
    convert_gguf(&path, &out).unwrap();
    drop(p);
    let hf = Policy::load(&out, &Device::Cpu, None).unwrap();
    let diff = check_reference(&hf, &reference);
    eprintln!("converted directory: largest log-probability difference {diff:e}");
    assert!(
        diff < REAL_TOL,
        "converted log-probabilities differ by {diff}"
    );
}
