//! The body of every service's `main`: logging, signals, run, exit code.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use crate::args::CommonArgs;
use crate::shutdown::Shutdown;
use crate::telemetry::init_tracing;

/// Sets up tracing for `service`, installs the SIGTERM/SIGINT handlers, runs
/// `body` and turns its outcome into an exit code. A failure is logged and
/// also printed to stderr, so it is visible without a log pipeline.
pub async fn run_service<F, Fut, E>(service: &'static str, common: &CommonArgs, body: F) -> ExitCode
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let _telemetry = match init_tracing(service, common.log_format, &common.log_filter) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("{service}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match Shutdown::on_signals() {
        Ok(shutdown) => body(shutdown).await.map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "{service} failed");
            eprintln!("{service}: error: {err}");
            ExitCode::FAILURE
        }
    }
}
