//! One module per command; [`run`] picks it.

mod backbone;
mod bench;
mod demo;
mod diag;
mod eval;
mod export;
mod flash;
mod fleet;
mod inspect;
mod keys;
mod predict;
mod synth;
mod train;

use anyhow::Result;
use kensa_core::model::TrainedModel;

use crate::cli::{BackboneCmd, Command, OperatingArgs};

/// Apply `--threshold` / `--frr` to `model`, saying what the operating point now is.
fn operating_point(model: &mut TrainedModel, a: &OperatingArgs) -> Result<()> {
    if a.threshold.is_none() && a.frr.is_none() {
        return Ok(());
    }
    let before = model.threshold.value;
    kensa_core::train::threshold::set_operating_point(model, a.threshold, a.frr, a.confidence)?;
    say!(
        "operating threshold {:.4} ({}) instead of the model's {before:.4}",
        model.threshold.value,
        model.threshold.rule
    );
    Ok(())
}

/// Run one command.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Backbone(BackboneCmd::Import { pth, out, features, truncate, scaling }) => {
            backbone::import(&pth, &out, &features, !truncate, scaling.into())
        }
        Command::Backbone(BackboneCmd::Classify { model, images }) => backbone::classify(&model, &images),
        Command::Demo { out, surface } => demo::run(&out, surface.into()),
        Command::Train(a) => train::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Predict(a) => predict::run(&a),
        Command::Export(a) => export::run(&a),
        Command::Keygen { out } => keys::keygen(&out),
        Command::Sign { file, key } => keys::sign(&file, &key),
        Command::InspectModel { model } => inspect::model(&model),
        Command::InspectPackage { package, extract_onnx } => inspect::run(&package, extract_onnx.as_deref()),
        Command::Bench { model, package, threads, profile, integer_products, images, runs } => {
            let how = bench::How { threads, profile, integer_products };
            bench::run(model.as_deref(), package.as_deref(), how, &images, runs)
        }
        Command::Diag { port, baud, action } => diag::run(&port, baud, &action),
        Command::Flash { port, package, firmware, wait, baud } => {
            flash::run(&port, baud, package.as_deref(), firmware.as_deref(), wait)
        }
        Command::Upgrade { package, out, sign, data } => {
            export::upgrade(&package, &out, sign.as_deref(), data.as_deref())
        }
        Command::Synth(a) => synth::run(&a),
        Command::Fleet(a) => fleet::run(&a),
        Command::Version => {
            say!("kensa {}", env!("CARGO_PKG_VERSION"));
            say!("wire protocol {}", kensa_shared::wire::PROTOCOL_VERSION);
            Ok(())
        }
    }
}
