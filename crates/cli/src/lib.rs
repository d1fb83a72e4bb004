//! `hookline`, the operator tool, as a library so tests can reach its parts.
//!
//! The on-call engineer's commands: `dlq stats|list|export|replay`,
//! `events show`, `objects show`, `config check`, `backfill`; and developer
//! helpers under `dev` (`send` signs and posts a sample event, `aws-setup`
//! creates queues and tables on a local AWS-compatible server).

pub mod backfill;
pub mod config_check;
pub mod console;
pub mod dev;
pub mod dlq;
pub mod erase;
pub mod fixtures;
pub mod keys;
pub mod opts;
pub mod output;
pub mod redeliver;
pub mod show;
