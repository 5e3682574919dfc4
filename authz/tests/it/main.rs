//! In-process tests of Google token verification against the local stand-in: every rejection
//! reason, outages, and the JWKS refetch guard. (The end-to-end tests under /tests run the same
//! cases through a real Envoy.)
// Integration tests: a panic with the value is the failure report.
#![allow(clippy::unwrap_used)]

mod client_metadata;
mod groups;
mod moto;
mod policies;
mod secrets;
mod shutdown;
mod store;
mod verification;
