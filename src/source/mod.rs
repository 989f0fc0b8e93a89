//! Where cluster objects come from. Every source emits [`crate::cluster::ClusterEvent`]s on one
//! channel; the zone builder turns them into snapshots.

pub mod file;
pub mod kube;
pub(crate) mod pages;
mod precedence;
pub mod trimmed;
