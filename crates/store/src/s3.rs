//! [`S3Store`]: the object store on S3 (work in progress: the AWS SDK wiring lands next).

/// Where the S3 store lives. `endpoint_url` + `force_path_style` point it at LocalStack/moto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    pub endpoint_url: Option<String>,
    pub region: String,
    pub force_path_style: bool,
}

/// S3-backed store (not implemented yet in this commit).
#[derive(Debug)]
pub struct S3Store {
    _cfg: S3Config,
}
