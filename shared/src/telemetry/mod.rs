//! Fleet telemetry: what a box publishes to the plant's MQTT broker, as Sparkplug B.
//!
//! A box is a Sparkplug edge node (`spBv1.0/<group>/…/<node>`) with one device,
//! [`records::DEVICE`]. It announces itself with NBIRTH and DBIRTH, sends one DDATA per
//! part and per status change, and leaves its NDEATH with the broker as the MQTT last
//! will. Both the box (encoding) and `kensa fleet` (decoding) use this module, so a
//! metric is named in one place.

pub mod broker;
pub mod records;
pub mod sparkplug;
pub mod topic;

pub use broker::BrokerUrl;
pub use records::{Birth, Message, PartRecord, Record, RecordBody, StatusRecord};
pub use sparkplug::{Metric, Payload};
pub use topic::{MessageType, Topic};
