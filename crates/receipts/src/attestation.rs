//! Inference attestations: the operator's signature over what a model answered.
//!
//! Each completion of an infer job carries one: (job, index, weights hash, prompt hash,
//! output hash, sampling parameters, seed), signed as EIP-712 under the same domain as
//! receipts. A buyer who kept the prompt and the text can later prove — to anyone holding the
//! operator's address — that the model with those weights produced that text for that
//! prompt under those settings ([`VerifiedAttestation::matches`]).

use alloy::primitives::B256;
use alloy::sol;
use posthuman_types::{Hash32, InferParams, job::validate_id};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::canonical::{json_hash, prompt_hash, text_hash};
use crate::receipt::inconsistent;
use crate::signed::{ReceiptError, Signable, Signed, Verified};

sol! {
    /// The EIP-712 struct of one completion's attestation.
    #[derive(Debug, PartialEq, Eq)]
    struct InferenceAttestation {
        string jobId;
        uint32 index;
        bytes32 weightsHash;
        bytes32 promptHash;
        bytes32 outputHash;
        bytes32 samplingHash;
        uint64 seed;
    }
}

/// One completion's attestation (serde form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    pub job_id: String,
    /// The prompt's position in the job.
    pub index: u32,
    /// Canonical weights hash of the model that answered.
    pub weights_hash: Hash32,
    /// [`crate::prompt_hash`] of the prompt.
    pub prompt_hash: Hash32,
    /// [`crate::text_hash`] of the generated text (as returned, stop string cut).
    pub output_hash: Hash32,
    /// keccak-256 of the canonical JSON of `sampling` ([`crate::json_hash`]).
    pub sampling_hash: Hash32,
    /// The sampling parameters: temperature, top-k, top-p, max new tokens, stop strings.
    pub sampling: Value,
    pub seed: u64,
}

/// The sampling parameters an attestation names, from the job's parameters (without the
/// prompts and without the seed, which is its own field).
pub fn sampling_params(p: &InferParams) -> Value {
    json!({
        "temperature": p.sampling.temperature,
        "top_k": p.sampling.top_k,
        "top_p": p.sampling.top_p,
        "max_new_tokens": p.max_new_tokens,
        "stop": p.stop,
    })
}

impl Attestation {
    /// The attestation for completion `index` of an infer job.
    pub fn new(
        job_id: &str,
        index: u32,
        weights_hash: Hash32,
        params: &InferParams,
        prompt: &str,
        text: &str,
    ) -> Self {
        let sampling = sampling_params(params);
        Attestation {
            job_id: job_id.to_string(),
            index,
            weights_hash,
            prompt_hash: prompt_hash(prompt),
            output_hash: text_hash(text),
            sampling_hash: json_hash(&sampling),
            sampling,
            seed: params.sampling.seed,
        }
    }
}

impl Signable for Attestation {
    type Sol = InferenceAttestation;

    fn to_sol(&self) -> InferenceAttestation {
        InferenceAttestation {
            jobId: self.job_id.clone(),
            index: self.index,
            weightsHash: B256::from(self.weights_hash.0),
            promptHash: B256::from(self.prompt_hash.0),
            outputHash: B256::from(self.output_hash.0),
            samplingHash: B256::from(self.sampling_hash.0),
            seed: self.seed,
        }
    }

    fn check(&self) -> Result<(), ReceiptError> {
        validate_id("job_id", &self.job_id).map_err(|e| inconsistent("job_id", e.reason))?;
        let actual = json_hash(&self.sampling);
        if actual != self.sampling_hash {
            return Err(ReceiptError::ParamsMismatch { committed: self.sampling_hash, actual });
        }
        Ok(())
    }
}

/// A signed attestation.
pub type SignedAttestation = Signed<Attestation>;
/// A verified attestation.
pub type VerifiedAttestation = Verified<Attestation>;

impl Verified<Attestation> {
    /// Does this attestation vouch for exactly this prompt and this text?
    pub fn matches(&self, prompt: &str, text: &str) -> Result<(), ReceiptError> {
        let a = self.body();
        if a.prompt_hash != prompt_hash(prompt) {
            return Err(inconsistent("prompt_hash", "the prompt is not the one attested".into()));
        }
        if a.output_hash != text_hash(text) {
            return Err(inconsistent("output_hash", "the text is not the one attested".into()));
        }
        Ok(())
    }
}
