//! `posthuman verify JOB`: checks a job's operator-signed receipt against the chain — the
//! signature, the on-chain commitment (train), the input weights against the lineage
//! contract, and the order that paid for it — with no weights involved. For a train job it
//! also walks the derived model's lineage to its root and verifies every derivation's
//! receipt, so M1 → M2 → M3 chain hash to hash. Receipts are public: anyone can run it.
//! A receipt names its dataset or prompts only salted with the buyer's salt: with `--salt`
//! and the input, the buyer checks that binding too; without, the report says it was not
//! checked.

use posthuman_receipts::{
    ReceiptDomain, Report, SignedAttestation, SignedReceipt, dataset_hash, messages_hash,
    prompts_hash, salted_hash, verify_evaluation, verify_job, verify_lineage,
};
use posthuman_types::{ChatMessage, Completion, Hash32, JobKind};
use serde::Serialize;

use crate::Config;
use crate::args::VerifyArgs;
use crate::error::CliError;
use crate::output::Out;
use crate::session::Session;

/// The outcome of verifying one job.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub job_id: String,
    pub passed: bool,
    /// One sentence per failed check.
    pub failures: Vec<String>,
    pub report: Report,
    /// Train jobs: the derived model's lineage, every link verified (child first).
    pub lineage: Vec<Report>,
    /// Infer jobs verified by their buyer: completions whose attestation verified and matches
    /// the text received.
    pub attested: usize,
    /// Evaluate jobs verified by their buyer: the report received is the one the receipt
    /// commits to, about the weights of the model on sale.
    pub evaluation: Option<Report>,
    /// Whether the receipt commits to the dataset or prompts given with their salt: `None`
    /// when no salt was given (the data binding was not checked).
    pub data_binding: Option<bool>,
}

/// The buyer's input and salt: what `--salt` with `--data` or `--prompt` names.
#[derive(Clone, Debug)]
pub enum Input {
    Dataset {
        salt: Hash32,
        bytes: Vec<u8>,
    },
    Prompts {
        salt: Hash32,
        prompts: Vec<String>,
    },
    /// A chat infer job's messages (`--message ROLE:CONTENT`, in order).
    Messages {
        salt: Hash32,
        messages: Vec<ChatMessage>,
    },
}

impl Input {
    /// The salted hash a receipt for this input carries.
    pub fn salted(&self) -> Hash32 {
        match self {
            Input::Dataset { salt, bytes } => salted_hash(salt, &dataset_hash(bytes)),
            Input::Prompts { salt, prompts } => salted_hash(salt, &prompts_hash(prompts)),
            Input::Messages { salt, messages } => salted_hash(salt, &messages_hash(messages)),
        }
    }
}

fn input_of(a: &VerifyArgs) -> Result<Option<Input>, CliError> {
    let Some(salt) = a.salt else { return Ok(None) };
    if !a.messages.is_empty() {
        return Ok(Some(Input::Messages { salt, messages: a.messages.clone() }));
    }
    match (&a.data, a.prompts.is_empty()) {
        (Some(p), true) => {
            let bytes = std::fs::read(p)
                .map_err(|e| CliError::Usage(format!("cannot read {} ({e})", p.display())))?;
            Ok(Some(Input::Dataset { salt, bytes }))
        }
        (None, false) => Ok(Some(Input::Prompts { salt, prompts: a.prompts.clone() })),
        _ => Err(CliError::Usage(
            "--salt checks an input: pass --data FILE (train, evaluate), --prompt TEXT… or --message ROLE:CONTENT… (infer)"
                .into(),
        )),
    }
}

pub async fn run(cfg: &Config, out: &Out, a: VerifyArgs) -> Result<(), CliError> {
    if a.audit {
        return Err(audit_moved(&a));
    }
    let input = input_of(&a)?;
    let s = Session::open(cfg).await?;
    let v = verify_input(&s, &a.job, input.as_ref()).await?;
    out.emit(&v, || {
        let mut t = v.report.to_string();
        for l in &v.lineage {
            t.push_str(&l.to_string());
        }
        t.push_str(match v.data_binding {
            Some(true) => "data binding: the receipt commits to the given input and salt\n",
            Some(false) => "data binding: FAILED, the receipt commits to another input or salt\n",
            None => "data binding: not checked (pass --salt with --data or --prompt)\n",
        });
        t
    });
    if v.passed { Ok(()) } else { Err(CliError::VerificationFailed(v.failures.join("; "))) }
}

