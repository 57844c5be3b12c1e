//! Runs the pipeline without AWS: SDK clients for the local AWS endpoint (moto), provisioning
//! of the stack's tables and queues, and the loop that does what the SQS event source
//! mapping does around the worker.

pub mod aws;
pub mod provision;
pub mod runner;
