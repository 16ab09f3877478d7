//! The job receipt: what a job ran on, with what, and what it produced — as serde JSON
//! and as the EIP-712 struct the operator signs.
//!
//! One receipt per job (train, infer, evaluate). Fields that do not apply to a kind are
//! zero (`0x00…00` hashes, interval 0), and [`Receipt::check`] enforces that, so a receipt
//! cannot smuggle a checkpoint root into an inference job or omit it from a training job.

use alloy::primitives::{Address, B256};
use alloy::sol;
use alloy::sol_types::Eip712Domain;
use alloy::sol_types::SolStruct;
use posthuman_types::{Hash32, JobKind, JobParams, TrainParams, job::validate_id};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::{json_hash, receipt_params};
use crate::signed::{ReceiptError, Signable};

/// EIP-712 domain name and version of every Posthuman signature.
pub const DOMAIN_NAME: &str = "Posthuman";
pub const DOMAIN_VERSION: &str = "1";

sol! {
    /// The EIP-712 struct of a job receipt. Its type string is
    /// `JobReceipt(string jobId,string kind,address model,address datatoken,bytes32 orderTx,
    /// address consumer,bytes32 inputWeightsHash,bytes32 inputDataHash,string workerVersion,
    /// bytes32 paramsHash,uint64 seed,bytes32 checkpointRoot,uint32 checkpointInterval,
    /// bytes32 outputWeightsHash,bytes32 outputHash,uint64 startedAt,uint64 endedAt)`.
    #[derive(Debug, PartialEq, Eq)]
    struct JobReceipt {
        string jobId;
        string kind;
        address model;
        address datatoken;
        bytes32 orderTx;
        address consumer;
        bytes32 inputWeightsHash;
        bytes32 inputDataHash;
        string workerVersion;
        bytes32 paramsHash;
        uint64 seed;
        bytes32 checkpointRoot;
        uint32 checkpointInterval;
        bytes32 outputWeightsHash;
        bytes32 outputHash;
        uint64 startedAt;
        uint64 endedAt;
    }
}

/// Where a signature is valid: the chain and the lineage contract of one deployment. The
/// name (`Posthuman`) and version (`1`) are fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReceiptDomain {
    pub chain_id: u64,
    /// The `ModelLineage` contract's address.
    pub verifying_contract: Address,
}

impl ReceiptDomain {
    pub fn new(chain_id: u64, verifying_contract: Address) -> Self {
        ReceiptDomain { chain_id, verifying_contract }
    }

    /// The full EIP-712 domain.
    pub fn eip712(&self) -> Eip712Domain {
        alloy::sol_types::eip712_domain! {
            name: DOMAIN_NAME,
            version: DOMAIN_VERSION,
            chain_id: self.chain_id,
            verifying_contract: self.verifying_contract,
        }
    }

    /// The EIP-712 domain separator (`hashStruct(EIP712Domain)`).
    pub fn separator(&self) -> Hash32 {
        Hash32(self.eip712().separator().0)
    }
}

impl std::fmt::Display for ReceiptDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "chain {} / contract {}", self.chain_id, self.verifying_contract)
    }
}

/// A job receipt (serde form). Built by the functions layer when a job completes, from the
/// job spec, the order, and the worker's public outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The job id (`[a-z0-9-]`, ≤ 64 bytes); on chain it is [`crate::job_id_hash`] of it.
    pub job_id: String,
    pub kind: JobKind,
    /// The data NFT of the model the job ran on (the parent, for a train job).
    pub model: Address,
    /// The datatoken the order was paid in (the model's datatoken).
    pub datatoken: Address,
    /// The `startOrder` transaction that paid for the job.
    pub order_tx: Hash32,
    /// The order's consumer: who requested the job (the trainer of a derived model).
    pub consumer: Address,
    /// Canonical weights hash of the model the job ran on.
    pub input_weights_hash: Hash32,
    /// The dataset hash (train, evaluate) or [`crate::prompts_hash`] of the prompts (infer),
    /// salted with the buyer's salt ([`crate::salted_hash`]) for a buyer's job, so that it
    /// confirms no guessed input to anyone without the salt.
    pub input_data_hash: Hash32,
    /// See [`crate::worker_version`].
    pub worker_version: String,
    /// keccak-256 of the canonical JSON of `params` ([`crate::json_hash`]).
    pub params_hash: Hash32,
    /// The parameters themselves ([`crate::receipt_params`]), carried alongside: they are
    /// not in the signed struct, `params_hash` is, and verification checks the two agree.
    pub params: Value,
    /// The job's seed (train: batching and dropout; infer: sampling; evaluate: 0).
    pub seed: u64,
    /// Train: Merkle root over the checkpoint hashes (the worker's tree); else zero.
    pub checkpoint_root: Hash32,
    /// Train: steps between checkpoints; else 0.
    pub checkpoint_interval: u32,
    /// Train: canonical hash of the new weights; else zero.
    pub output_weights_hash: Hash32,
    /// keccak-256 of the job's public output file, byte for byte ([`crate::bytes_hash`]):
    /// `metrics.json` (train), `report.json` (evaluate), `completions.json` (infer).
    pub output_hash: Hash32,
    /// Unix seconds.
    pub started_at: u64,
    pub ended_at: u64,
}

