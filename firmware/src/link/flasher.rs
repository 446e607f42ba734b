//! Model and firmware flashing, and settings saved over the link: on the port thread, so
//! that file I/O, verification and loading never hold up a part.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use kensa_shared::package::{Signature, VerifyingKey};
use kensa_shared::wire::{DeviceError, FlashRequest, FlashTarget, Reply, StationRequest};

use super::InForce;
use crate::model::Model;
use crate::schedule::BeltTiming;
use crate::store::{SavedReject, SavedThreshold, Store, StoreError};

/// Firmware flashing, for a daemon a supervisor can restart into the upload.
#[derive(Debug)]
pub struct FirmwareFlasher {
    /// Where firmware uploads land.
    pub store: Store,
    /// The first bytes of the running executable (its machine).
    pub running_header: Vec<u8>,
}

/// Model (and firmware) flashing and saved settings, run on the port thread so that file
/// I/O, verification and loading never hold up the station.
#[derive(Debug)]
pub struct Flasher {
    /// Where model uploads land and settings are saved.
    pub store: Store,
    /// Keys a flashed package or firmware must be signed by (empty: any intact upload).
    pub trusted: Vec<VerifyingKey>,
    /// The inspector's intake of new models.
    pub swap: mpsc::Sender<Model>,
    /// Shown by `Info`, keys saved settings.
    pub model: Arc<Mutex<InForce>>,
    /// Present when firmware can be flashed (started by a supervisor).
    pub firmware: Option<FirmwareFlasher>,
    /// The upload in progress: a firmware one with its signature, or a model one.
    uploading: Option<FlashTarget>,
    /// Reject timing in force, to check a new one against.
    timing: BeltTiming,
    /// How much longer than a model's measured latency the belt delay must be (µs).
    margin_us: u64,
}

impl Flasher {
    /// Flash into `store`; firmware too when `firmware` is given.
    pub fn new(
        store: Store,
        trusted: Vec<VerifyingKey>,
        swap: mpsc::Sender<Model>,
        model: Arc<Mutex<InForce>>,
        firmware: Option<FirmwareFlasher>,
        timing: BeltTiming,
    ) -> Self {
        Self { store, trusted, swap, model, firmware, uploading: None, timing, margin_us: 0 }
    }

    /// Refuse a model, or a belt delay, that leaves less than `margin_us` beyond the
    /// model's measured latency.
    pub fn with_latency_margin(mut self, margin_us: u64) -> Self {
        self.margin_us = margin_us;
        self
    }

    /// The store the upload in progress goes to.
    fn target_store(&mut self) -> Result<&mut Store, DeviceError> {
        match &self.uploading {
            Some(FlashTarget::Firmware { .. }) => self
                .firmware
                .as_mut()
                .map(|f| &mut f.store)
                .ok_or_else(|| DeviceError::Failed("firmware flashing is not available".into())),
            Some(FlashTarget::Model) => Ok(&mut self.store),
            None => Err(DeviceError::Failed(StoreError::NoUpload.to_string())),
        }
    }

    /// Save a setting before the station applies it: `Ok(false)` when it is not one
    /// that is saved, an error when it is invalid or cannot be saved (then it is not
    /// applied either, so that what runs is what a restart brings back).
    pub(super) fn save_setting(&mut self, req: &StationRequest) -> Result<bool, DeviceError> {
        let mut settings = self.store.settings();
        match *req {
            StationRequest::SetThreshold(value) if value.is_finite() => {
                let model = self.model.lock().map(|m| m.sha256.clone()).unwrap_or_default();
                settings.threshold = Some(SavedThreshold { model, value });
            }
            StationRequest::SetReject { delay_ms, pulse_ms } => {
                let timing = self.timing.with_reject(delay_ms, pulse_ms).map_err(DeviceError::Failed)?;
                let p99 = self.model.lock().ok().and_then(|m| m.latency_p99_us);
                crate::station::delay_fits(timing.delay_us, p99, self.margin_us)
                    .map_err(|a| DeviceError::Failed(format!("refused: {a}")))?;
                self.timing = timing;
                settings.reject = Some(SavedReject { delay_ms, pulse_ms });
            }
            _ => return Ok(false),
        }
        self.store
            .save_settings(&settings)
            .map_err(|e| DeviceError::Failed(format!("saving settings: {e}")))?;
        if let Ok(mut m) = self.model.lock() {
            m.threshold_saved |= settings.threshold.is_some_and(|t| t.model == m.sha256);
            m.reject_saved |= settings.reject.is_some();
        }
        Ok(true)
    }

