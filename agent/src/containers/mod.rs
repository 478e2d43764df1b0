//! Containers on tankd mounts: `/imageapi/v1/container`.
//!
//! A container is a record (`<data_dir>/containers/state.json`) and, once started, a
//! shim process (`shim.rs`) that makes the namespaces and is the parent of the
//! container's PID 1 (`init.rs` sets up the root and execs the command). Containers
//! outlive tankd: on start it re-adopts running ones by pid and process start time
//! (pid reuse cannot fool it) and learns how finished ones ended from the exit file the
//! shim wrote.

mod cgroup;
mod devices;
pub mod init;
mod lifecycle;
mod logread;
mod net;
pub mod netpolicy;
mod reconcile;
mod routes;
mod seccomp;
pub mod shim;
mod store;
pub(crate) mod userns;

pub use routes::routes;
pub use store::Containers;