fn b(h: &Hash32) -> B256 {
    B256::from(h.0)
}

impl Receipt {
    /// A receipt skeleton for a job: kind, params ([`crate::receipt_params`]), params hash,
    /// seed and checkpoint interval come from `params`; everything else is zero/empty for
    /// the caller to fill (model, datatoken, order, consumer, input hashes, worker version,
    /// checkpoint root and output weights for train, output hash, times). [`crate::sign`]
    /// refuses it until it is consistent.
    pub fn for_job(job_id: &str, params: &JobParams) -> Receipt {
        let v = receipt_params(params);
        let (seed, interval) = match params {
            JobParams::Train(t) => (t.seed, t.checkpoint_every),
            JobParams::Infer(i) => (i.sampling.seed, 0),
            JobParams::Evaluate(_) => (0, 0),
        };
        Receipt {
            job_id: job_id.to_string(),
            kind: params.kind(),
            model: Address::ZERO,
            datatoken: Address::ZERO,
            order_tx: Hash32::ZERO,
            consumer: Address::ZERO,
            input_weights_hash: Hash32::ZERO,
            input_data_hash: Hash32::ZERO,
            worker_version: String::new(),
            params_hash: json_hash(&v),
            params: v,
            seed,
            checkpoint_root: Hash32::ZERO,
            checkpoint_interval: interval,
            output_weights_hash: Hash32::ZERO,
            output_hash: Hash32::ZERO,
            started_at: 0,
            ended_at: 0,
        }
    }

    /// The EIP-712 struct that is signed.
    pub fn to_sol(&self) -> JobReceipt {
        JobReceipt {
            jobId: self.job_id.clone(),
            kind: self.kind.as_str().to_string(),
            model: self.model,
            datatoken: self.datatoken,
            orderTx: b(&self.order_tx),
            consumer: self.consumer,
            inputWeightsHash: b(&self.input_weights_hash),
            inputDataHash: b(&self.input_data_hash),
            workerVersion: self.worker_version.clone(),
            paramsHash: b(&self.params_hash),
            seed: self.seed,
            checkpointRoot: b(&self.checkpoint_root),
            checkpointInterval: self.checkpoint_interval,
            outputWeightsHash: b(&self.output_weights_hash),
            outputHash: b(&self.output_hash),
            startedAt: self.started_at,
            endedAt: self.ended_at,
        }
    }

    /// **The receipt hash that goes on chain**: the EIP-712 signing digest
    /// `keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(JobReceipt))`. It is what the
    /// operator signs and what `ModelLineage.commitTraining(…, receiptHash)` records. It binds
    /// the domain (chain id and lineage contract), so a receipt cannot be replayed against
    /// another deployment.
    pub fn receipt_hash(&self, domain: &ReceiptDomain) -> Hash32 {
        Hash32(self.to_sol().eip712_signing_hash(&domain.eip712()).0)
    }

    /// `hashStruct(JobReceipt)` alone (domain-free), for tools that want it; not what goes
    /// on chain.
    pub fn struct_hash(&self) -> Hash32 {
        Hash32(self.to_sol().eip712_hash_struct().0)
    }

