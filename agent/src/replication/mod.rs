//! Pull replication between tankd nodes (issue 21): a receiving tankd pulls a dataset's
//! snapshots from another tankd's download endpoint and `zfs receive`s them, full the
//! first time, then incremental from the newest snapshot both sides share.
//!
//! So far: [`local`], what a node has of a dataset (one `zfs list`), and [`plan`], which
//! decides the next stream from what each side has. The transfer, the routes and the
//! state kept in ZFS come next.

pub mod local;
pub mod plan;
