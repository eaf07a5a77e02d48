//! Redis implementation of the state-store port.
