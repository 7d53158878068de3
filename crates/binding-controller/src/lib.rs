//! ServiceBinding controller: a dedicated PostgresUser and a servicebinding.io Secret per application binding, cross-namespace only with the Cluster's consent.

#![forbid(unsafe_code)]
