//! The internal HTTP API: one module per area, errors in one place.

pub mod auth;
pub mod error;
pub mod health;
pub mod preferences;

pub use error::ApiError;
