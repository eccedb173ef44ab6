//! The `ferry-proxy` binary: parse config, then run with shared plumbing.

use std::process::ExitCode;

use clap::Parser as _;
use ferry_proxy::{Args, SERVICE_NAME};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let common = args.common.clone();
    ferry_common::run_service(SERVICE_NAME, &common, |shutdown| {
        ferry_proxy::run(args, shutdown)
    })
    .await
}
