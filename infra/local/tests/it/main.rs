//! The integration tests, one binary (one link of the AWS SDK): the pipeline against moto and
//! the Cloudinary emulator, the client against the emulator, `ocr-ctl`, the shipped bootstraps
//! through the Runtime API, the template's invariants and the chaos run. `make test` starts
//! moto; a test that needs it fails (never skips) when it is not running.

mod chaos;
mod cloudinary_client;
mod common;
mod ctl;
mod ctl_guards;
mod deleted_ctl;
mod deploy_day;
mod extract;
mod layering;
mod live;
mod log_levels;
mod notifications_sdk;
mod notify_ctl;
mod pipeline;
mod redrive;
mod runtime_api;
mod spend;
mod template;
mod transformed;
