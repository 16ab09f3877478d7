//! Llama checkpoints in HF layout: f32 save and bit-identical load back, sharded and
//! f16/bf16 checkpoints, the canonical hash's independence of layout and on-disk dtype, and a
//! distinct typed error for each way a checkpoint can be wrong. Tiny seeded models written
//! by the tests themselves.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;
use common::*;
use posthuman_gpt2::candle_core::{DType, Device, Tensor};
use posthuman_gpt2::llama::{Config, init_weights};
use posthuman_gpt2::llama_weights::{
    CheckpointError, LlamaWeights, load_checkpoint, load_safetensors, load_safetensors_bytes,
    merge_sharded, save_safetensors,
};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

fn cfg(tied: bool) -> Config {
    let mut c = Config::tiny(41, 16, 2, 4, 2);
    c.tie_word_embeddings = tied;
    c
}

fn weights(cfg: &Config, seed: u64) -> LlamaWeights {
    LlamaWeights::from_var_map(cfg, &init_weights(cfg, seed).unwrap()).unwrap()
}

/// Writes `tensors` (in their own dtype) as `n` shards plus HF's index; `edit` may change the
/// weight map before it is written.
fn write_sharded(
    dir: &Path,
    tensors: &BTreeMap<String, Tensor>,
    n: usize,
    edit: impl FnOnce(&mut BTreeMap<String, String>),
) {
    let names: Vec<&String> = tensors.keys().collect();
    let per = names.len().div_ceil(n);
    let mut map = BTreeMap::new();
    for (i, chunk) in names.chunks(per).enumerate() {
        let file = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
        let part: HashMap<String, Tensor> =
            chunk.iter().map(|k| ((*k).clone(), tensors[*k].clone())).collect();
        posthuman_gpt2::candle_core::safetensors::save(&part, dir.join(&file)).unwrap();
        for k in chunk {
            map.insert((*k).clone(), file.clone());
        }
    }
    edit(&mut map);
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

fn write_single(dir: &Path, tensors: &BTreeMap<String, Tensor>) {
    let all: HashMap<String, Tensor> = tensors.clone().into_iter().collect();
    posthuman_gpt2::candle_core::safetensors::save(&all, dir.join("model.safetensors")).unwrap();
}

fn as_dtype(w: &LlamaWeights, dtype: DType) -> BTreeMap<String, Tensor> {
    w.tensors().iter().map(|(k, t)| (k.clone(), t.to_dtype(dtype).unwrap())).collect()
}

fn bits(w: &LlamaWeights) -> BTreeMap<String, Vec<u32>> {
    w.tensors()
        .iter()
        .map(|(k, t)| {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (k.clone(), v.iter().map(|x| x.to_bits()).collect())
        })
        .collect()
}

#[test]
fn saved_model_loads_back_bit_identical_with_hf_names() {
    for tied in [false, true] {
        let cfg = cfg(tied);
        let w = weights(&cfg, 11);
        let dir = tempfile::tempdir().unwrap();
        save_safetensors(&w, &dir.path().join("model.safetensors")).unwrap();
        let back = load_checkpoint(dir.path(), &cfg).unwrap();
        assert_eq!(bits(&w), bits(&back));
        assert_eq!(w.hash().unwrap(), back.hash().unwrap());
        let x = Tensor::new(&[[1u32, 5, 9, 40]], &Device::Cpu).unwrap();
        let a = w.model(&cfg, &Device::Cpu).unwrap().forward(&x).unwrap();
        let b = back.model(&cfg, &Device::Cpu).unwrap().forward(&x).unwrap();
        assert_eq!(vals(&a), vals(&b));
        // What transformers writes: format metadata, HF names, no lm_head when tied, f32.
        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
        let t = meta.tensors();
        assert!(t.contains_key("model.embed_tokens.weight"));
        assert!(t.contains_key("model.layers.1.self_attn.k_proj.weight"));
        assert!(t.contains_key("model.layers.0.post_attention_layernorm.weight"));
        assert!(t.contains_key("model.norm.weight"));
        assert_eq!(t.contains_key("lm_head.weight"), !tied);
        assert!(t.values().all(|i| i.dtype == safetensors::Dtype::F32));
    }
}

#[test]
fn hash_is_independent_of_sharding_and_on_disk_dtype() {
    let cfg = cfg(false);
    let w = weights(&cfg, 12);
    let one = tempfile::tempdir().unwrap();
    save_safetensors(&w, &one.path().join("model.safetensors")).unwrap();
    let three = tempfile::tempdir().unwrap();
    write_sharded(three.path(), w.tensors(), 3, |_| {});
    assert_eq!(std::fs::read_dir(three.path()).unwrap().count(), 4);
    let a = load_checkpoint(one.path(), &cfg).unwrap();
    let b = load_checkpoint(three.path(), &cfg).unwrap();
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(a.hash().unwrap(), b.hash().unwrap());
    assert_eq!(a.hash().unwrap(), w.hash().unwrap());

    // f16 weights stored as f16 (sharded) and as their f32 conversion (one file) hash equal.
    for half in [DType::F16, DType::BF16] {
        let h = LlamaWeights::from_tensors(&cfg, as_dtype(&w, half)).unwrap();
        let as_half = tempfile::tempdir().unwrap();
        write_sharded(as_half.path(), &as_dtype(&w, half), 3, |_| {});
        let as_f32 = tempfile::tempdir().unwrap();
        save_safetensors(&h, &as_f32.path().join("model.safetensors")).unwrap();
        let x = load_checkpoint(as_half.path(), &cfg).unwrap();
        let y = load_checkpoint(as_f32.path(), &cfg).unwrap();
        assert_eq!(bits(&x), bits(&y), "{half:?}");
        assert_eq!(x.hash().unwrap(), y.hash().unwrap());
        assert_ne!(x.hash().unwrap(), w.hash().unwrap(), "rounding changed values");
        // A single-file half checkpoint too.
        let single = tempfile::tempdir().unwrap();
        write_single(single.path(), &as_dtype(&w, half));
        assert_eq!(
            load_checkpoint(single.path(), &cfg).unwrap().hash().unwrap(),
            x.hash().unwrap()
        );
    }

    // One changed value changes the hash.
    let mut t = w.tensors().clone();
    let name = "model.layers.1.mlp.up_proj.weight";
    let mut v = t[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[7] = f32::from_bits(v[7].to_bits() ^ 1);
    t.insert(name.into(), Tensor::from_vec(v, t[name].dims(), &Device::Cpu).unwrap());
    let changed = LlamaWeights::from_tensors(&cfg, t).unwrap();
    assert_ne!(changed.hash().unwrap(), w.hash().unwrap());
}

#[test]
fn tied_head_is_honoured() {
    let cfg = cfg(true);
    let w = weights(&cfg, 13);
    assert!(w.get("lm_head.weight").is_none());
    // A tied checkpoint that still stores lm_head (older writers) loads; the head is the
    // embedding, as in transformers.
    let mut t = w.tensors().clone();
    t.insert("lm_head.weight".into(), Tensor::zeros((41, 16), DType::F32, &Device::Cpu).unwrap());
    let dir = tempfile::tempdir().unwrap();
    write_single(dir.path(), &t);
    let back = load_checkpoint(dir.path(), &cfg).unwrap();
    assert_eq!(back.hash().unwrap(), w.hash().unwrap());
    // The same file under an untied config: the stored head is used.
    let untied = load_checkpoint(dir.path(), &self::cfg(false)).unwrap();
    assert_eq!(vals(untied.get("lm_head.weight").unwrap()), vec![0.0; 41 * 16]);
    // Untied, a missing head is a missing tensor.
    let dir2 = tempfile::tempdir().unwrap();
    write_single(dir2.path(), w.tensors());
    assert!(matches!(
        load_checkpoint(dir2.path(), &self::cfg(false)),
        Err(CheckpointError::MissingTensor { tensor }) if tensor == "lm_head.weight"
    ));
}

/// A sharded checkpoint of `w` with `damage` applied to the directory.
fn damaged(
    w: &LlamaWeights,
    edit: impl FnOnce(&mut BTreeMap<String, String>),
    damage: impl FnOnce(&Path),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_sharded(dir.path(), w.tensors(), 3, edit);
    damage(dir.path());
    dir
}

#[test]
fn each_defect_is_a_distinct_typed_error_naming_file_and_tensor() {
    let cfg = cfg(false);
    let w = weights(&cfg, 14);
    let load = |d: &tempfile::TempDir| load_checkpoint(d.path(), &cfg);
    let s2 = "model-00002-of-00003.safetensors";
    let q0 = "model.layers.0.self_attn.q_proj.weight";

    let d = damaged(&w, |_| {}, |p| std::fs::remove_file(p.join(s2)).unwrap());
    assert!(matches!(load(&d), Err(CheckpointError::MissingShard { file }) if file == s2));

    let d = damaged(
        &w,
        |_| {},
        |p| {
            std::fs::copy(p.join(s2), p.join("model-00004-of-00003.safetensors")).unwrap();
        },
    );
    assert!(matches!(load(&d), Err(CheckpointError::UnexpectedShard { file })
        if file == "model-00004-of-00003.safetensors"));
    // A stray single file next to an index is not silently preferred.
    let d = damaged(
        &w,
        |_| {},
        |p| {
            std::fs::copy(p.join(s2), p.join("model.safetensors")).unwrap();
        },
    );
    assert!(matches!(load(&d), Err(CheckpointError::UnexpectedShard { file })
        if file == "model.safetensors"));

    let first = |m: &BTreeMap<String, String>, k: &str| m[k].clone();
    let d = damaged(
        &w,
        |m| {
            let other = if first(m, q0).ends_with("00001-of-00003.safetensors") {
                s2
            } else {
                "model-00001-of-00003.safetensors"
            };
            m.insert(q0.into(), other.into());
        },
        |_| {},
    );
    assert!(matches!(load(&d), Err(CheckpointError::WrongShard { tensor, index_says, found_in })
        if tensor == q0 && index_says != found_in));

    let d = damaged(
        &w,
        |m| {
            m.remove(q0);
        },
        |_| {},
    );
    assert!(matches!(load(&d), Err(CheckpointError::NotInIndex { tensor, .. }) if tensor == q0));

    let d = damaged(
        &w,
        |m| {
            m.insert("model.layers.9.mlp.up_proj.weight".into(), s2.into());
        },
        |_| {},
    );
    assert!(matches!(load(&d), Err(CheckpointError::NotInShard { tensor, file })
        if tensor == "model.layers.9.mlp.up_proj.weight" && file == s2));

    // Missing and extra tensors, consistently indexed.
    let mut t = w.tensors().clone();
    t.remove(q0);
    let d = tempfile::tempdir().unwrap();
    write_sharded(d.path(), &t, 3, |_| {});
    assert!(matches!(load(&d), Err(CheckpointError::MissingTensor { tensor }) if tensor == q0));

    let mut t = w.tensors().clone();
    t.insert(
        "model.layers.0.self_attn.q_proj.bias".into(),
        Tensor::zeros(16, DType::F32, &Device::Cpu).unwrap(),
    );
    let d = tempfile::tempdir().unwrap();
    write_sharded(d.path(), &t, 3, |_| {});
    assert!(matches!(load(&d), Err(CheckpointError::UnexpectedTensor { tensor, file })
        if tensor == "model.layers.0.self_attn.q_proj.bias" && file.starts_with("model-0000")));

    // Old checkpoints' rotary buffers are ignored, as transformers does.
    let mut t = w.tensors().clone();
    t.insert(
        "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
    );
    let d = tempfile::tempdir().unwrap();
    write_sharded(d.path(), &t, 3, |_| {});
    assert_eq!(load(&d).unwrap().hash().unwrap(), w.hash().unwrap());

    let mut t = w.tensors().clone();
    t.insert(q0.into(), Tensor::zeros((16, 8), DType::F32, &Device::Cpu).unwrap());
    let d = tempfile::tempdir().unwrap();
    write_sharded(d.path(), &t, 3, |_| {});
    assert!(matches!(load(&d), Err(CheckpointError::ShapeMismatch { tensor, expected, got, .. })
        if tensor == q0 && expected == vec![16, 16] && got == vec![16, 8]));

    for dtype in [DType::F64, DType::I64, DType::U8] {
        let mut t = w.tensors().clone();
        t.insert(q0.into(), t[q0].to_dtype(dtype).unwrap());
        let d = tempfile::tempdir().unwrap();
        write_single(d.path(), &t);
        let want = format!("{:?}", safetensors::Dtype::from(dtype));
        assert!(
            matches!(load(&d), Err(CheckpointError::UnsupportedDType { tensor, dtype, file })
            if tensor == q0 && dtype == want && file == "model.safetensors"),
            "{dtype:?}"
        );
    }

    let mut t = w.tensors().clone();
    let mut v = t[q0].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[3] = f32::NAN;
    t.insert(q0.into(), Tensor::from_vec(v, (16, 16), &Device::Cpu).unwrap());
    let d = tempfile::tempdir().unwrap();
    write_single(d.path(), &t);
    assert!(matches!(load(&d), Err(CheckpointError::NonFinite { tensor, .. }) if tensor == q0));
    // In half precision too: an infinity in a bf16 shard, a NaN in an f16 one.
    for (dtype, bad) in [(DType::BF16, f32::INFINITY), (DType::F16, f32::NAN)] {
        let mut t = w.tensors().clone();
        let mut v = t[q0].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v[200] = bad;
        let x = Tensor::from_vec(v, (16, 16), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
        t.insert(q0.into(), x);
        let d = tempfile::tempdir().unwrap();
        write_sharded(d.path(), &t, 3, |_| {});
        assert!(
            matches!(load(&d), Err(CheckpointError::NonFinite { tensor, .. }) if tensor == q0),
            "{dtype:?}"
        );
    }

    // The same tensor in two shards.
    let d = damaged(
        &w,
        |_| {},
        |p| {
            let part = HashMap::from([(q0.to_string(), w.get(q0).unwrap().clone())]);
            posthuman_gpt2::candle_core::safetensors::save(&part, p.join("extra.safetensors"))
                .unwrap();
            let idx = p.join("model.safetensors.index.json");
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&idx).unwrap()).unwrap();
            v["weight_map"]["model.norm.weight"] = "extra.safetensors".into();
            std::fs::write(&idx, v.to_string()).unwrap();
        },
    );
    assert!(
        matches!(load(&d), Err(CheckpointError::DuplicateTensor { tensor, .. }) if tensor == q0)
    );
}

#[test]
fn bad_files_and_indexes_are_refused_not_panicked_on() {
    let cfg = cfg(false);
    let w = weights(&cfg, 15);
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(load_checkpoint(empty.path(), &cfg), Err(CheckpointError::NoWeights { .. })));

    for index in [
        "not json",
        "{}",
        r#"{"weight_map": {"model.norm.weight": 3}}"#,
        r#"{"weight_map": {"model.norm.weight": "../model.safetensors"}}"#,
        r#"{"weight_map": {"model.norm.weight": "/etc/passwd"}}"#,
        r#"{"weight_map": {"model.norm.weight": "config.json"}}"#,
    ] {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("model.safetensors.index.json"), index).unwrap();
        assert!(
            matches!(load_checkpoint(d.path(), &cfg), Err(CheckpointError::MalformedIndex { .. })),
            "{index}"
        );
    }

    // Truncated and garbage files.
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("model.safetensors");
    save_safetensors(&w, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let mut rng = posthuman_gpt2::SeededRng::new(5);
    for cut in [0, 7, 8, 30, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert!(
            matches!(load_safetensors(&path, &cfg), Err(CheckpointError::MalformedFile { .. })),
            "cut at {cut}"
        );
    }
    for _ in 0..50 {
        let mut b = bytes.clone();
        let i = (rng.next_u64() % 200) as usize;
        b[i] ^= 1 << (rng.next_u64() % 8);
        std::fs::write(&path, &b).unwrap();
        // Any outcome but a panic: a flipped header byte may still parse (e.g. inside a name).
        let _ = load_safetensors(&path, &cfg);
    }
}

