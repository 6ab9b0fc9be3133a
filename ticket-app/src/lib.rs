//! The ticket service.
