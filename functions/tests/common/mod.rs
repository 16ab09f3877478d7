//! Helpers shared by the integration tests: specs, twins (moto/LocalStack) discovery.
#![allow(dead_code)]

use posthuman_types::{InferParams, JobParams, JobSpec, Sampling};

/// A small valid infer spec (no dataset needed).
pub fn infer_spec(job_id: &str) -> JobSpec {
    JobSpec {
        job_id: job_id.to_string(),
        model_prefix: "models/m1".into(),
        dataset_key: None,
        private_prefix: format!("jobs/{job_id}/private"),
        public_prefix: format!("jobs/{job_id}/public"),
        params: JobParams::Infer(InferParams {
            prompts: vec!["hello".into()],
            max_new_tokens: 4,
            sampling: Sampling::default(),
            stop: vec![],
        }),
        budget: None,
        salt: None,
    }
}

/// The endpoint of a local AWS twin from `env_var`, or `None` after printing a loud SKIPPED
/// line — unless CI or POSTHUMAN_REQUIRE_TWINS=1 demands the twins, then it panics.
pub fn twin_endpoint(env_var: &str, test: &str) -> Option<String> {
    match std::env::var(env_var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let required = std::env::var("CI").is_ok()
                || std::env::var("POSTHUMAN_REQUIRE_TWINS").as_deref() == Ok("1");
            assert!(!required, "{test}: {env_var} is not set but the twins are required");
            eprintln!(
                "\n!!!!!!!! SKIPPED {test}: {env_var} is unset (run under localstack/twins.sh) !!!!!!!!\n"
            );
            None
        }
    }
}

/// A unique suffix per test run, for names in shared twins.
pub fn unique(tag: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{tag}-{:x}-{}", nanos, std::process::id())
}
