//! Issue 18: a model's owner edits its card and the model's Ocean DDO on chain follows
//! (`MetadataUpdated` from the data NFT, `created` kept, `updated` moved, hash-checked), an
//! edit that changes nothing sends nothing, a failed chain step is healed by the next edit,
//! and every refusal (not the owner, unknown model, bad input, replay, expiry) answers a JSON
//! error and sends no transaction. A derived model's edit by its trainer is in `e2e.rs`.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::signers::local::PrivateKeySigner;
use axum::http::StatusCode;
use harness::*;
use posthuman_receipts::request::{EDIT_CARD, FEATURE_EVALUATIONS};
use posthuman_types::RewardScheme;
use serde_json::json;

/// An embedded deployment where `alice` may publish, and a model she published (the
/// operator holds its NFT; she is its owner of record).
async fn published(alice: &PrivateKeySigner) -> (Env, String, serde_json::Value) {
    let who = alice.address();
    let env = env(sleeper(), |c| c.api.publishers = vec![who]).await;
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    let (st, model) = publish(&env, alice, &tiny_model_unrunnable(3), &scheme, "p-1").await;
    assert_eq!(st, StatusCode::CREATED, "{model}");
    let nft = model["nft"].as_str().unwrap().to_string();
    (env, nft, model)
}

