//! An in-memory twin of the OCR service: scripted answers and faults, and a count of what it
//! was asked and billed for. It speaks the port's domain types, never Cloudinary's JSON. As
//! Cloudinary does, it bills an OCR request that reaches it, and a read-back of an asset whose
//! OCR was never requested finds none.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use super::{OcrAnswer, OcrService};
use crate::error::RemoteError;
use crate::fault::FaultPlan;
use crate::message::WorkMessage;
use crate::ocr::{AssetFields, OcrOutcome, OcrResult};
use crate::rate_gate::Quota;

/// The OCR service's two calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OcrCall {
    /// Switching OCR on: paid.
    Request,
    /// Reading a result back: free.
    Fetch,
}

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scripted {
    Answer(OcrOutcome),
    /// Refused before any OCR ran (not billed).
    Fail(RemoteError),
    /// The OCR ran and was billed, but the caller saw this error (a timeout, a dropped
    /// connection).
    BilledThenFail(RemoteError),
}

/// The OCR service in memory. Unscripted assets answer with the text `text of {public_id}`.
/// Assets are named by their item key (the public_id itself for an `upload` asset; see
/// [`crate::message::item_key`]), so one public_id under two delivery types is two assets.
#[derive(Debug, Default)]
pub struct ScriptedOcr {
    scripts: Mutex<HashMap<(OcrCall, String), VecDeque<Scripted>>>,
    calls: Mutex<HashMap<(OcrCall, String), u32>>,
    billed: Mutex<HashMap<String, u32>>,
    /// Assets with an OCR on them (requested, billed).
    ocr_on: Mutex<HashSet<String>>,
    faults: FaultPlan<OcrCall>,
    quota: Mutex<Option<Quota>>,
    latency: Duration,
    upload_api: bool,
    /// Whether several assets are read back in one call, and whether that answer carries the
    /// OCR (`Some(false)`: it names the assets without it).
    bulk: Option<bool>,
    bulk_calls: Mutex<Vec<usize>>,
    /// Calls that read several assets back still to fail, each with this error.
    bulk_failures: Mutex<VecDeque<RemoteError>>,
}

impl ScriptedOcr {
    pub fn new() -> Self {
        Self::default()
    }

    /// OCR requests go to the Upload API (as `explicit` does); read-backs stay on the Admin API.
    pub fn requesting_on_the_upload_api(mut self) -> Self {
        self.upload_api = true;
        self
    }

    /// Reads several assets back in one call; `carries_ocr: false` answers as a service that
    /// leaves the OCR out of that answer.
    pub fn reading_back_in_bulk(mut self, carries_ocr: bool) -> Self {
        self.bulk = Some(carries_ocr);
        self
    }

    /// The next calls that read several assets back fail, one with each of these errors.
    pub fn failing_bulk_calls(self, errors: impl IntoIterator<Item = RemoteError>) -> Self {
        self.bulk_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(errors);
        self
    }

    /// The calls that read several assets back, by how many each named.
    pub fn bulk_calls(&self) -> Vec<usize> {
        self.bulk_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every call takes this long (in tokio time).
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// The next calls of `call` for `public_id` answer these, in order.
    pub fn script(
        &self,
        call: OcrCall,
        public_id: &str,
        answers: impl IntoIterator<Item = Scripted>,
    ) {
        self.scripts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((call, public_id.to_string()))
            .or_default()
            .extend(answers);
    }

    /// Faults for every asset: the next calls of `call` fail with this class.
    pub fn faults(&self) -> &FaultPlan<OcrCall> {
        &self.faults
    }

    /// The quota every answer reports from now on (`None`: no quota headers, as the Upload API).
    pub fn report_quota(&self, quota: Option<Quota>) {
        *self.quota.lock().unwrap_or_else(|e| e.into_inner()) = quota;
    }

    /// Calls of `call` made for `public_id`.
    pub fn calls(&self, call: OcrCall, public_id: &str) -> u32 {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(call, public_id.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// OCRs billed for `public_id`.
    pub fn billed(&self, public_id: &str) -> u32 {
        self.billed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(public_id)
            .copied()
            .unwrap_or(0)
    }

    /// Calls of `call` over all assets.
    pub fn total_calls(&self, call: OcrCall) -> u32 {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((c, _), _)| *c == call)
            .map(|(_, n)| n)
            .sum()
    }

    async fn answer(&self, call: OcrCall, message: &WorkMessage) -> Result<OcrAnswer, RemoteError> {
        tokio::time::sleep(self.latency).await;
        let asset = message.item_key();
        let key = (call, asset.clone());
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default() += 1;
        if let Some(class) = self.faults.call(call) {
            return Err(RemoteError::new(class, format!("injected {class:?} fault")));
        }
        let scripted = self
            .scripts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&key)
            .and_then(VecDeque::pop_front);
        let outcome = self.outcome(scripted, call, message)?;
        let pages = match &outcome {
            OcrOutcome::Text { text, .. } => {
                text.matches(crate::ocr::PAGE_BREAK).count() as u32 + 1
            }
            OcrOutcome::NoText => 1,
            _ => 0,
        };
        Ok(OcrAnswer {
            result: OcrResult {
                outcome,
                asset: AssetFields {
                    format: Some("png".into()),
                    version: message.version,
                    ..AssetFields::default()
                },
                pages,
            },
            // The Upload API's answers carry no quota headers.
            quota: if call == OcrCall::Request && self.upload_api {
                None
            } else {
                *self.quota.lock().unwrap_or_else(|e| e.into_inner())
            },
            latency: self.latency,
        })
    }
}

impl ScriptedOcr {
    /// A request the caller gave up on arrives now, runs and is billed (Cloudinary's side
    /// goes on once the connection is gone).
    pub fn arrives_late(&self, asset: &str) {
        self.bill(asset);
    }

