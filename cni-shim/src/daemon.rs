//! The daemon's admin socket, as the plugin uses it: one JSON line out,
//! one back (control/src/admin.rs is the other side).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Why the daemon could not be asked.
#[derive(Debug)]
pub enum AskError {
    /// Nothing listens: the daemon is not running (try again later).
    NotRunning(String),
    /// It answered with an error.
    Refused(String),
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AskError::NotRunning(s) | AskError::Refused(s) => f.write_str(s),
        }
    }
}

pub fn ask(path: &Path, request: &Value) -> Result<Value, AskError> {
    let not_running = |e: std::io::Error| {
        AskError::NotRunning(format!(
            "the Sluice daemon does not answer on {} ({e}); start it (sluice run) and retry",
            path.display()
        ))
    };
    let stream = UnixStream::connect(path).map_err(not_running)?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut line = request.to_string();
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(not_running)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(not_running)?;
    let v: Value = serde_json::from_str(reply.trim())
        .map_err(|e| AskError::Refused(format!("the daemon's reply {reply:?}: {e}")))?;
    if v.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(v)
    } else {
        Err(AskError::Refused(
            v.get("error")
                .and_then(Value::as_str)
                .unwrap_or("the daemon refused without saying why")
                .to_string(),
        ))
    }
}
