//! `[process]`: how the process runs once its sockets are bound: as which user (Perdition's
//! `username`/`group`), and where its pid goes.

use serde::{Deserialize, Serialize};

/// Where diagnostic lines go.
#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DiagnosticsOutput {
    /// With the other lines, in their format.
    #[default]
    Log,
    /// One JSON object per line on stderr (for a log shipper).
    Json,
    /// The systemd journal, with its fields (priority, target).
    Journald,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Become this user once every socket is bound (started as root); unset: stay as started.
    /// Under systemd, prefer the unit's `User=` (or `DynamicUser=`).
    pub user: Option<String>,
    /// With `user`: this group instead of the user's own.
    pub group: Option<String>,
    /// Write the process id here once the sockets are bound; removed at exit when it can be.
    pub pid_file: Option<String>,
}

impl ProcessConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.group.is_some() && self.user.is_none() {
            problems.push("process.group needs process.user".into());
        }
        for (name, value) in [("user", &self.user), ("group", &self.group)] {
            if value.as_deref() == Some("") {
                problems.push(format!("process.{name} is empty"));
            }
        }
        problems
    }
}
