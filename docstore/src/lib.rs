//! A MongoDB-wire server: what tankd mounts on its database listener so that services
//! reach their own database with an ordinary MongoDB driver.
//!
//! The crate knows nothing of tankd: the agent hands it a [`Resolver`] that turns a user
//! name into its tenant (database name and derived password). Layers, top to bottom:
//! - [`server`]: the listener, one task per connection, bounded;
//! - [`conn`]: a connection's frames, its authentication state, and the dispatch of a
//!   command to its handler;
//! - [`auth`]: `saslStart`/`saslContinue` and the speculative form in `hello`;
//! - [`handshake`]: `hello`, `ping`, `buildInfo`: what a driver sends on connect;
//! - [`scram`]: SCRAM-SHA-256, server side;
//! - [`wire`]: the message formats (OP_MSG, and OP_QUERY/OP_REPLY for the legacy
//!   `hello` that mongosh still sends first);
//! - [`error`]: MongoDB's error codes, named once.

mod aggregate;
mod auth;
pub mod bsonx;
mod conn;
mod crud;
pub mod error;
mod handshake;
pub mod index;
mod index_commands;
mod projection;
pub mod query;
pub mod scram;
mod server;
pub mod store;
mod update;
pub mod wire;

pub use server::{Config, Resolver, Server, Tenant};
