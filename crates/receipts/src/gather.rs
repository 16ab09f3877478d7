//! Gathering exactly the chain facts a verification needs, when the facts source cannot be
//! asked from inside the verification (the browser's `fetch` futures are not `Send`, and
//! [`ChainFacts`] is).
//!
//! A [`Recorder`] answers [`ChainFacts`] from what it has learnt and *records* every question
//! it could not answer (answering "nothing there" meanwhile). The caller runs the verification,
//! fetches the recorded questions from the real source ([`Query`] → [`Answer`]), and runs it
//! again, until a run asks nothing new. Verification is a pure function of the facts, so the
//! last run's report is the one direct access to the chain would give — the same checks with
//! the same reasons — and only the facts it actually reads are ever fetched.

use std::collections::BTreeSet;
use std::sync::Mutex;

use alloy::primitives::Address;
use posthuman_types::Hash32;

use crate::facts::{
    ChainFacts, FactsError, FactsSnapshot, ModelFacts, OperatorTerm, OrderFacts, TrainingCommitment,
};

/// One question [`ChainFacts`] asks of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Query {
    /// The lineage contract's commitment of a training job (by on-chain job id).
    Commitment(Hash32),
    /// A model's lineage entry.
    Model(Address),
    /// The weights hash in a data NFT's ERC725Y store.
    Weights(Address),
    /// The orders started by a transaction.
    Orders(Hash32),
    /// The lineage contract's operator history.
    Operators,
}

/// The chain's answer to a [`Query`] (`None`: the chain says there is no such thing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Commitment(Option<TrainingCommitment>),
    Model(Option<ModelFacts>),
    Weights(Option<Hash32>),
    Orders(Option<Vec<OrderFacts>>),
    /// Oldest first; empty: the chain knows no operator.
    Operators(Vec<OperatorTerm>),
}

/// Facts learnt so far, answering [`ChainFacts`] from memory and recording what it lacked.
#[derive(Debug, Default)]
pub struct Recorder {
    known: FactsSnapshot,
    /// Questions the chain answered with "none" (a snapshot cannot hold absence).
    absent: BTreeSet<Query>,
    missing: Mutex<BTreeSet<Query>>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The facts learnt so far (what the chain said exists).
    pub fn facts(&self) -> &FactsSnapshot {
        &self.known
    }

    /// The questions asked since the last call that had no answer yet, in a stable order.
    pub fn take_missing(&self) -> Vec<Query> {
        let mut m = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *m).into_iter().collect()
    }

    /// Records the chain's answer to `q`. An answer of another kind than the query is
    /// ignored (a bug in the caller, never a fact).
    pub fn learn(&mut self, q: Query, a: Answer) {
        match (q, a) {
            (Query::Commitment(k), Answer::Commitment(Some(v))) => {
                self.known.commitments.insert(k, v);
            }
            (Query::Model(k), Answer::Model(Some(v))) => {
                self.known.models.insert(k, v);
            }
            (Query::Weights(k), Answer::Weights(Some(v))) => {
                self.known.nft_weights.insert(k, v);
            }
            (Query::Orders(k), Answer::Orders(Some(v))) => {
                self.known.orders.insert(k, v);
            }
            (Query::Operators, Answer::Operators(v)) if !v.is_empty() => {
                self.known.operators = v;
            }
            (
                _,
                Answer::Commitment(None)
                | Answer::Model(None)
                | Answer::Weights(None)
                | Answer::Orders(None)
                | Answer::Operators(_),
            ) => {
                self.absent.insert(q);
            }
            _ => {}
        }
    }

    fn lookup<T>(&self, q: Query, found: Option<T>) -> Option<T> {
        if found.is_none() && !self.absent.contains(&q) {
            self.missing.lock().unwrap_or_else(|p| p.into_inner()).insert(q);
        }
        found
    }
}

#[async_trait::async_trait]
impl ChainFacts for Recorder {
    async fn training_commitment(
        &self,
        job_id: Hash32,
    ) -> Result<Option<TrainingCommitment>, FactsError> {
        Ok(self.lookup(Query::Commitment(job_id), self.known.commitments.get(&job_id).cloned()))
    }
    async fn model(&self, nft: Address) -> Result<Option<ModelFacts>, FactsError> {
        Ok(self.lookup(Query::Model(nft), self.known.models.get(&nft).cloned()))
    }
    async fn weights_commitment(&self, nft: Address) -> Result<Option<Hash32>, FactsError> {
        Ok(self.lookup(Query::Weights(nft), self.known.nft_weights.get(&nft).copied()))
    }
    async fn orders(&self, tx: Hash32) -> Result<Option<Vec<OrderFacts>>, FactsError> {
        Ok(self.lookup(Query::Orders(tx), self.known.orders.get(&tx).cloned()))
    }
    async fn operator_history(&self) -> Result<Vec<OperatorTerm>, FactsError> {
        let known = self.known.operators.clone();
        Ok(self.lookup(Query::Operators, (!known.is_empty()).then_some(known)).unwrap_or_default())
    }
}

/// Answers a [`Query`] from any [`ChainFacts`] (e.g. to replay a snapshot in tests).
pub async fn ask(facts: &dyn ChainFacts, q: Query) -> Result<Answer, FactsError> {
    Ok(match q {
        Query::Commitment(k) => Answer::Commitment(facts.training_commitment(k).await?),
        Query::Model(k) => Answer::Model(facts.model(k).await?),
        Query::Weights(k) => Answer::Weights(facts.weights_commitment(k).await?),
        Query::Orders(k) => Answer::Orders(facts.orders(k).await?),
        Query::Operators => Answer::Operators(facts.operator_history().await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_recorder_asks_each_question_once_and_remembers_absence() {
        let (nft, tx) = (Address::repeat_byte(1), Hash32([2; 32]));
        let mut rec = Recorder::new();
        assert_eq!(rec.model(nft).await.unwrap(), None);
        assert_eq!(rec.orders(tx).await.unwrap(), None);
        assert_eq!(rec.model(nft).await.unwrap(), None);
        assert_eq!(rec.take_missing(), vec![Query::Model(nft), Query::Orders(tx)]);
        assert_eq!(rec.take_missing(), vec![]);

        // The chain says: no such order; the model exists.
        rec.learn(Query::Orders(tx), Answer::Orders(None));
        let m = ModelFacts {
            nft,
            parent: None,
            trainer: nft,
            datatoken: nft,
            weights_hash: Hash32([3; 32]),
            job_id: None,
        };
        rec.learn(Query::Model(nft), Answer::Model(Some(m.clone())));
        // An answer of another kind is no fact about this question.
        rec.learn(Query::Weights(nft), Answer::Model(Some(m.clone())));
        assert_eq!(rec.orders(tx).await.unwrap(), None);
        assert_eq!(rec.model(nft).await.unwrap(), Some(m));
        assert_eq!(rec.weights_commitment(nft).await.unwrap(), None);
        assert_eq!(rec.take_missing(), vec![Query::Weights(nft)], "only the unanswered question");
        assert_eq!(
            ask(rec.facts(), Query::Model(nft)).await.unwrap(),
            Answer::Model(rec.facts().models.get(&nft).cloned())
        );
    }
}
