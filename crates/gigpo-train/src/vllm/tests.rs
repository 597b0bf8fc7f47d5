//! The backend against a small stand-in server on loopback that speaks the same API (the
//! real server is tested in crates/gigpo-cli/tests/vllm_server.rs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use gigpo_model::{Device, LoraConfig};
use serde_json::{json, Value};

use super::*;

/// How the stand-in behaves, and what it was asked.
#[derive(Debug, Default)]
struct State {
    context: usize,
    /// Answer completions with 503.
    failing: bool,
    /// Report adapters as loaded from somewhere else.
    wrong_root: bool,
    completions: Vec<Value>,
    /// (name, path) of loaded adapters.
    adapters: Vec<(String, String)>,
}

struct Stand {
    url: String,
    state: Arc<Mutex<State>>,
}

impl Stand {
    fn start(context: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            context,
            ..State::default()
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let st = shared.clone();
                std::thread::spawn(move || answer(stream, &st));
            }
        });
        Self { url, state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn answer(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut length = 0;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, reply) = route(method, path, request, &mut state.lock().unwrap());
    let text = reply.to_string();
    let mut out = stream;
    let _ = write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn route(method: &str, path: &str, req: Value, st: &mut State) -> (u16, Value) {
    match (method, path) {
        ("GET", "/health") => (200, json!({})),
        ("GET", "/v1/models") => {
            let mut data = vec![
                json!({"id": "base", "root": "/models/base", "parent": null, "max_model_len": st.context}),
            ];
            for (name, path) in &st.adapters {
                let root = if st.wrong_root { "/elsewhere" } else { path };
                data.push(json!({"id": name, "root": root, "parent": "base"}));
            }
            (200, json!({"object": "list", "data": data}))
        }
        ("POST", "/v1/load_lora_adapter") => {
            let name = req["lora_name"].as_str().unwrap().to_string();
            let path = req["lora_path"].as_str().unwrap().to_string();
            assert_eq!(req["load_inplace"], json!(true));
            st.adapters.retain(|(n, _)| *n != name);
            st.adapters.push((name, path));
            (200, json!("Success"))
        }
        ("POST", "/v1/completions") if st.failing => {
            (503, json!({"error": {"message": "engine dead"}}))
        }
        ("POST", "/v1/completions") => {
            st.completions.push(req.clone());
            // "up" then the end of turn, with made-up log-probabilities.
            let up = Tokenizer::tiny().unwrap().encode("up").unwrap()[0];
            let eos = req["stop_token_ids"][0].as_u64().unwrap();
            let choice = json!({
                "index": 0, "text": "up", "token_ids": [up, eos],
                "logprobs": {"token_logprobs": [-0.5, -0.25], "tokens": ["up", "<|im_end|>"]},
                "finish_reason": "stop", "stop_reason": null,
            });
            (200, json!({"model": req["model"], "choices": [choice]}))
        }
        _ => (404, json!({"error": {"message": "no such route"}})),
    }
}

fn quick() -> VllmConfig {
    VllmConfig {
        retry_wait_s: 0.0,
        timeout_s: 5.0,
        ..VllmConfig::default()
    }
}

fn connect(urls: &[&str], root: &Path) -> Result<VllmSampler> {
    let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
    VllmSampler::connect(&urls, &quick(), root, Tokenizer::tiny().unwrap())
}

fn params() -> SamplingParams {
    SamplingParams {
        max_new_tokens: 8,
        ..SamplingParams::default()
    }
}

/// An address nothing listens on.
fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[test]
fn connecting_reads_the_smallest_context_and_names_a_dead_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (Stand::start(512), Stand::start(256));
    let s = connect(&[&a.url, &b.url], tmp.path()).unwrap();
    assert_eq!(s.context(), 256);
    let dead = dead_url();
    let e = connect(&[&a.url, &dead], tmp.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains(&dead) && e.contains("not healthy"), "{e}");
}

#[test]
fn rows_are_spread_over_endpoints_with_their_own_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (Stand::start(512), Stand::start(512));
    let s = connect(&[&a.url, &b.url], tmp.path()).unwrap();
    let prompts = vec![vec![5u32, 6, 7]; 6];
    let out = s.generate(&prompts, &params(), 42).unwrap();
    assert_eq!(out.len(), 6);
    for g in &out {
        let g = g.as_ref().unwrap();
        assert_eq!(g.tokens.len(), 2);
        assert_eq!(g.logprobs, vec![-0.5, -0.25]);
        assert_eq!(g.finish_reason, FinishReason::Eos);
        assert_eq!(
            g.text, "up",
            "decoded by the trainer's tokenizer, EOS left out"
        );
    }
    let reqs: Vec<Value> = a
        .state()
        .completions
        .iter()
        .chain(&b.state().completions)
        .cloned()
        .collect();
    assert_eq!(a.state().completions.len(), 3);
    assert_eq!(b.state().completions.len(), 3);
    let mut seeds: Vec<u64> = reqs.iter().map(|r| r["seed"].as_u64().unwrap()).collect();
    assert!(seeds.iter().all(|&x| x <= i64::MAX as u64));
    seeds.sort_unstable();
    seeds.dedup();
    assert_eq!(seeds.len(), 6, "every row its own seed");
    for r in &reqs {
        assert_eq!(r["model"], json!("gigpo"));
        assert_eq!(r["prompt"], json!([5, 6, 7]));
        assert_eq!(r["max_tokens"], json!(8));
        assert_eq!(r["logprobs"], json!(1));
        assert_eq!(r["return_token_ids"], json!(true));
    }
    // The same call again sends the same seeds.
    let again = s.generate(&prompts, &params(), 42).unwrap();
    assert_eq!(again.len(), 6);
    let first: Vec<u64> = reqs.iter().map(|r| r["seed"].as_u64().unwrap()).collect();
    let mut a_seeds: Vec<u64> = a.state().completions[3..]
        .iter()
        .map(|r| r["seed"].as_u64().unwrap())
        .collect();
    a_seeds.sort_unstable();
    let mut a_first = first[..3].to_vec();
    a_first.sort_unstable();
    assert_eq!(a_seeds, a_first);
}

