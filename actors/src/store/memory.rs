//! In-process implementation of the state-store port.
