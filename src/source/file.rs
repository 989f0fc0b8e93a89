//! A file of Kubernetes objects as a source.