    /// The ABI encoding of the struct's fields as EIP-712 hashes them (32 bytes per field).
    pub fn eip712_encoding(&self) -> Vec<u8> {
        self.to_sol().eip712_encode_data()
    }

    /// The train parameters, for a train receipt whose params parse as such.
    pub fn train_params(&self) -> Result<TrainParams, ReceiptError> {
        if self.kind != JobKind::Train {
            return Err(inconsistent(
                "kind",
                format!("a {} job has no train parameters", self.kind),
            ));
        }
        // The params without their `kind` tag (TrainParams refuses unknown fields), copied
        // rather than removed: `Map::remove` is the only removal from a JSON map in the
        // storefront, and BTreeMap's removal and rebalancing cost its wasm ~4.5 KB of code.
        let p = match &self.params {
            Value::Object(map) => {
                let mut rest = serde_json::Map::new();
                for (k, v) in map.iter().filter(|(k, _)| *k != "kind") {
                    rest.insert(k.clone(), v.clone());
                }
                Value::Object(rest)
            }
            other => other.clone(),
        };
        crate::json::from_value(p).map_err(|e| inconsistent("params", e.to_string()))
    }

    /// Checks what a receipt must satisfy before it is signed and after it is verified:
    /// the params agree with their hash, times are ordered, and the kind-specific fields are
    /// set exactly for the kinds they belong to.
    pub fn check(&self) -> Result<(), ReceiptError> {
        validate_id("job_id", &self.job_id).map_err(|e| inconsistent("job_id", e.reason))?;
        let actual = json_hash(&self.params);
        if actual != self.params_hash {
            return Err(ReceiptError::ParamsMismatch { committed: self.params_hash, actual });
        }
        if self.params.get("kind").and_then(Value::as_str) != Some(self.kind.as_str()) {
            return Err(inconsistent("params", format!("params.kind is not \"{}\"", self.kind)));
        }
        if self.ended_at < self.started_at {
            return Err(inconsistent("ended_at", "ends before it starts".into()));
        }
        if self.worker_version.is_empty() || self.worker_version.len() > 256 {
            return Err(inconsistent("worker_version", "must be 1..=256 bytes".into()));
        }
        match self.kind {
            JobKind::Train => {
                let p = self.train_params()?;
                if self.seed != p.seed {
                    return Err(inconsistent(
                        "seed",
                        format!("{} but params say {}", self.seed, p.seed),
                    ));
                }
                if self.checkpoint_interval != p.checkpoint_every || self.checkpoint_interval == 0 {
                    return Err(inconsistent(
                        "checkpoint_interval",
                        format!(
                            "{} but params say {}",
                            self.checkpoint_interval, p.checkpoint_every
                        ),
                    ));
                }
                if self.checkpoint_root == Hash32::ZERO {
                    return Err(inconsistent(
                        "checkpoint_root",
                        "a train job commits to checkpoints".into(),
                    ));
                }
                if self.output_weights_hash == Hash32::ZERO {
                    return Err(inconsistent(
                        "output_weights_hash",
                        "a train job yields weights".into(),
                    ));
                }
            }
            JobKind::Infer | JobKind::Evaluate => {
                if self.checkpoint_root != Hash32::ZERO || self.checkpoint_interval != 0 {
                    return Err(inconsistent(
                        "checkpoint_root",
                        format!("a {} job has no checkpoints", self.kind),
                    ));
                }
                if self.output_weights_hash != Hash32::ZERO {
                    return Err(inconsistent(
                        "output_weights_hash",
                        format!("a {} job yields no weights", self.kind),
                    ));
                }
                let seed =
                    self.params.pointer("/sampling/seed").and_then(Value::as_u64).unwrap_or(0);
                if self.seed != seed {
                    return Err(inconsistent(
                        "seed",
                        format!("{} but params say {seed}", self.seed),
                    ));
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn inconsistent(field: &'static str, reason: String) -> ReceiptError {
    ReceiptError::Inconsistent { field, reason }
}

impl Signable for Receipt {
    type Sol = JobReceipt;

    fn to_sol(&self) -> JobReceipt {
        Receipt::to_sol(self)
    }

    fn check(&self) -> Result<(), ReceiptError> {
        Receipt::check(self)
    }
}