#[tokio::test]
async fn the_owner_edits_the_card_and_the_ddo_on_chain_follows() {
    let alice = PrivateKeySigner::random();
    let (env, nft, _) = published(&alice).await;
    let before = ddo_versions(&env, &nft).await;
    assert_eq!(before.len(), 1, "published with one DDO");
    let created = before[0].0["metadata"]["created"].clone();
    // The DDO's dates have second resolution: let the clock move past the publication.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let text = "A tiny GPT-2 for tests.\nSecond paragraph — ünïcode.";
    let (st, card) = edit_card(
        &env,
        &nft,
        &alice,
        json!({"description": text, "tags": ["wiki", "tiny-2"]}),
        "e-1",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{card}");
    assert_eq!(card["description"], text);
    assert_eq!(card["tags"], json!(["wiki", "tiny-2"]));
    assert_eq!((card["name"].as_str(), card["symbol"].as_str()), (Some("Tiny GPT"), Some("TINY")));
    let (_, read) = env.get(&format!("/api/models/{nft}")).await;
    assert_eq!((read["description"].as_str(), &read["tags"]), (Some(text), &card["tags"]));

    // The chain: a second DDO, set by MetadataUpdated, hash-checked by ddo_versions.
    let after = ddo_versions(&env, &nft).await;
    assert_eq!(after.len(), 2, "one MetadataUpdated");
    let (ddo, tx) = &after[1];
    let md = &ddo["metadata"];
    assert_eq!(md["description"], text);
    assert_eq!(md["tags"], json!(["posthuman", "gpt2", "compute-to-data", "wiki", "tiny-2"]));
    assert_eq!(md["created"], created, "created unchanged");
    assert!(md["updated"].as_str().unwrap() > created.as_str().unwrap(), "{md}");
    assert_eq!(md["name"], "Tiny GPT");
    assert_eq!(ddo["id"], before[0].0["id"], "the same asset");
    assert_eq!(ddo["services"], before[0].0["services"], "services unchanged");
    let onchain = env.chain.metadata(nft.parse().unwrap()).await.unwrap();
    assert!(onchain.has_metadata && onchain.state == 0, "{onchain:?}");
    let gas = gas_of(&env, *tx).await;
    let bytes = serde_json::to_vec(ddo).unwrap().len();
    eprintln!("card edit: setMetaData (MetadataUpdated, {bytes} B DDO) used {gas} gas");
    // For Ocean's own validator (tests/ocean/validate-ddo.sh).
    if let Some(dir) = std::env::var_os("POSTHUMAN_DDO_OUT") {
        std::fs::create_dir_all(&dir).unwrap();
        let path = std::path::Path::new(&dir).join("api-root-edited.json");
        std::fs::write(path, serde_json::to_vec_pretty(ddo).unwrap()).unwrap();
    }

    // The same edit again changes nothing: no transaction.
    let block = env.chain.provider().get_block_number().await.unwrap();
    let (st, again) = edit_card(
        &env,
        &nft,
        &alice,
        json!({"description": text, "tags": ["wiki", "tiny-2"]}),
        "e-2",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(env.chain.provider().get_block_number().await.unwrap(), block, "no transaction");
    assert_eq!(ddo_versions(&env, &nft).await.len(), 2);

    // Only the tags: the description stays.
    let (st, card) = edit_card(&env, &nft, &alice, json!({"tags": []}), "e-3").await;
    assert_eq!(st, StatusCode::OK, "{card}");
    assert_eq!((card["description"].as_str(), &card["tags"]), (Some(text), &json!([])));
    let last = ddo_versions(&env, &nft).await.pop().unwrap().0;
    assert_eq!(last["metadata"]["tags"], json!(["posthuman", "gpt2", "compute-to-data"]));
    assert_eq!(last["metadata"]["description"], text);
    env.emb.queue.shutdown().await;
}

#[tokio::test]
async fn refusals_answer_json_errors_and_send_nothing() {
    let alice = PrivateKeySigner::random();
    let (env, nft, _) = published(&alice).await;
    let block = env.chain.provider().get_block_number().await.unwrap();
    let code = |b: &serde_json::Value| b["error"].as_str().unwrap_or_default().to_string();

    // Not the owner of record: a stranger, and the operator that holds the NFT.
    let stranger = PrivateKeySigner::random();
    for who in [&stranger, &env.operator] {
        let (st, b) = edit_card(&env, &nft, who, json!({"description": "mine"}), "x-1").await;
        assert_eq!((st, code(&b)), (StatusCode::FORBIDDEN, "forbidden".into()), "{b}");
    }
    // The owner's key, but signed for another action: it recovers to someone else.
    let (st, b) = edit_card_as(
        &env,
        &nft,
        &alice,
        FEATURE_EVALUATIONS,
        json!({"description": "x"}),
        "x-2",
        now() + 600,
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b}");
    // An unknown model.
    let unknown = "0x00000000000000000000000000000000000000aa";
    let (st, b) = edit_card(&env, unknown, &alice, json!({"description": "x"}), "x-3").await;
    assert_eq!((st, code(&b)), (StatusCode::NOT_FOUND, "not_found".into()), "{b}");

    // Bad input: each a 422 naming its field.
    let long = "x".repeat(2049);
    let bad = [
        (json!({"description": long}), "description"),
        (json!({"description": "tab\there"}), "description"),
        (json!({"description": "rtl \u{202E}1.0 OCEAN"}), "description"),
        (json!({"tags": ["Has Space"]}), "tags"),
        (json!({"tags": ["posthuman"]}), "tags"),
        (json!({"tags": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}), "tags"),
        (json!({"tags": ["x", "x"]}), "tags"),
        (json!({"name": "Renamed"}), "name"),
        (json!({"symbol": "NEW"}), "symbol"),
        (json!({"weights_hash": "0x00"}), "weights_hash"),
        (json!({}), "description"),
    ];
    for (i, (fields, field)) in bad.into_iter().enumerate() {
        let (st, b) = edit_card(&env, &nft, &alice, fields.clone(), &format!("b-{i}")).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{fields}: {b}");
        assert_eq!(code(&b), "invalid");
        assert!(b["message"].as_str().unwrap().contains(field), "{field}: {b}");
    }

    // Expired, or signed by a key the body's signature does not recover to: 401.
    let (st, b) =
        edit_card_as(&env, &nft, &alice, EDIT_CARD, json!({"description": "x"}), "x-4", now() - 1)
            .await;
    assert_eq!((st, code(&b)), (StatusCode::UNAUTHORIZED, "unauthorized".into()), "{b}");
    // A signature made for another model's URL is no use on this one.
    let (st, b) = {
        let body = serde_json::to_vec(
            &json!({"model": unknown, "description": "x", "nonce": "x-5", "expires_at": now() + 60}),
        )
        .unwrap();
        let sig = sign_typed(&env, &alice, EDIT_CARD, &body);
        let req = axum::http::Request::post(format!("/api/models/{nft}/card"))
            .header("content-type", "application/json")
            .header("x-posthuman-signature", sig)
            .body(axum::body::Body::from(body))
            .unwrap();
        env.call(req).await
    };
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    let req = axum::http::Request::post(format!("/api/models/{nft}/card"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{}"))
        .unwrap();
    let (st, b) = env.call(req).await;
    assert_eq!(
        (st, code(&b)),
        (StatusCode::UNAUTHORIZED, "unauthorized".into()),
        "no signature: {b}"
    );

    assert_eq!(
        env.chain.provider().get_block_number().await.unwrap(),
        block,
        "no refusal sent a transaction"
    );
    let (_, card) = env.get(&format!("/api/models/{nft}")).await;
    assert_eq!(card["description"], "a tiny test model", "nothing changed");

    // A replayed request (same nonce, same signature) is refused after it was used once.
    let (st, _) = edit_card(&env, &nft, &alice, json!({"description": "v2"}), "r-1").await;
    assert_eq!(st, StatusCode::OK);
    let (st, b) = edit_card(&env, &nft, &alice, json!({"description": "v2"}), "r-1").await;
    assert_eq!((st, code(&b)), (StatusCode::CONFLICT, "conflict".into()), "replay: {b}");
    assert_eq!(ddo_versions(&env, &nft).await.len(), 2, "the replay sent nothing");
    env.emb.queue.shutdown().await;
}

/// The chain fails between the catalogue and the DDO (the operator cannot pay gas): the edit
/// answers an error, and the next edit — the very same content — sends the DDO, so the
/// catalogue and the chain agree again.
#[tokio::test]
async fn a_failed_ddo_update_is_healed_by_the_next_edit() {
    let alice = PrivateKeySigner::random();
    let (env, nft, _) = published(&alice).await;
    let operator = env.operator.address();
    let funds = env.chain.provider().get_balance(operator).await.unwrap();
    env.chain.provider().anvil_set_balance(operator, alloy::primitives::U256::ZERO).await.unwrap();

    let edit = json!({"description": "healed", "tags": ["retry"]});
    let (st, b) = edit_card(&env, &nft, &alice, edit.clone(), "h-1").await;
    assert!(st.is_server_error(), "{st}: {b}");
    assert_eq!(ddo_versions(&env, &nft).await.len(), 1, "nothing reached the chain");

    env.chain.provider().anvil_set_balance(operator, funds).await.unwrap();
    let (st, card) = edit_card(&env, &nft, &alice, edit, "h-2").await;
    assert_eq!(st, StatusCode::OK, "{card}");
    let versions = ddo_versions(&env, &nft).await;
    assert_eq!(versions.len(), 2, "the retry sent the DDO");
    assert_eq!(versions[1].0["metadata"]["description"], "healed");
    assert_eq!(versions[1].0["metadata"]["tags"][3], "retry");
    // Healed: once more changes nothing.
    let block = env.chain.provider().get_block_number().await.unwrap();
    let (st, _) = edit_card(&env, &nft, &alice, json!({"description": "healed"}), "h-3").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(env.chain.provider().get_block_number().await.unwrap(), block);
    env.emb.queue.shutdown().await;
}

/// A root is published under the licence its publisher names (stored in its canonical
/// spelling), its card and DDO say so, and its owner changes it with a card edit: the DDO on
/// chain follows, and `""` goes back to the default terms.
#[tokio::test]
async fn a_root_carries_its_chosen_licence_and_its_owner_changes_it() {
    let alice = PrivateKeySigner::random();
    let env = env(sleeper(), |c| c.api.publishers = vec![alice.address()]).await;
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    let files = tiny_model_unrunnable(3);
    let (st, m) =
        publish_licensed(&env, &alice, &files, &scheme, "l-1", "licenseref-llama3.2-community")
            .await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    let nft = m["nft"].as_str().unwrap().to_string();
    assert_eq!(m["license"], "LicenseRef-llama3.2-community");
    let (_, read) = env.get(&format!("/api/models/{nft}")).await;
    assert_eq!(read["license"], "LicenseRef-llama3.2-community");
    let first = ddo_versions(&env, &nft).await;
    assert_eq!(first[0].0["metadata"]["license"], "LicenseRef-llama3.2-community");

    let (st, card) = edit_card(&env, &nft, &alice, json!({"license": "Apache-2.0"}), "l-2").await;
    assert_eq!(st, StatusCode::OK, "{card}");
    assert_eq!(card["license"], "Apache-2.0");
    let versions = ddo_versions(&env, &nft).await;
    assert_eq!(versions.len(), 2, "one MetadataUpdated");
    assert_eq!(versions[1].0["metadata"]["license"], "Apache-2.0");
    assert_eq!(versions[1].0["metadata"]["description"], "a tiny test model", "the rest kept");

    let (st, card) = edit_card(&env, &nft, &alice, json!({"license": ""}), "l-3").await;
    assert_eq!(st, StatusCode::OK, "{card}");
    assert!(card.get("license").is_none(), "none named: {card}");
    let last = ddo_versions(&env, &nft).await.pop().unwrap().0;
    assert_eq!(last["metadata"]["license"], "proprietary: compute-to-data only");
    env.emb.queue.shutdown().await;
}

/// A licence that is neither a listed SPDX identifier nor a well-formed `LicenseRef-…` is a
/// 422 naming `license`, at publication and in a card edit, and nothing reaches the chain.
#[tokio::test]
async fn a_bad_licence_is_refused_naming_the_field() {
    let alice = PrivateKeySigner::random();
    let (env, nft, _) = published(&alice).await;
    let block = env.chain.provider().get_block_number().await.unwrap();
    let long = format!("LicenseRef-{}", "a".repeat(60));
    let files = tiny_model_unrunnable(4);
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    for (i, bad) in
        ["GPL-3.0-only", "MIT OR Apache-2.0", "LicenseRef-", "LicenseRef-a b", long.as_str()]
            .into_iter()
            .enumerate()
    {
        let (st, b) =
            publish_licensed(&env, &alice, &files, &scheme, &format!("lp-{i}"), bad).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {b}");
        assert!(b["message"].as_str().unwrap().starts_with("invalid license:"), "{bad}: {b}");
        let (st, b) =
            edit_card(&env, &nft, &alice, json!({"license": bad}), &format!("le-{i}")).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {b}");
        assert!(b["message"].as_str().unwrap().starts_with("invalid license:"), "{bad}: {b}");
    }
    assert_eq!(env.chain.provider().get_block_number().await.unwrap(), block, "nothing sent");
    assert_eq!(env.get("/api/models").await.1.as_array().unwrap().len(), 1, "nothing listed");
    env.emb.queue.shutdown().await;
}

/// A derived model keeps its root's licence: its trainer's edit naming another is a 422
/// naming `license` (naming the one it has changes nothing), and nothing reaches the chain.
/// (That a derivation inherits the root's licence, on its card and DDO: `e2e.rs`.)
#[tokio::test]
async fn a_derived_models_trainer_cannot_change_its_licence() {
    let alice = PrivateKeySigner::random();
    let env = env(sleeper(), |c| c.api.publishers = vec![alice.address()]).await;
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    let files = tiny_model_unrunnable(3);
    let (st, m) = publish_licensed(&env, &alice, &files, &scheme, "d-1", "MIT").await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    // A derived record as a train job's completion writes it (its chain side is not what
    // this checks: the refusal comes before any transaction).
    let bob = PrivateKeySigner::random();
    let bob_addr = format!("{:#x}", bob.address());
    let mut child = common::model_record();
    child.card.nft = "0x00000000000000000000000000000000000000c2".into();
    child.card.parent = m["nft"].as_str().map(str::to_string);
    child.card.trainer = Some(bob_addr.clone());
    child.card.owner = bob_addr;
    // Its root's licence, set through the record's JSON as the catalogue stores it.
    let mut json = serde_json::to_value(&child).unwrap();
    json["card"]["license"] = "MIT".into();
    let child: posthuman_functions::catalogue::ModelRecord = serde_json::from_value(json).unwrap();
    env.emb.deps.catalogue.put_model(&child).await.unwrap();
    let block = env.chain.provider().get_block_number().await.unwrap();
    let nft = child.card.nft.clone();
    for (i, other) in ["Apache-2.0", "", "LicenseRef-mine"].into_iter().enumerate() {
        let edit = json!({"description": "mine", "license": other});
        let (st, b) = edit_card(&env, &nft, &bob, edit, &format!("d-e{i}")).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{other:?}: {b}");
        let msg = b["message"].as_str().unwrap();
        assert!(msg.starts_with("invalid license:") && msg.contains("root's licence (MIT)"), "{b}");
    }
    assert_eq!(env.chain.provider().get_block_number().await.unwrap(), block, "nothing sent");
    let (_, card) = env.get(&format!("/api/models/{nft}")).await;
    assert_eq!(
        (card["license"].as_str(), card["description"].as_str()),
        (Some("MIT"), Some("a tiny model"))
    );
    env.emb.queue.shutdown().await;
}
