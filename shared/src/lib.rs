//! The pipeline's library: everything the lister and worker functions do, without Lambda.
//!
//! Ports are traits ([`worker::OcrService`], [`store::ResultStore`], [`queue::WorkQueue`],
//! [`lister::AssetSource`], ...); the use cases ([`worker::Worker`], [`lister::run_lister`]) are
//! generic over them, so the same code runs in Lambda, in the local runner and in tests.

pub mod clock;
pub mod cloudinary;
pub mod config;
pub mod error;
pub mod lister;
pub mod message;
pub mod ocr;
pub mod queue;
pub mod rate_gate;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod worker;
