//! Broker addresses as the box's `[telemetry]` and `kensa fleet --broker` spell them.

use std::fmt;

/// `mqtt://host[:port]` (plain TCP, port 1883) or `mqtts://host[:port]` (TLS, 8883);
/// an IPv6 host in brackets, `mqtt://[::1]:1883`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Why a broker address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker {0:?}: expected mqtt://host[:port] or mqtts://host[:port]")]
pub struct BadBrokerUrl(pub String);

impl std::str::FromStr for BrokerUrl {
    type Err = BadBrokerUrl;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadBrokerUrl(s.to_string());
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            match after.strip_prefix(':') {
                Some(p) => (host, p.parse().map_err(|_| bad())?),
                None if after.is_empty() => (host, default_port),
                None => return Err(bad()),
            }
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
                None => (rest, default_port),
            }
        };
        if host.is_empty() || host.contains(['/', '@', '[', ']', ' ']) || port == 0 {
            return Err(bad());
        }
        Ok(Self { host: host.to_string(), port, tls })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Result<BrokerUrl, BadBrokerUrl> {
        s.parse()
    }

    #[test]
    fn hosts_ports_and_schemes() {
        let b = |host: &str, port, tls| BrokerUrl { host: host.into(), port, tls };
        assert_eq!(url("mqtt://broker.plant"), Ok(b("broker.plant", 1883, false)));
        assert_eq!(url("mqtts://broker.plant/"), Ok(b("broker.plant", 8883, true)));
        assert_eq!(url("mqtt://10.0.0.5:1884"), Ok(b("10.0.0.5", 1884, false)));
        assert_eq!(url("mqtt://[::1]"), Ok(b("::1", 1883, false)));
        assert_eq!(url("mqtts://[fd00::7]:9883"), Ok(b("fd00::7", 9883, true)));
        assert_eq!(url("mqtt://[::1]:1883").unwrap().to_string(), "mqtt://[::1]:1883");
        for bad in [
            "broker:1883",
            "http://broker",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://user@broker",
            "mqtt://broker:http",
            "mqtt://broker:0",
            "mqtt://[::1",
            "mqtt://[::1]x",
            "mqtt://broker/path",
        ] {
            assert!(url(bad).is_err(), "{bad} accepted");
        }
    }
}
