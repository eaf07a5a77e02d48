//! The internal HTTP API: one module per area, errors in one place.

pub mod error;
pub mod health;

pub use error::ApiError;
