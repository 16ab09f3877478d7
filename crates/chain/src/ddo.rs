//! Ocean DDOs for model assets, set on chain the way Ocean's publish flow sets them.
//!
//! Ocean's indexers (Aquarius, Ocean Node) only see an asset whose data NFT emitted
//! `MetadataCreated`: the event carries the DDO, which they validate against the DDO schema
//! (`@oceanprotocol/ddo-js`) and check against `metaDataHash`. [`ModelDdo`] builds that
//! document for a Posthuman model in schema 4.1.0: a *dataset* (Ocean's kind for private data
//! that is only ever computed on, never downloaded) with three compute services, train, infer
//! and evaluate, in the service order the API's orders name (`serviceIndex` 0, 1, 2), each
//! pointing at the Posthuman API's Ocean Provider endpoint. Nothing private goes in: no
//! storage key, no file URL (`files` is empty: there is nothing to download), only what the
//! model card already shows and what the chain already holds (the weights commitment, the
//! parent model).
//!
//! [`Chain::set_metadata`] stores it with `setMetaData` (state 0 = active, flags 0 = plain
//! JSON, hash = SHA-256 of the exact bytes stored), from the NFT owner for a root; for a
//! derived model, whose NFT the lineage contract owns, [`Chain::set_child_metadata`] has the
//! operator forward the same call through `ModelLineage.setChildMetaData`.

use alloy::primitives::{Address, B256, Bytes};
use alloy::rpc::types::TransactionReceipt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::bindings::{ERC721Template, ModelLineage};
use crate::client::send;
use crate::{Chain, ChainError};

/// The DDO schema version written (one `@oceanprotocol/ddo-js` validates for `did:op:` ids).
pub const DDO_VERSION: &str = "4.1.0";

/// `setMetaData` state: the asset is active (orderable).
pub const STATE_ACTIVE: u8 = 0;

/// `setMetaData` flags: plain JSON, neither compressed (bit 0) nor encrypted (bit 1).
pub const FLAGS_PLAIN: u8 = 0;

/// Seconds a compute service's access lasts after an order (Ocean's `timeout`): one day, the
/// longest a queued job may wait before it runs.
pub const SERVICE_TIMEOUT_SECS: u64 = 86_400;

/// The compute services, in the order of the API's `serviceIndex` (train 0, infer 1,
/// evaluate 2): an Ocean order names its service by position in this list.
pub const SERVICES: [(&str, &str); 3] = [
    ("train", "Fine-tune the model on your dataset; the result is a new derived model asset"),
    ("infer", "Generate text from a prompt with the model"),
    ("evaluate", "Measure the model's loss and perplexity on your dataset"),
];

/// Ocean's asset id for a data NFT: `did:op:` + hex SHA-256 of the checksummed NFT address
/// followed by the decimal chain id (as ocean.js and ddo-js compute it).
pub fn did(nft: Address, chain_id: u64) -> String {
    let digest = Sha256::digest(format!("{}{}", nft.to_checksum(None), chain_id));
    format!("did:op:{}", alloy::hex::encode(digest))
}

/// What a model's DDO says: public facts only (the card, the chain's addresses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelDdo {
    pub chain_id: u64,
    pub nft: Address,
    pub datatoken: Address,
    pub name: String,
    pub description: String,
    /// The owner of record (the publisher, or the trainer of a derived model).
    pub author: String,
    pub license: String,
    pub tags: Vec<String>,
    /// Model family, e.g. `gpt2`.
    pub family: String,
    /// Human-readable architecture, e.g. `gpt2 12L/768d/12h ctx1024 vocab50257`.
    pub architecture: String,
    pub parameters: u64,
    /// The weights commitment (already public in the NFT's ERC725Y store).
    pub weights_hash: B256,
    /// The parent model's NFT, for a derived model.
    pub parent: Option<Address>,
    /// Where the compute services are served: the Posthuman API's Ocean Provider endpoint
    /// (the API sets `<public URL>/api/ocean`; ocean.js calls it the node URI).
    pub service_endpoint: String,
    /// Unix seconds of first publication and of this version.
    pub created: u64,
    pub updated: u64,
}

impl ModelDdo {
    /// The DDO as JSON (schema [`DDO_VERSION`]).
    pub fn to_json(&self) -> Value {
        let services: Vec<Value> = SERVICES
            .iter()
            .map(|(kind, what)| {
                json!({
                    "id": kind,
                    "type": "compute",
                    "name": kind,
                    "description": what,
                    // Nothing to download: the weights never leave Posthuman.
                    "files": "",
                    "datatokenAddress": self.datatoken.to_checksum(None),
                    "serviceEndpoint": self.service_endpoint,
                    "timeout": SERVICE_TIMEOUT_SECS,
                    "compute": {
                        // Only Posthuman's own train/infer/evaluate jobs run on the model:
                        // no raw or third-party algorithm, no network from the job.
                        "allowRawAlgorithm": false,
                        "allowNetworkAccess": false,
                        "publisherTrustedAlgorithmPublishers": [],
                        "publisherTrustedAlgorithms": [],
                    },
                    "additionalInformation": { "posthumanJobKind": kind },
                })
            })
            .collect();
        let mut info = json!({
            "family": self.family,
            "architecture": self.architecture,
            "parameters": self.parameters,
            "weightsHash": format!("{:#x}", self.weights_hash),
        });
        if let Some(p) = self.parent {
            info["parentNft"] = json!(p.to_checksum(None));
        }
        json!({
            "@context": ["https://w3id.org/did/v1"],
            "id": did(self.nft, self.chain_id),
            "version": DDO_VERSION,
            "chainId": self.chain_id,
            "nftAddress": self.nft.to_checksum(None),
            "metadata": {
                "created": iso8601(self.created),
                "updated": iso8601(self.updated),
                "type": "dataset",
                "name": self.name,
                "description": self.description,
                "author": self.author,
                "license": self.license,
                "tags": self.tags,
                "additionalInformation": info,
            },
            "services": services,
        })
    }

