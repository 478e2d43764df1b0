//! Wire types shared by every tankd endpoint and client.
//!
//! Types here are plain data with serde derives; the agent builds them, clients parse
//! them. Field names are the wire names.

pub mod containers;
pub mod control;
pub mod health;
pub mod imageapi;
pub mod imagestore;
pub mod problem;
pub mod streams;

pub use health::{Health, HealthStatus, PoolHealth, ZfsVersions};
pub use problem::{ErrorBody, ErrorDetail, ErrorKind};
