//! Compact per-kind indexes of the cluster, updated by [`super::ClusterEvent`]s.
