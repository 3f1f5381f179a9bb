//! tessera: a self-hosted token service.
//!
//! The binary (`tessera`) issues short-lived ES256 access tokens and rotating
//! refresh tokens; this library holds everything it is built from. Start at
//! [`startup::Application`], which wires a [`config::Config`] into a server.

#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod http;
pub mod keys;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