/// Writes `tensors` as safetensors with `meta` as `__metadata__` (what `transformers` writes:
/// `format: pt`), through the safetensors crate itself.
fn write_with_meta(path: &Path, tensors: &BTreeMap<String, Tensor>, meta: &[(&str, &str)]) {
    let st = posthuman_gpt2::candle_core::safetensors::save(
        &tensors.clone().into_iter().collect::<HashMap<_, _>>(),
        path,
    );
    st.unwrap();
    let plain = std::fs::read(path).unwrap();
    let parsed = safetensors::SafeTensors::deserialize(&plain).unwrap();
    let meta: HashMap<String, String> =
        meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let bytes = safetensors::serialize(parsed.tensors(), (!meta.is_empty()).then_some(meta));
    std::fs::write(path, bytes.unwrap()).unwrap();
}

#[test]
fn merged_shards_are_the_single_file_byte_for_byte() {
    let cfg = cfg(false);
    let w = weights(&cfg, 16);
    // Mixed on-disk dtypes: they must survive the merge unconverted.
    let mut t = as_dtype(&w, DType::BF16);
    for (k, v) in t.iter_mut() {
        if k.contains("mlp") {
            *v = w.get(k).unwrap().to_dtype(DType::F16).unwrap();
        } else if k.ends_with("norm.weight") {
            *v = w.get(k).unwrap().clone();
        }
    }
    for meta in [&[][..], &[("format", "pt")][..]] {
        let single = tempfile::tempdir().unwrap();
        write_with_meta(&single.path().join("model.safetensors"), &t, meta);
        let want = std::fs::read(single.path().join("model.safetensors")).unwrap();
        for n in [2, 3] {
            let d = tempfile::tempdir().unwrap();
            write_sharded(d.path(), &t, n, |_| {});
            for f in std::fs::read_dir(d.path()).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "safetensors") {
                    let part = std::fs::read(&f).unwrap();
                    let part: BTreeMap<String, Tensor> =
                        posthuman_gpt2::candle_core::safetensors::load_buffer(&part, &Device::Cpu)
                            .unwrap()
                            .into_iter()
                            .collect();
                    write_with_meta(&f, &part, meta);
                }
            }
            let merged = merge_sharded(&d.path().join("model.safetensors.index.json")).unwrap();
            assert!(merged == want, "{n} shards, metadata {meta:?}: bytes differ");
            let back = load_safetensors_bytes(&merged, &cfg).unwrap();
            assert_eq!(
                back.hash().unwrap(),
                load_checkpoint(d.path(), &cfg).unwrap().hash().unwrap()
            );
            let (_, header) = safetensors::SafeTensors::read_metadata(&merged).unwrap();
            let dtypes: BTreeMap<String, safetensors::Dtype> =
                header.tensors().into_iter().map(|(k, i)| (k, i.dtype)).collect();
            assert_eq!(dtypes["model.layers.0.mlp.up_proj.weight"], safetensors::Dtype::F16);
            assert_eq!(dtypes["model.norm.weight"], safetensors::Dtype::F32);
            assert_eq!(dtypes["model.embed_tokens.weight"], safetensors::Dtype::BF16);
        }
    }
}

