//! The internal HTTP API: one module per area, errors in one place.

pub mod api;
pub mod auth;
pub mod dead_letters;
pub mod durations;
pub mod error;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod preferences;
pub mod preview;
pub mod schedule;
pub mod sink;
pub mod state;
pub mod tasks;
pub mod worker;

pub use error::ApiError;
