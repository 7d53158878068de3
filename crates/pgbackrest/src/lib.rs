//! pgBackRest configuration rendered from a Cluster's backup spec.

#![forbid(unsafe_code)]
