//! Backup controller: one pgBackRest Job per Backup against the primary's pgBackRest TLS server, with its result in status.

#![forbid(unsafe_code)]
