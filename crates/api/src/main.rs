//! The `ferry-api` binary: parse config, then run with shared plumbing.

use std::process::ExitCode;

use clap::Parser as _;
use ferry_api::{Args, SERVICE_NAME};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let common = args.common.clone();
    ferry_common::run_service(SERVICE_NAME, &common, |shutdown| {
        ferry_api::run(args, shutdown)
    })
    .await
}
