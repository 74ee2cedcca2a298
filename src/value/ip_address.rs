//! One IP address as a configuration writes it: `10.0.1.1`, `2001:db8::1`, no port.

use std::fmt;
use std::net::IpAddr;

/// An address, read once when the configuration is. A text that is not one is kept as it was
/// written, for validation to name ("… is not an IP address") with every other problem at once.
#[derive(Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(from = "String", into = "String")]
pub struct IpAddress {
    text: String,
    ip: Option<IpAddr>,
}

impl IpAddress {
    /// The address; `None` when the text is not one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// As it was written.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl From<String> for IpAddress {
    fn from(text: String) -> IpAddress {
        let ip = text.trim().parse().ok();
        IpAddress { text, ip }
    }
}

impl From<&str> for IpAddress {
    fn from(text: &str) -> IpAddress {
        IpAddress::from(text.to_string())
    }
}

impl From<IpAddress> for String {
    fn from(address: IpAddress) -> String {
        address.text
    }
}

/// As written: `"10.0.1.x"`, so that a problem names it as the admin wrote it.
impl fmt::Debug for IpAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_once_and_bad_ones_kept_as_written() {
        assert_eq!(
            IpAddress::from(" 10.0.1.1 ").ip(),
            Some("10.0.1.1".parse().unwrap())
        );
        assert_eq!(
            IpAddress::from("2001:db8::1").ip(),
            Some("2001:db8::1".parse().unwrap())
        );
        for bad in [
            "10.0.1.x",
            "10.0.1.1:143",
            "10.0.1.0/24",
            "mail.example.org",
        ] {
            let address = IpAddress::from(bad);
            assert_eq!((address.ip(), address.text()), (None, bad));
        }
        assert_eq!(format!("{:?}", IpAddress::from("10.0.1.x")), "\"10.0.1.x\"");
    }
}
