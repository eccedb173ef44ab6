//! The subcommands.

pub mod auth;
pub mod builds;
pub mod deploy;
pub mod domains;
pub mod jobs;
pub mod logs;
pub mod org;
pub mod project;