#[test]
fn a_failing_endpoint_is_retried_elsewhere_and_stops_the_run_when_it_keeps_failing() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (Stand::start(512), Stand::start(512));
    let s = connect(&[&a.url, &b.url], tmp.path()).unwrap();
    a.state().failing = true;
    let prompts = vec![vec![5u32]; 4];
    for call in 1..=2 {
        let out = s.generate(&prompts, &params(), call).unwrap();
        assert!(
            out.iter().all(Result::is_ok),
            "retried on the other endpoint"
        );
    }
    assert_eq!(b.state().completions.len(), 8);
    let e = s.generate(&prompts, &params(), 3).unwrap_err().to_string();
    assert!(
        e.contains(&a.url) && e.contains("3 sampling calls in a row") && e.contains("engine dead"),
        "{e}"
    );
    // One good answer clears the count.
    a.state().failing = false;
    s.generate(&prompts, &params(), 4).unwrap();
    a.state().failing = true;
    s.generate(&prompts, &params(), 5).unwrap();
}

#[test]
fn a_dead_server_faults_the_rows_and_then_stops_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Stand::start(512);
    let s = connect(&[&a.url], tmp.path()).unwrap();
    a.state().failing = true;
    let prompts = vec![vec![5u32]; 3];
    for call in 1..=2 {
        let out = s.generate(&prompts, &params(), call).unwrap();
        for r in &out {
            let fault = r.as_ref().unwrap_err().to_string();
            assert!(fault.contains(&a.url) && fault.contains("503"), "{fault}");
        }
    }
    // Each row was tried 1 + retries times.
    let e = s.generate(&prompts, &params(), 3).unwrap_err().to_string();
    assert!(e.contains(&a.url), "{e}");
}

fn lora_policy() -> Policy {
    let mut p = Policy::tiny(&crate::small_tiny(64), 1, &Device::Cpu).unwrap();
    p.add_lora(LoraConfig::default()).unwrap();
    p
}

#[test]
fn every_endpoint_serves_each_adapter_version_and_old_ones_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (Stand::start(512), Stand::start(512));
    let mut s = connect(&[&a.url, &b.url], &tmp.path().join("adapters")).unwrap();
    let policy = lora_policy();
    for v in 0..3 {
        s.serve(&policy, v).unwrap();
        let path = s.adapter_path(v);
        assert!(path.join("adapter_model.safetensors").is_file());
        assert!(path.join("adapter_config.json").is_file());
        for stand in [&a, &b] {
            let st = stand.state();
            assert_eq!(
                st.adapters,
                vec![("gigpo".to_string(), path.display().to_string())]
            );
        }
    }
    assert_eq!(s.served(), Some(2));
    assert!(!s.adapter_path(0).exists(), "v0 removed");
    assert!(
        s.adapter_path(1).exists(),
        "the version served before is kept"
    );
    // Serving the same version again does nothing.
    a.state().adapters.clear();
    s.serve(&policy, 2).unwrap();
    assert!(a.state().adapters.is_empty());
}

#[test]
fn an_endpoint_serving_another_directory_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Stand::start(512);
    a.state().wrong_root = true;
    let mut s = connect(&[&a.url], tmp.path()).unwrap();
    let e = s.serve(&lora_policy(), 0).unwrap_err().to_string();
    assert!(e.contains(&a.url) && e.contains("/elsewhere"), "{e}");
}

#[test]
fn a_server_without_adapter_loading_gets_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Stand::start(512);
    let mut s = connect(&[&a.url], tmp.path()).unwrap();
    // The stand-in answers every unknown route with 404; point the load at one.
    s.endpoints[0].client = Client::new(&format!("{}/nowhere", a.url), Duration::from_secs(5), 1);
    let e = s.serve(&lora_policy(), 0).unwrap_err().to_string();
    assert!(e.contains("VLLM_ALLOW_RUNTIME_LORA_UPDATING"), "{e}");
}

#[test]
fn endpoint_lists_are_checked() {
    let ok = |l: &[&str]| check_endpoints(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    ok(&["http://127.0.0.1:8000", "http://gpu-1:8000/"]).unwrap();
    for (list, why) in [
        (&[][..], "at least one"),
        (&["https://x:1"][..], "https"),
        (&["127.0.0.1:8000"][..], "http://"),
        (&["http://"][..], "no host"),
        (&["http://a:1", "http://a:1/"][..], "twice"),
    ] {
        let e = ok(list).unwrap_err().to_string();
        assert!(e.contains("rollout.endpoints") && e.contains(why), "{e}");
    }
}
