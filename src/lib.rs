//! tessera: a self-hosted token service.
//!
//! The binary (`tessera`, feature `server`, on by default) issues short-lived
//! ES256 access tokens and rotating refresh tokens; the library holds
//! everything it is built from. Start at [`startup::Application`], which
//! wires a [`config::Config`] into a server.
//!
//! Resource servers depend on the [`verify`] module alone:
//!
//! ```toml
//! tessera = { version = "0.1", default-features = false, features = ["verify"] }
//! ```

#![warn(missing_docs)]

#[cfg(feature = "server")]
pub mod audit;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod authorize;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod clock;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod digest;
#[cfg(feature = "server")]
pub mod federation;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod keys;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod oauth;
#[cfg(feature = "server")]
pub mod revocation;
#[cfg(feature = "server")]
pub mod startup;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod telemetry;
#[cfg(feature = "server")]
pub mod tokens;
/// Bearer-token verification for resource servers: the `tessera-verify`
/// crate (its own crate, so a resource server compiles neither the server
/// nor a database driver).
#[cfg(feature = "verify")]
pub use tessera_verify as verify;
