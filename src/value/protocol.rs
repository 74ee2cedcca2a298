//! The protocols Portcullis speaks, as a configuration names them. What each one is (its ports,
//! words, machines and log names) is its descriptor, in `protocol::<name>`.

/// A protocol, as `[[listener]] protocol` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Imap,
    Pop3,
    Managesieve,
    /// SMTP message submission (RFC 6409).
    Submission,
}
