//! A client of the admin socket: one request, one reply.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::{Command, Error, Reply, Request};

/// Why a request got no good answer.
#[derive(Debug)]
pub enum AskError {
    /// Nothing answers on the socket: the daemon is not running.
    NotRunning(String),
    /// The daemon answered with an error.
    Refused(Error),
    /// The answer was not a reply of this protocol.
    Garbled(String),
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AskError::NotRunning(s) | AskError::Garbled(s) => f.write_str(s),
            AskError::Refused(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for AskError {}

/// Sends `command` to the daemon on `path` and returns its reply, an error
/// reply as `Refused`. Waits at most `timeout` for the answer (an attach
/// takes tens of milliseconds a worker).
pub fn ask(path: &Path, command: Command, timeout: Duration) -> Result<Reply, AskError> {
    let not_running = |e: std::io::Error| {
        AskError::NotRunning(format!(
            "the Sluice daemon does not answer on {} ({e}); start it (sluice run) and retry",
            path.display()
        ))
    };
    let stream = UnixStream::connect(path).map_err(not_running)?;
    let _ = stream.set_read_timeout(Some(timeout));
    let mut line = Request::new(command).to_line();
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(not_running)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(not_running)?;
    let r: Reply = serde_json::from_str(reply.trim()).map_err(|e| {
        AskError::Garbled(format!(
            "the daemon on {} answered {reply:?}: {e}",
            path.display()
        ))
    })?;
    if r.ok {
        return Ok(r);
    }
    Err(AskError::Refused(r.error.unwrap_or_else(|| {
        Error::new(
            crate::ErrorCode::Internal,
            "the daemon refused without saying why",
        )
    })))
}
