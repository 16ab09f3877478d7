//! Safetensors round trip, canonical hashing, strict loading with typed errors, and a fuzz of
//! the loader with random and mutated bytes.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;
use common::*;
use posthuman_gpt2::candle_core::{DType, Device, Tensor};
use posthuman_gpt2::weights::check_safetensors_file;
use posthuman_gpt2::{
    Config, Gpt2Error, SeededRng, Weights, init_weights, load_safetensors, load_safetensors_bytes,
    safetensors_bytes, save_safetensors,
};
use posthuman_types::Hash32;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn weights(cfg: &Config, seed: u64) -> Weights {
    Weights::from_var_map(cfg, &init_weights(cfg, seed).unwrap()).unwrap()
}

/// A safetensors image written by hand: tensors in the given order, optional name prefix,
/// optional extra entries — what other writers (and attackers) may produce.
fn handmade(entries: &[(String, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in entries {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    out
}

fn entries(w: &Weights, prefix: &str) -> Vec<(String, &'static str, Vec<usize>, Vec<u8>)> {
    w.tensors()
        .iter()
        .map(|(k, t)| {
            let bytes = vals(t).iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
            (format!("{prefix}{k}"), "F32", t.dims().to_vec(), bytes)
        })
        .collect()
}

#[test]
fn round_trip_keeps_hash_and_logits() {
    let cfg = tiny_config();
    let w = weights(&cfg, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    save_safetensors(&w, &path).unwrap();
    let back = load_safetensors(&path, &cfg).unwrap();
    assert_eq!(w.hash().unwrap(), back.hash().unwrap());
    let x = Tensor::new(&[[1u32, 2, 3, 4]], &Device::Cpu).unwrap();
    let a = w.model(&cfg, &Device::Cpu).unwrap().forward(&x, None).unwrap();
    let b = back.model(&cfg, &Device::Cpu).unwrap().forward(&x, None).unwrap();
    assert_eq!(vals(&a), vals(&b));
    // HF-readable: format metadata and unprefixed names.
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
    assert!(meta.tensors().contains_key("h.0.attn.c_attn.weight"));
    // Config JSON round trip keeps unknown keys.
    let mut cfg2 = cfg.clone();
    cfg2.extra.insert("n_ctx".into(), serde_json::json!(16));
    assert_eq!(Config::from_json(&cfg2.to_json()).unwrap().extra["n_ctx"], 16);
}

#[test]
fn hash_ignores_order_prefix_buffers_and_dtype() {
    let cfg = tiny_config();
    let w = weights(&cfg, 2);
    let h = w.hash().unwrap();
    let mut e = entries(&w, "transformer.");
    e.reverse();
    // HF buffers and a tied lm_head are accepted and ignored.
    e.push(("transformer.h.0.attn.bias".into(), "F32", vec![1, 1, 2, 2], vec![0; 16]));
    e.push(("h.1.attn.masked_bias".into(), "F32", vec![], vec![0; 4]));
    let lm = e.iter().find(|x| x.0 == "transformer.wte.weight").unwrap().clone();
    e.push(("lm_head.weight".into(), "F32", lm.2, lm.3));
    let loaded = load_safetensors_bytes(&handmade(&e), &cfg).unwrap();
    assert_eq!(loaded.hash().unwrap(), h);
    // The hash sees content: one changed value changes it.
    let mut e2 = entries(&w, "");
    e2[0].3[0] ^= 1;
    assert_ne!(load_safetensors_bytes(&handmade(&e2), &cfg).unwrap().hash().unwrap(), h);
    // Different seeds, different hashes.
    assert_ne!(weights(&cfg, 3).hash().unwrap(), h);
}

#[test]
fn strict_loading_gives_typed_errors() {
    let cfg = tiny_config();
    let w = weights(&cfg, 4);
    let good = safetensors_bytes(&w).unwrap();
    // Truncated anywhere.
    for cut in [0, 4, 8, 20, good.len() / 2, good.len() - 1] {
        assert!(
            matches!(
                load_safetensors_bytes(&good[..cut], &cfg),
                Err(Gpt2Error::MalformedWeights(_))
            ),
            "cut {cut}"
        );
    }
    // Missing tensor.
    let e: Vec<_> = entries(&w, "").into_iter().filter(|x| x.0 != "h.1.ln_2.bias").collect();
    assert!(
        matches!(load_safetensors_bytes(&handmade(&e), &cfg), Err(Gpt2Error::MissingTensor { name }) if name == "h.1.ln_2.bias")
    );
    // Unknown tensor.
    let mut e = entries(&w, "");
    e.push(("h.0.mlp.extra".into(), "F32", vec![1], vec![0; 4]));
    assert!(matches!(
        load_safetensors_bytes(&handmade(&e), &cfg),
        Err(Gpt2Error::UnexpectedTensor { .. })
    ));
    // Config/weights mismatch: the same file against a wider or deeper config.
    let mut wide = cfg.clone();
    wide.n_embd = 32;
    assert!(matches!(load_safetensors_bytes(&good, &wide), Err(Gpt2Error::ConfigMismatch { .. })));
    let mut deep = cfg.clone();
    deep.n_layer = 3;
    assert!(matches!(load_safetensors_bytes(&good, &deep), Err(Gpt2Error::MissingTensor { .. })));
    let mut shallow = cfg.clone();
    shallow.n_layer = 1;
    assert!(matches!(
        load_safetensors_bytes(&good, &shallow),
        Err(Gpt2Error::UnexpectedTensor { .. })
    ));
    // Unsupported dtype.
    let mut e = entries(&w, "");
    e[0].1 = "I32";
    assert!(matches!(
        load_safetensors_bytes(&handmade(&e), &cfg),
        Err(Gpt2Error::UnsupportedDType { .. })
    ));
    // Non-finite values.
    let mut e = entries(&w, "");
    e[1].3[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(matches!(
        load_safetensors_bytes(&handmade(&e), &cfg),
        Err(Gpt2Error::MalformedWeights(_))
    ));
    // Duplicate after prefix stripping.
    let mut e = entries(&w, "");
    let dup = e[0].clone();
    e.push((format!("transformer.{}", dup.0), dup.1, dup.2, dup.3));
    assert!(matches!(
        load_safetensors_bytes(&handmade(&e), &cfg),
        Err(Gpt2Error::MalformedWeights(_))
    ));
    // Header lies about sizes.
    let mut e = entries(&w, "");
    e[2].2 = vec![1, 1];
    assert!(load_safetensors_bytes(&handmade(&e), &cfg).is_err());
    // Missing file.
    assert!(matches!(
        load_safetensors(std::path::Path::new("/nonexistent/x"), &cfg),
        Err(Gpt2Error::Io { .. })
    ));
    // Weights::from_tensors checks shapes too.
    let mut t: BTreeMap<String, Tensor> = w.tensors().clone();
    t.insert("ln_f.bias".into(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
    assert!(matches!(Weights::from_tensors(&cfg, t), Err(Gpt2Error::ConfigMismatch { .. })));
}

fn small_good() -> (Config, Vec<u8>) {
    let cfg = Config::new(5, 4, 4, 1, 1);
    let w = Weights::from_var_map(&cfg, &init_weights(&cfg, 9).unwrap()).unwrap();
    (cfg, safetensors_bytes(&w).unwrap())
}

/// `good` with `n` random bytes overwritten (biased towards the 8-byte length and the JSON
/// header), then, when `cut`, truncated at a random length.
fn mutate(good: &[u8], seed: u64, n: usize, cut: bool) -> Vec<u8> {
    let mut rng = SeededRng::new(seed);
    let mut bytes = good.to_vec();
    let hlen = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    for _ in 0..n {
        let span = if rng.next_u64().is_multiple_of(2) { hlen } else { bytes.len() };
        let i = (rng.next_u64() as usize) % span.max(1);
        bytes[i] = rng.next_u64() as u8;
    }
    if cut {
        let len = (rng.next_u64() as usize) % bytes.len();
        bytes.truncate(len);
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (cfg, _) = small_good();
        prop_assert!(load_safetensors_bytes(&bytes, &cfg).is_err());
    }

    #[test]
    fn mutated_files_never_panic(seed in any::<u64>(), n in 1usize..8, cut in any::<bool>()) {
        let (cfg, good) = small_good();
        let bytes = mutate(&good, seed, n, cut);
        // Ok is possible (a flipped weight byte), a panic is not.
        let _ = load_safetensors_bytes(&bytes, &cfg);
    }

    #[test]
    fn header_json_fuzz_never_panics(dtype in "[A-Z0-9]{1,5}", shape in proptest::collection::vec(0usize..1 << 20, 0..4),
                                     a in any::<u32>(), b in any::<u32>()) {
        let (cfg, _) = small_good();
        let h = serde_json::json!({"wte.weight": {"dtype": dtype, "shape": shape, "data_offsets": [a, b]}});
        let h = serde_json::to_vec(&h).unwrap();
        let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&h);
        bytes.extend_from_slice(&[0u8; 64]);
        prop_assert!(load_safetensors_bytes(&bytes, &cfg).is_err());
    }
}

#[test]
fn parses_the_hf_gpt2_config_json() {
    // openai-community/gpt2 config.json, verbatim keys.
    let json = r#"{
      "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
      "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
      "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
      "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "summary_activation": null,
      "summary_first_dropout": 0.1, "summary_proj_to_labels": true, "summary_type": "cls_index",
      "summary_use_proj": true, "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}},
      "vocab_size": 50257
    }"#;
    let cfg = Config::from_json(json).unwrap();
    assert_eq!(cfg, Config::from_json(&cfg.to_json()).unwrap());
    assert_eq!((cfg.n_layer, cfg.n_embd, cfg.inner_dim(), cfg.vocab_size), (12, 768, 3072, 50257));
    assert_eq!(cfg.num_params(), 124_439_808);
    assert_eq!(cfg.extra["n_ctx"], 1024);
    let bad = json.replace("gelu_new", "relu");
    assert!(matches!(Config::from_json(&bad), Err(Gpt2Error::InvalidConfig(_))));
    assert!(matches!(Config::from_json("{not json"), Err(Gpt2Error::InvalidConfig(_))));
}

/// `check_safetensors_file`'s verdict on `bytes` (written to a file), asserted equal to
/// loading them: the same hash, or an error of the same kind (`same_kind`; a file with
/// several defects may report any one of them first on either path).
fn file_check(bytes: &[u8], cfg: &Config, same_kind: bool) -> Result<Hash32, Gpt2Error> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let streamed = check_safetensors_file(&path, cfg);
    let loaded = load_safetensors_bytes(bytes, cfg).and_then(|w| w.hash());
    match (&streamed, &loaded) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) if same_kind => {
            assert_eq!(std::mem::discriminant(a), std::mem::discriminant(b), "{a} vs {b}")
        }
        (Err(_), Err(_)) => {}
        _ => panic!("file check {streamed:?}, load {loaded:?}"),
    }
    streamed
}

#[test]
fn file_check_agrees_with_loading() {
    let cfg = tiny_config();
    let w = weights(&cfg, 5);
    let h = w.hash().unwrap();
    let good = safetensors_bytes(&w).unwrap();
    assert_eq!(file_check(&good, &cfg, true).unwrap(), h);
    // Another order, a prefix, HF buffers and a tied head: the same hash.
    let mut e = entries(&w, "transformer.");
    e.reverse();
    e.push(("transformer.h.0.attn.bias".into(), "F32", vec![1, 1, 2, 2], vec![0; 16]));
    let lm = e.iter().find(|x| x.0 == "transformer.wte.weight").unwrap().clone();
    e.push(("lm_head.weight".into(), "F32", lm.2, lm.3));
    assert_eq!(file_check(&handmade(&e), &cfg, true).unwrap(), h);
    // bf16 storage (the top half of each f32) converts as loading converts it.
    let bf16: Vec<_> = entries(&w, "")
        .into_iter()
        .map(|(n, _, s, b)| (n, "BF16", s, b.chunks(4).flat_map(|c| [c[2], c[3]]).collect()))
        .collect();
    assert!(file_check(&handmade(&bf16), &cfg, true).is_ok());
    // A value changed: another hash.
    let mut e = entries(&w, "");
    e[0].3[0] ^= 1;
    assert_ne!(file_check(&handmade(&e), &cfg, true).unwrap(), h);

    // Each defect: the same kind of error.
    for cut in [0, 4, 8, 20, good.len() / 2, good.len() - 1] {
        assert!(file_check(&good[..cut], &cfg, true).is_err(), "cut {cut}");
    }
    let mut longer = good.clone();
    longer.push(0);
    assert!(file_check(&longer, &cfg, true).is_err());
    let missing: Vec<_> = entries(&w, "").into_iter().filter(|x| x.0 != "h.1.ln_2.bias").collect();
    assert!(matches!(
        file_check(&handmade(&missing), &cfg, true),
        Err(Gpt2Error::MissingTensor { name }) if name == "h.1.ln_2.bias"
    ));
    let mut e = entries(&w, "");
    e.push(("h.0.mlp.extra".into(), "F32", vec![1], vec![0; 4]));
    assert!(file_check(&handmade(&e), &cfg, true).is_err());
    let mut wide = cfg.clone();
    wide.n_embd = 32;
    assert!(file_check(&good, &wide, true).is_err());
    let mut deep = cfg.clone();
    deep.n_layer = 3;
    assert!(file_check(&good, &deep, true).is_err());
    let mut e = entries(&w, "");
    e[0].1 = "I32";
    assert!(matches!(
        file_check(&handmade(&e), &cfg, true),
        Err(Gpt2Error::UnsupportedDType { .. })
    ));
    let mut e = entries(&w, "");
    e[1].3[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    assert!(matches!(file_check(&handmade(&e), &cfg, true), Err(Gpt2Error::MalformedWeights(_))));
    let mut e = entries(&w, "");
    let dup = e[0].clone();
    e.push((format!("transformer.{}", dup.0), dup.1, dup.2, dup.3));
    assert!(file_check(&handmade(&e), &cfg, true).is_err());
    let mut e = entries(&w, "");
    e[2].2 = vec![1, 1];
    assert!(file_check(&handmade(&e), &cfg, true).is_err());
    // A header length beyond the limit or the file.
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(file_check(&huge, &cfg, true).is_err());
    assert!(matches!(
        check_safetensors_file(std::path::Path::new("/nonexistent/x"), &cfg),
        Err(Gpt2Error::Io { .. })
    ));
}

/// A value non-finite only past the first chunk the file check reads is still found, and a
/// tensor spanning several chunks hashes as loading hashes it.
#[test]
fn file_check_reads_every_chunk() {
    // wte alone is 2 MiB + 128 KiB of f32: three chunks.
    let cfg = Config::new(17_000, 8, 32, 1, 1);
    let w = weights(&cfg, 6);
    assert_eq!(file_check(&safetensors_bytes(&w).unwrap(), &cfg, true).unwrap(), w.hash().unwrap());
    let mut e = entries(&w, "");
    let wte = e.iter_mut().find(|x| x.0 == "wte.weight").unwrap();
    let last = wte.3.len() - 4;
    wte.3[last..].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(matches!(file_check(&handmade(&e), &cfg, true), Err(Gpt2Error::MalformedWeights(_))));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Mutated and truncated files: the file check accepts exactly what loading accepts,
    /// with the same hash.
    #[test]
    fn file_check_agrees_on_mutated_files(seed in any::<u64>(), n in 1usize..8, cut in any::<bool>()) {
        let (cfg, good) = small_good();
        let bytes = mutate(&good, seed, n, cut);
        let _ = file_check(&bytes, &cfg, false);
    }
}