    /// The bytes stored on chain and their `metaDataHash` (SHA-256 of exactly those bytes).
    pub fn encode(&self) -> (Vec<u8>, B256) {
        let bytes = self.to_json().to_string().into_bytes();
        let hash = B256::from(<[u8; 32]>::from(Sha256::digest(&bytes)));
        (bytes, hash)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (proleptic Gregorian, UTC).
pub fn iso8601(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm, unsigned form).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A data NFT's metadata as `getMetaData` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnChainMetadata {
    pub decryptor_url: String,
    pub decryptor_address: String,
    pub state: u8,
    /// Whether any metadata was ever set.
    pub has_metadata: bool,
}

impl Chain {
    /// Sets a root model's DDO from `sender` (the NFT's owner, who holds its metadata role),
    /// as Ocean's publish flow does. The decryptor URL is the service endpoint and the
    /// decryptor address the operator (the plain DDO needs no decryption; Ocean's indexers
    /// still read both).
    pub async fn set_metadata(
        &self,
        sender: Address,
        ddo: &ModelDdo,
    ) -> Result<TransactionReceipt, ChainError> {
        self.check_signer(sender)?;
        let (data, hash) = ddo.encode();
        let nft = ERC721Template::new(ddo.nft, &self.provider);
        send(
            nft.setMetaData(
                STATE_ACTIVE,
                ddo.service_endpoint.clone(),
                String::new(),
                Bytes::from(vec![FLAGS_PLAIN]),
                Bytes::from(data),
                hash,
                vec![],
            )
            .from(sender),
        )
        .await
    }

    /// Sets a derived model's DDO (operator only): the lineage contract owns the child's NFT
    /// and forwards the call.
    pub async fn set_child_metadata(
        &self,
        ddo: &ModelDdo,
    ) -> Result<TransactionReceipt, ChainError> {
        let (data, hash) = ddo.encode();
        let c = ModelLineage::new(self.book.lineage, &self.provider);
        crate::lineage::send_lineage(c.setChildMetaData(
            ddo.nft,
            STATE_ACTIVE,
            ddo.service_endpoint.clone(),
            String::new(),
            Bytes::from(vec![FLAGS_PLAIN]),
            Bytes::from(data),
            hash,
        ))
        .await
    }

    /// `getMetaData` of a data NFT.
    pub async fn metadata(&self, nft: Address) -> Result<OnChainMetadata, ChainError> {
        let r = ERC721Template::new(nft, &self.provider).getMetaData().call().await?;
        Ok(OnChainMetadata {
            decryptor_url: r._0,
            decryptor_address: r._1,
            state: r._2,
            has_metadata: r._3,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_is_sha256_of_checksummed_address_and_chain_id() {
        // ddo-js's own makeDid on the same inputs (node -e, @oceanprotocol/ddo-js 0.2.0):
        // V4DDO.prototype.makeDid("0xb5e9e3b1c9a0c0a0e0b8d0f3a3e2f4c6d8e0a1b2", "8996").
        let nft: Address = "0xb5e9e3b1c9a0c0a0e0b8d0f3a3e2f4c6d8e0a1b2".parse().unwrap();
        assert_eq!(
            did(nft, 8996),
            "did:op:9bd11af7ef4ad7ccc93f1399bf9905fee12dd1950a986c34c3737aba56c5f127"
        );
        assert_ne!(did(nft, 8996), did(nft, 31337));
    }

    /// The committed DDO that `tests/ocean/validate-ddo.mjs` checks with Ocean's validator is
    /// exactly what the builder writes (regenerate with `POSTHUMAN_UPDATE_FIXTURES=1`).
    #[test]
    fn the_validated_fixture_is_what_the_builder_writes() {
        let ddo = ModelDdo {
            chain_id: 8996,
            nft: "0xb5e9e3b1c9a0c0a0e0b8d0f3a3e2f4c6d8e0a1b2".parse().unwrap(),
            datatoken: "0x1c3e5f7a9b0d2e4f6a8c0e1f3a5b7d9e0f2a4c6e".parse().unwrap(),
            name: "Bob GPT-2".into(),
            description: "Alice GPT fine-tuned by Bob".into(),
            author: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
            license: "proprietary".into(),
            tags: vec!["posthuman".into(), "gpt2".into()],
            family: "gpt2".into(),
            architecture: "gpt2 2L/64d/2h ctx128 vocab50257".into(),
            parameters: 3_326_848,
            weights_hash: B256::repeat_byte(0xab),
            parent: Some(Address::repeat_byte(0x11)),
            service_endpoint: "https://api.posthuman.example".into(),
            created: 1_796_594_096,
            updated: 1_796_594_156,
        };
        let path =
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/ocean/fixtures/model-ddo.json");
        let mut written = serde_json::to_string_pretty(&ddo.to_json()).unwrap();
        written.push('\n');
        if std::env::var_os("POSTHUMAN_UPDATE_FIXTURES").is_some() {
            std::fs::write(path, &written).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap();
        assert_eq!(committed, written, "regenerate with POSTHUMAN_UPDATE_FIXTURES=1");
    }

    #[test]
    fn iso8601_matches_known_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_796_594_096), "2026-12-06T21:54:56Z");
    }
}
