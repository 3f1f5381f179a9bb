//! Integration tests: the real application on a random port, a fresh
//! database per test, spoken to over HTTP; store behaviour on both engines.

mod helpers;

mod admin;
mod audit;
mod authorize;
mod browser;
mod caches;
mod cli;
mod cookie;
mod custody;
mod dpop;
mod fuzz_regressions;
mod hardening;
mod health;
mod hostile;
mod hsm;
mod interop;
mod keys;
mod metrics;
mod openapi;
mod races;
mod readme;
mod revocation;
mod sessions;
mod store;
mod sweep;
mod throttle;
mod token;
mod token_exchange;
mod tokens;
mod upgrade;
mod verify;