    /// Counts an OCR that ran (billed) on the asset.
    fn bill(&self, asset: &str) {
        *self
            .billed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(asset.to_string())
            .or_default() += 1;
        self.ocr_on
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(asset.to_string());
    }

    /// What a call answers: its script's next answer, or Cloudinary's default (an OCR request
    /// runs and is billed; a read-back finds an OCR only where one ran).
    fn outcome(
        &self,
        scripted: Option<Scripted>,
        call: OcrCall,
        message: &WorkMessage,
    ) -> Result<OcrOutcome, RemoteError> {
        let asset = message.item_key();
        match (scripted, call) {
            (Some(Scripted::Fail(e)), _) => Err(e),
            (Some(Scripted::BilledThenFail(e)), OcrCall::Request) => {
                self.bill(&asset);
                Err(e)
            }
            (Some(Scripted::BilledThenFail(e)), OcrCall::Fetch) => Err(e),
            (Some(Scripted::Answer(outcome)), OcrCall::Request) => {
                self.bill(&asset);
                Ok(outcome)
            }
            (Some(Scripted::Answer(outcome)), OcrCall::Fetch) => Ok(outcome),
            (None, OcrCall::Request) => {
                self.bill(&asset);
                Ok(default_text(message))
            }
            (None, OcrCall::Fetch) => {
                let on = self
                    .ocr_on
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&asset);
                Ok(if on {
                    default_text(message)
                } else {
                    OcrOutcome::NotRequested
                })
            }
        }
    }
}

fn default_text(message: &WorkMessage) -> OcrOutcome {
    OcrOutcome::Text {
        text: format!("text of {}", message.public_id),
        locale: Some("en".into()),
    }
}

impl OcrService for ScriptedOcr {
    fn request_api(&self) -> super::Api {
        if self.upload_api {
            super::Api::Upload
        } else {
            super::Api::Admin
        }
    }

    async fn request_ocr(&self, message: &WorkMessage) -> Result<OcrAnswer, RemoteError> {
        self.answer(OcrCall::Request, message).await
    }

    async fn fetch_result(&self, message: &WorkMessage) -> Result<OcrAnswer, RemoteError> {
        self.answer(OcrCall::Fetch, message).await
    }

    async fn fetch_results(
        &self,
        messages: &[&WorkMessage],
    ) -> Option<Result<super::BulkAnswer, RemoteError>> {
        let carries_ocr = self.bulk?;
        tokio::time::sleep(self.latency).await;
        self.bulk_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(messages.len());
        if let Some(class) = self.faults.call(OcrCall::Fetch) {
            return Some(Err(RemoteError::new(
                class,
                format!("injected {class:?} fault"),
            )));
        }
        let failure = self
            .bulk_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        if let Some(e) = failure {
            return Some(Err(e));
        }
        let ocr_on = self.ocr_on.lock().unwrap_or_else(|e| e.into_inner());
        let results = messages
            .iter()
            .map(|m| {
                let outcome = if carries_ocr && ocr_on.contains(&m.item_key()) {
                    default_text(m)
                } else {
                    OcrOutcome::NotRequested
                };
                Some(OcrResult {
                    outcome,
                    asset: AssetFields {
                        format: Some("png".into()),
                        version: m.version,
                        ..AssetFields::default()
                    },
                    pages: 0,
                })
            })
            .collect();
        Some(Ok(super::BulkAnswer {
            results,
            quota: *self.quota.lock().unwrap_or_else(|e| e.into_inner()),
            latency: self.latency,
        }))
    }
}