#[test]
fn merging_refuses_what_loading_refuses_and_conflicting_metadata() {
    let cfg = cfg(false);
    let w = weights(&cfg, 17);
    let merge =
        |d: &tempfile::TempDir| merge_sharded(&d.path().join("model.safetensors.index.json"));
    let s2 = "model-00002-of-00003.safetensors";
    let d = damaged(&w, |_| {}, |p| std::fs::remove_file(p.join(s2)).unwrap());
    assert!(matches!(merge(&d), Err(CheckpointError::MissingShard { file }) if file == s2));
    let d = damaged(
        &w,
        |_| {},
        |p| {
            std::fs::copy(p.join(s2), p.join("stray.safetensors")).unwrap();
        },
    );
    assert!(matches!(merge(&d), Err(CheckpointError::UnexpectedShard { file })
        if file == "stray.safetensors"));
    let ghost = "model.layers.9.mlp.up_proj.weight";
    let d = damaged(
        &w,
        |m| {
            m.insert(ghost.into(), s2.into());
        },
        |_| {},
    );
    assert!(matches!(merge(&d), Err(CheckpointError::NotInShard { tensor, file })
        if tensor == ghost && file == s2));
    let d = damaged(
        &w,
        |_| {},
        |p| {
            std::fs::write(p.join("model.safetensors.index.json"), "{\"weight_map\": ").unwrap();
        },
    );
    assert!(matches!(merge(&d), Err(CheckpointError::MalformedIndex { .. })));
    let d = damaged(
        &w,
        |_| {},
        |p| {
            std::fs::write(p.join(s2), b"garbage").unwrap();
        },
    );
    assert!(matches!(merge(&d), Err(CheckpointError::MalformedFile { file, .. }) if file == s2));

    // Shards that disagree on a metadata key cannot become one file.
    let d = tempfile::tempdir().unwrap();
    write_sharded(d.path(), w.tensors(), 2, |_| {});
    for (i, fmt) in [(1, "pt"), (2, "np")] {
        let f = d.path().join(format!("model-0000{i}-of-00002.safetensors"));
        let part: BTreeMap<String, Tensor> =
            posthuman_gpt2::candle_core::safetensors::load(&f, &Device::Cpu)
                .unwrap()
                .into_iter()
                .collect();
        write_with_meta(&f, &part, &[("format", fmt)]);
    }
    assert!(matches!(merge(&d), Err(CheckpointError::MetadataConflict { key, first, second })
        if key == "format" && first == "model-00001-of-00002.safetensors"
            && second == "model-00002-of-00002.safetensors"));
}
