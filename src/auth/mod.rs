//! Users, passwords and clients: who may obtain tokens, and how they prove it.

pub mod accounts;
pub mod client;
pub mod gate;
pub mod login;
pub mod names;
pub mod network;
pub mod password;
pub mod rate_limit;
pub mod throttle;
pub mod totp;
