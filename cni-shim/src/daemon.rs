//! The daemon's admin socket, as the plugin uses it: the shared protocol
//! (control/admin-proto), with the plugin's patience.

use std::path::Path;
use std::time::Duration;

pub use sluice_admin::client::AskError;
use sluice_admin::{Command, Reply};

/// An attach opens a socket per worker (tens of milliseconds each); a
/// minute covers a daemon busy with many at once.
const PATIENCE: Duration = Duration::from_secs(60);

pub fn ask(path: &Path, command: Command) -> Result<Reply, AskError> {
    sluice_admin::client::ask(path, command, PATIENCE)
}
