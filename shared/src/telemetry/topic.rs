//! Sparkplug B topic namespace: `spBv1.0/<group>/<message type>/<edge node>[/<device>]`.

use std::fmt;

/// The Sparkplug B namespace element.
pub const NAMESPACE: &str = "spBv1.0";

/// Message types a box publishes or a fleet view reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Edge node birth certificate.
    NBirth,
    /// Edge node death certificate (the MQTT last will).
    NDeath,
    /// Device birth certificate.
    DBirth,
    /// Device death certificate.
    DDeath,
    /// Edge node data.
    NData,
    /// Device data.
    DData,
    /// Edge node command.
    NCmd,
    /// Device command.
    DCmd,
}

impl MessageType {
    /// The spelling in topics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NBirth => "NBIRTH",
            Self::NDeath => "NDEATH",
            Self::DBirth => "DBIRTH",
            Self::DDeath => "DDEATH",
            Self::NData => "NDATA",
            Self::DData => "DDATA",
            Self::NCmd => "NCMD",
            Self::DCmd => "DCMD",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::NBirth,
            Self::NDeath,
            Self::DBirth,
            Self::DDeath,
            Self::NData,
            Self::DData,
            Self::NCmd,
            Self::DCmd,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }

    /// Whether the topic names a device after the node.
    pub fn is_device(self) -> bool {
        matches!(self, Self::DBirth | Self::DDeath | Self::DData | Self::DCmd)
    }
}

/// One Sparkplug B topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// Group id (a plant, a hall).
    pub group: String,
    /// What the message is.
    pub message: MessageType,
    /// Edge node id (one box).
    pub node: String,
    /// Device id, for device messages.
    pub device: Option<String>,
}

/// Why an id cannot be used in a topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {id:?} cannot be a Sparkplug id: it must be non-empty and hold none of / + #")]
pub struct BadId {
    /// Which id (group, node, device).
    pub what: &'static str,
    /// The id given.
    pub id: String,
}

/// Check an id for use as one topic element.
pub fn check_id(what: &'static str, id: &str) -> Result<(), BadId> {
    if id.is_empty() || id.contains(['/', '+', '#']) {
        return Err(BadId { what, id: id.into() });
    }
    Ok(())
}

impl Topic {
    /// A node-level topic.
    pub fn node(group: &str, message: MessageType, node: &str) -> Self {
        Self { group: group.into(), message, node: node.into(), device: None }
    }

    /// A device-level topic.
    pub fn device(group: &str, message: MessageType, node: &str, device: &str) -> Self {
        Self { device: Some(device.into()), ..Self::node(group, message, node) }
    }

    /// Parse a Sparkplug B topic; `None` for anything else (including `STATE`).
    pub fn parse(topic: &str) -> Option<Self> {
        let mut parts = topic.split('/');
        if parts.next()? != NAMESPACE {
            return None;
        }
        let group = parts.next()?.to_string();
        let message = MessageType::parse(parts.next()?)?;
        let node = parts.next()?.to_string();
        let device = parts.next().map(str::to_string);
        if parts.next().is_some() || device.is_some() != message.is_device() {
            return None;
        }
        Some(Self { group, message, node, device })
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{NAMESPACE}/{}/{}/{}", self.group, self.message.as_str(), self.node)?;
        if let Some(d) = &self.device {
            write!(f, "/{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_and_foreign_ones_are_refused() {
        let t = Topic::device("plant-1", MessageType::DData, "line3-box1", "inspection");
        assert_eq!(t.to_string(), "spBv1.0/plant-1/DDATA/line3-box1/inspection");
        assert_eq!(Topic::parse(&t.to_string()), Some(t));
        let n = Topic::node("plant-1", MessageType::NDeath, "box");
        assert_eq!(Topic::parse("spBv1.0/plant-1/NDEATH/box"), Some(n));
        for bad in [
            "spBv1.0/STATE/host",
            "spBv1.0/g/DDATA/node",
            "spBv1.0/g/NDATA/node/dev",
            "spAv1.0/g/NDATA/node",
            "spBv1.0/g/DDATA/n/d/extra",
        ] {
            assert_eq!(Topic::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_with_topic_separators_or_wildcards_are_refused() {
        assert!(check_id("node", "line3-box1").is_ok());
        for bad in ["", "a/b", "a+", "#"] {
            assert!(check_id("node", bad).is_err(), "{bad:?}");
        }
    }
}