    /// Carry out one upload step.
    pub(super) fn handle(&mut self, req: &FlashRequest) -> Result<Reply, DeviceError> {
        let failed = |e: StoreError| DeviceError::Failed(e.to_string());
        match req {
            FlashRequest::Begin { target, size, sha256 } => {
                if matches!(target, FlashTarget::Firmware { .. }) && self.firmware.is_none() {
                    return Err(DeviceError::Failed(
                        "firmware can be flashed only to a box started with `kensa-fw --supervise`".into(),
                    ));
                }
                self.uploading = Some(target.clone());
                self.target_store()?.begin(*size, sha256).map(Reply::FlashOffset).map_err(failed)
            }
            FlashRequest::Chunk { offset, data } => {
                self.target_store()?.write(*offset, data).map(Reply::FlashOffset).map_err(failed)
            }
            FlashRequest::Commit if matches!(self.uploading, Some(FlashTarget::Firmware { .. })) => {
                let signature = match &self.uploading {
                    Some(FlashTarget::Firmware { signature }) => signature.clone(),
                    _ => None,
                };
                let fw = self.firmware.as_mut().expect("checked at begin");
                let trusted = &self.trusted;
                let header = &fw.running_header;
                let path = fw
                    .store
                    .commit_trial(|bytes| {
                        let sig = signature
                            .as_deref()
                            .map(Signature::from_slice)
                            .transpose()
                            .map_err(|_| "firmware signature is malformed".to_string())?;
                        Signature::verify_detached(sig.as_ref(), bytes, trusted).map_err(firmware_trust)?;
                        crate::supervisor::check_binary(bytes, header)
                    })
                    .map_err(|e| {
                        tracing::error!("flashed firmware refused: {e}");
                        failed(e)
                    })?;
                tracing::warn!("firmware flashed to {}: restarting into it on trial", path.display());
                self.uploading = None;
                Ok(Reply::Restarting)
            }
            FlashRequest::Commit => {
                let mut loaded = None;
                let samples = self.store.samples();
                let (timing, margin_us) = (self.timing, self.margin_us);
                let path = self
                    .store
                    .commit(|bytes| {
                        let mut m = Model::from_bytes(bytes, "flashed package", &self.trusted)
                            .map_err(|e| e.to_string())?;
                        let p99 = m.self_test(&samples)?;
                        crate::station::delay_fits(timing.delay_us, Some(p99), margin_us).map_err(|a| {
                            format!("the model cannot keep up with the belt on this box: {a}")
                        })?;
                        loaded = Some(m);
                        Ok(())
                    })
                    .map_err(|e| {
                        tracing::error!("flashed model refused: {e}");
                        failed(e)
                    })?;
                let m = loaded.expect("verified before commit");
                let name = m.describe();
                tracing::warn!("flashed {} to {}: it runs from the next part", name, path.display());
                if let Ok(mut active) = self.model.lock() {
                    let origin =
                        path.file_name().map_or("the store".into(), |n| n.to_string_lossy().into_owned());
                    *active = InForce::of(&m, origin, false, active.reject_saved);
                }
                self.swap
                    .send(m)
                    .map_err(|_| DeviceError::Failed("the inspection pipeline has stopped".into()))?;
                Ok(Reply::Flashed(name))
            }
        }
    }
}

/// A refused firmware signature, in the technician's words.
fn firmware_trust(e: kensa_shared::package::PackageError) -> String {
    use kensa_shared::package::PackageError;
    match e {
        PackageError::Unsigned => "firmware is not signed, and this box accepts only signed firmware".into(),
        PackageError::UntrustedSigner(k) => format!("firmware is signed by {k}, which is not a trusted key"),
        _ => "firmware signature does not verify (altered after signing, or a bad signature)".into(),
    }
}

pub(super) fn no_store() -> DeviceError {
    DeviceError::Failed("this box has no store configured (model.store or --store)".into())
}
