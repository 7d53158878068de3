//! PGUpgrade controller: PostgreSQL major upgrades orchestrated as a gated, resumable state machine.

#![forbid(unsafe_code)]