/// `verify --audit` was the proof-of-learning audit; it re-runs training from the private
/// store, which no user holds, so it moved to the operator's tool. Say so, with the command.
fn audit_moved(a: &VerifyArgs) -> CliError {
    let dir = a.data_dir.as_ref().map_or("DIR".into(), |d| d.display().to_string());
    CliError::Usage(format!(
        "the audit re-runs training from the operator's private store, so it is operator \
         tooling now: `posthuman-operator audit {} --data-dir {dir}`; `posthuman verify {}` \
         checks the receipt, lineage and order on chain",
        a.job, a.job
    ))
}

fn parse(job_id: &str, v: serde_json::Value) -> Result<SignedReceipt, CliError> {
    serde_json::from_value(v).map_err(|e| {
        CliError::VerificationFailed(format!("the receipt of job {job_id} is malformed: {e}"))
    })
}

/// Fetches the job's public receipt and verifies it (and, for train jobs, the lineage of the
/// derived model) against the chain; the data binding is not checked.
pub async fn verify(s: &Session, job_id: &str) -> Result<Verification, CliError> {
    verify_input(s, job_id, None).await
}

/// [`verify`], and with the buyer's input and salt, that the receipt commits to them.
pub async fn verify_input(
    s: &Session,
    job_id: &str,
    input: Option<&Input>,
) -> Result<Verification, CliError> {
    let signed = parse(job_id, s.api.receipt(job_id).await?)?;
    let book = s.chain.book();
    let domain = ReceiptDomain::new(book.chain_id, book.lineage);
    let unavailable = |e: posthuman_receipts::FactsError| {
        CliError::Unavailable(format!("reading the chain: {e}"))
    };
    let report = verify_job(&s.chain, &signed, &domain).await.map_err(unavailable)?;
    let mut failures: Vec<String> =
        report.failures().map(|(k, why)| format!("{k}: {why}")).collect();
    let data_binding = input.map(|i| {
        let kind_fits = matches!(
            (i, signed.body.kind),
            (Input::Dataset { .. }, JobKind::Train | JobKind::Evaluate)
                | (Input::Prompts { .. } | Input::Messages { .. }, JobKind::Infer)
        );
        kind_fits && i.salted() == signed.body.input_data_hash
    });
    if data_binding == Some(false) {
        failures.push(format!(
            "data binding: the receipt of {} job {job_id} does not commit to the given input and salt",
            signed.body.kind
        ));
    }
    let mut lineage = Vec::new();
    if signed.body.kind == JobKind::Train {
        let job = s.api.job(job_id).await?;
        let child = job.derived_model.ok_or_else(|| {
            CliError::VerificationFailed(format!("train job {job_id} has no derived model yet"))
        })?;
        // Every derivation's receipt along the lineage, from the catalogue's source jobs.
        let mut receipts = Vec::new();
        let mut cursor = Some(child.nft.clone());
        while let Some(nft) = cursor {
            let m = s.api.model(&nft).await?;
            if let Some(src) = &m.source_job {
                receipts.push(parse(src, s.api.receipt(src).await?)?);
            }
            cursor = m.card.parent.clone();
        }
        let leaf = crate::session::address("derived model", &child.nft)?;
        let l = verify_lineage(&s.chain, leaf, &receipts, &domain).await.map_err(unavailable)?;
        if !l.passed() {
            failures.push(format!("lineage of {}: a link does not verify", child.nft));
        }
        for link in l.links {
            failures.extend(link.report.failures().map(|(k, why)| format!("{k}: {why}")));
            lineage.push(link.report);
        }
    }
    let mut attested = 0;
    if signed.body.kind == JobKind::Infer && signed.body.consumer == s.me() {
        let r = s.api.result(&s.signer, &s.domain(), job_id).await?;
        let completions: Vec<Completion> =
            r.completions.and_then(|c| serde_json::from_value(c).ok()).unwrap_or_default();
        let atts: Vec<SignedAttestation> =
            r.attestations.and_then(|a| serde_json::from_value(a).ok()).unwrap_or_default();
        if atts.len() != completions.len() {
            failures.push(format!(
                "attestations: {} for {} completions",
                atts.len(),
                completions.len()
            ));
        }
        for (i, (a, c)) in atts.iter().zip(&completions).enumerate() {
            // Signed with the receipt, by its key: the receipt's signature check (above)
            // says whether that key was the operator of the job's time.
            let checked = a.verify(signed.signer, &domain).and_then(|v| {
                v.matches(&c.prompt, &c.text)?;
                Ok(v)
            });
            match checked {
                Ok(v) if v.body().weights_hash == signed.body.input_weights_hash => attested += 1,
                Ok(_) => failures.push(format!("attestation {i}: another model's weights")),
                Err(e) => failures.push(format!("attestation {i}: {e}")),
            }
        }
    }
    let mut evaluation = None;
    if signed.body.kind == JobKind::Evaluate && signed.body.consumer == s.me() {
        let r = s.api.result(&s.signer, &s.domain(), job_id).await?;
        let text = r.report_text.ok_or_else(|| {
            CliError::VerificationFailed(format!("job {job_id} returned no report"))
        })?;
        let rep = verify_evaluation(&s.chain, &signed, text.as_bytes(), signed.body.model, &domain)
            .await
            .map_err(unavailable)?;
        failures.extend(rep.failures().map(|(k, why)| format!("{k}: {why}")));
        evaluation = Some(rep);
    }
    Ok(Verification {
        job_id: job_id.to_string(),
        passed: failures.is_empty(),
        failures,
        report,
        lineage,
        attested,
        evaluation,
        data_binding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: the audit moved to operator tooling; the old command says where, before it
    /// needs a wallet or an API, and names the same job and data dir.
    #[tokio::test]
    async fn verify_audit_says_where_the_audit_went() {
        use clap::Parser;
        let parse = |args: &[&str]| crate::args::Cli::try_parse_from(args);
        let cli = parse(&["posthuman", "verify", "job-7", "--audit", "--data-dir", "/srv/ph"])
            .expect("still parses");
        let cfg = crate::Config::from_cli(&cli);
        let crate::args::Command::Verify(a) = cli.command else { panic!("not verify") };
        let err = run(&cfg, &Out::quiet(), a).await.expect_err("refused");
        assert_eq!(err.exit_code(), 2, "{err}");
        let msg = err.to_string();
        assert!(msg.contains("posthuman-operator audit job-7 --data-dir /srv/ph"), "{msg}");
        assert!(
            parse(&["posthuman", "verify", "job-7", "--data-dir", "/srv/ph"]).is_err(),
            "--data-dir belonged to --audit only"
        );
    }

    /// The salt is what makes the binding checkable: the same input under another salt (or
    /// another input under the same salt) names another hash.
    #[test]
    fn an_input_binds_only_under_its_own_salt() {
        let (s1, s2) = (Hash32([1; 32]), Hash32([2; 32]));
        let d = |salt| Input::Dataset { salt, bytes: b"my data".to_vec() };
        assert_eq!(d(s1).salted(), salted_hash(&s1, &dataset_hash(b"my data")));
        assert_ne!(d(s1).salted(), d(s2).salted());
        assert_ne!(d(s1).salted(), dataset_hash(b"my data"));
        let p = |prompts: &[&str]| Input::Prompts {
            salt: s1,
            prompts: prompts.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(p(&["a", "b"]).salted(), salted_hash(&s1, &prompts_hash(&["a", "b"])));
        assert_ne!(p(&["a", "b"]).salted(), p(&["b", "a"]).salted());
        let m = |c: &str| Input::Messages { salt: s1, messages: vec![ChatMessage::new("user", c)] };
        let want = posthuman_receipts::messages_hash(&[ChatMessage::new("user", "a")]);
        assert_eq!(m("a").salted(), salted_hash(&s1, &want));
        assert_ne!(m("a").salted(), p(&["a"]).salted());
    }
}
