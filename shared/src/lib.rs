//! The pipeline's library: everything the lister and worker functions do, without Lambda.
//!
//! Ports are traits ([`worker::OcrService`], [`store::ResultStore`], [`queue::WorkQueue`],
//! [`lister::AssetSource`], ...); the use cases ([`worker::Worker`], [`lister::run_lister`]) are
//! generic over them, so the same code runs in Lambda, in the local runner and in tests. Each
//! port's adapter sits beside it, with an in-memory twin (feature `memory`) that the unit
//! tier runs the use cases against in paused time.

pub mod aws;
pub mod budget;
pub mod clock;
pub mod cloudinary;
pub mod config;
pub mod defaults;
pub mod error;
#[cfg(any(test, feature = "memory"))]
pub mod fault;
pub mod lister;
pub mod message;
pub mod notify;
pub mod ocr;
pub mod queue;
pub mod rate_gate;
pub mod scope;
pub mod secret;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod worker;
