//! A network as a configuration writes it: `10.0.0.0/8`, `2001:db8::/32`, or one address.

use std::fmt;

use ipnet::IpNet;

/// A network, read once when the configuration is. A text that is not one is kept as it was
/// written, for validation to name ("… is not a network") with every other problem at once.
#[derive(Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(from = "String", into = "String")]
pub struct Network {
    text: String,
    net: Option<IpNet>,
}

impl Network {
    /// The network; `None` when the text is not one.
    pub fn net(&self) -> Option<IpNet> {
        self.net
    }

    /// As it was written.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or one address (a network of one).
pub fn parse_network(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

impl From<String> for Network {
    fn from(text: String) -> Network {
        let net = parse_network(&text);
        Network { text, net }
    }
}

impl From<&str> for Network {
    fn from(text: &str) -> Network {
        Network::from(text.to_string())
    }
}

impl From<Network> for String {
    fn from(network: Network) -> String {
        network.text
    }
}

/// As written: `"10.0.0.0/8"`, so that a problem names it as the admin wrote it.
impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_single_addresses_are_read_once_and_bad_ones_kept_as_written() {
        assert_eq!(
            Network::from("10.0.0.0/8").net(),
            Some("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            Network::from(" 2001:db8::1 ").net(),
            Some("2001:db8::1/128".parse().unwrap())
        );
        let bad = Network::from("10.0.0.0/33");
        assert_eq!((bad.net(), bad.text()), (None, "10.0.0.0/33"));
        assert_eq!(format!("{bad:?}"), "\"10.0.0.0/33\"");
    }
}
