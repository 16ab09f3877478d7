//! `posthuman-api-lambda`: the API router behind API Gateway (`lambda_http`). Thin: builds
//! the AWS dependencies from the environment and hands the shared router to the runtime.

use posthuman_functions::{api, aws};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    aws::init_lambda_logging();
    let cfg = aws::AwsConfig::from_env()?;
    let deps = aws::deps(cfg).await?;
    lambda_http::run(api::router(deps, None)).await
}
