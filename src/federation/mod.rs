//! Trusted upstream identity providers (RFC 8693 token exchange): their
//! JWKS, fetched and cached by tessera ([`jwks`]), and the checks their ID
//! tokens and JWTs pass before tessera opens a session for the user they
//! name ([`upstream`]). Registering issuers and linking users: [`issuers`].

pub mod issuers;
pub mod jwks;
pub mod upstream;
