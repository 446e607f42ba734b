//! `kensa-fw`: read the configuration, build the concrete devices, run the line.

use clap::Parser;

/// Kensa edge daemon.
#[derive(Debug, Parser)]
#[command(name = "kensa-fw", version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
    println!(
        "kensa-fw {} (wire protocol {})",
        env!("CARGO_PKG_VERSION"),
        kensa_shared::wire::PROTOCOL_VERSION
    );
}
