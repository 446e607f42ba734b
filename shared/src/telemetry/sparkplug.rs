//! The Sparkplug B payload (Eclipse Sparkplug 3.0, `sparkplug_b.proto`), the subset a
//! box publishes and a fleet view reads.
//!
//! Field numbers and types are the specification's, so any Sparkplug B decoder reads
//! these messages, and fields this subset leaves out (data sets, templates, property
//! sets) are skipped when decoding another publisher's payload.

/// Sparkplug B datatype codes (`DataType` in the specification) this subset uses.
pub mod datatype {
    /// 32-bit unsigned integer (`int_value`).
    pub const UINT32: u32 = 7;
    /// 64-bit unsigned integer (`long_value`).
    pub const UINT64: u32 = 8;
    /// 32-bit float (`float_value`).
    pub const FLOAT: u32 = 9;
    /// 64-bit float (`double_value`).
    pub const DOUBLE: u32 = 10;
    /// Boolean (`boolean_value`).
    pub const BOOLEAN: u32 = 11;
    /// UTF-8 string (`string_value`).
    pub const STRING: u32 = 12;
    /// Milliseconds since the Unix epoch (`long_value`).
    pub const DATETIME: u32 = 13;
    /// Opaque bytes (`bytes_value`).
    pub const BYTES: u32 = 17;
}

/// A Sparkplug B payload: a timestamp, metrics and the message sequence number.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// When the message was sent (ms since the Unix epoch).
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    /// The metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// Message sequence number, 0–255, per edge node session.
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    /// Schema identifier, unused.
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    /// Opaque body, unused.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// One metric of a payload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Metric name; `/` separates folders.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Alias (unused: every metric goes by name).
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// When the value was measured (ms since the Unix epoch).
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    /// [`datatype`] code.
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    /// A value from the past (delivered from the box's queue after an outage).
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    /// Not to be stored by a historian.
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    /// The value is null (e.g. no score for an uninspected part).
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    /// The value.
    #[prost(oneof = "Value", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<Value>,
}

/// A metric's value (the specification's `oneof value`, without data sets, templates
/// and extensions).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    /// Int8–Int32 and UInt8–UInt32.
    #[prost(uint32, tag = "10")]
    Int(u32),
    /// Int64, UInt64 and DateTime.
    #[prost(uint64, tag = "11")]
    Long(u64),
    /// Float.
    #[prost(float, tag = "12")]
    Float(f32),
    /// Double.
    #[prost(double, tag = "13")]
    Double(f64),
    /// Boolean.
    #[prost(bool, tag = "14")]
    Boolean(bool),
    /// String and Text.
    #[prost(string, tag = "15")]
    String(String),
    /// Bytes and File.
    #[prost(bytes = "vec", tag = "16")]
    Bytes(Vec<u8>),
}

impl Metric {
    fn with(name: &str, datatype: u32, value: Option<Value>) -> Self {
        Self {
            name: Some(name.to_string()),
            datatype: Some(datatype),
            is_null: value.is_none().then_some(true),
            value,
            ..Self::default()
        }
    }

    /// An unsigned 64-bit metric.
    pub fn u64(name: &str, v: u64) -> Self {
        Self::with(name, datatype::UINT64, Some(Value::Long(v)))
    }

    /// A 32-bit float metric; `None` is a null value.
    pub fn f32(name: &str, v: Option<f32>) -> Self {
        Self::with(name, datatype::FLOAT, v.map(Value::Float))
    }

    /// A boolean metric.
    pub fn bool(name: &str, v: bool) -> Self {
        Self::with(name, datatype::BOOLEAN, Some(Value::Boolean(v)))
    }

    /// A string metric.
    pub fn string(name: &str, v: impl Into<String>) -> Self {
        Self::with(name, datatype::STRING, Some(Value::String(v.into())))
    }

    /// A date-time metric (ms since the Unix epoch).
    pub fn datetime(name: &str, unix_ms: u64) -> Self {
        Self::with(name, datatype::DATETIME, Some(Value::Long(unix_ms)))
    }

    /// A bytes metric (e.g. a PNG thumbnail).
    pub fn bytes(name: &str, v: Vec<u8>) -> Self {
        Self::with(name, datatype::BYTES, Some(Value::Bytes(v)))
    }

    /// The value as an unsigned integer, when it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self.value {
            Some(Value::Long(v)) => Some(v),
            Some(Value::Int(v)) => Some(u64::from(v)),
            _ => None,
        }
    }

    /// The value as a float, when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self.value {
            Some(Value::Float(v)) => Some(f64::from(v)),
            Some(Value::Double(v)) => Some(v),
            Some(Value::Long(v)) => Some(v as f64),
            Some(Value::Int(v)) => Some(f64::from(v)),
            _ => None,
        }
    }

    /// The value as a string, when it is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean, when it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Some(Value::Boolean(b)) => Some(b),
            _ => None,
        }
    }
}

impl Payload {
    /// The metric called `name`, if present.
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name() == name)
    }

    /// Protobuf bytes.
    pub fn encode(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(self)
    }

    /// Decode protobuf bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        prost::Message::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of a payload as the reference `sparkplug_b.proto` encodes it, written
    /// out by hand from the protobuf encoding rules: timestamp 1000, seq 3, one metric
    /// "a" of type UInt64 with value 5.
    #[test]
    fn encoding_matches_the_specification_field_numbers() {
        let p = Payload {
            timestamp: Some(1000),
            metrics: vec![Metric::u64("a", 5)],
            seq: Some(3),
            ..Payload::default()
        };
        let metric = [0x0a, 0x01, b'a', 0x20, 0x08, 0x58, 0x05];
        let mut want = vec![0x08, 0xe8, 0x07, 0x12, metric.len() as u8];
        want.extend_from_slice(&metric);
        want.extend_from_slice(&[0x18, 0x03]);
        assert_eq!(p.encode(), want);
        assert_eq!(Payload::decode(&want).unwrap(), p);
    }

    #[test]
    fn null_values_are_flagged_and_fields_this_subset_lacks_are_skipped() {
        let mut bytes = Payload { metrics: vec![Metric::f32("score", None)], ..Payload::default() }.encode();
        // A metric with a property set (field 9) from another publisher.
        bytes.extend_from_slice(&[0x12, 0x05, 0x0a, 0x01, b'b', 0x4a, 0x00]);
        let p = Payload::decode(&bytes).unwrap();
        assert_eq!(p.metrics[0].is_null, Some(true));
        assert_eq!(p.metrics[0].as_f64(), None);
        assert_eq!(p.metrics[1].name(), "b");
    }
}
