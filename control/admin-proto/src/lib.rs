//! The admin protocol: what the Sluice daemon answers on its Unix socket
//! (root only), one JSON request line in, one JSON reply line out, and
//! what its clients send: `sluice-cni` attaches and detaches pods,
//! `sluice status` reads the daemon's state. Both sides use these types,
//! so a field cannot be renamed on one side only.
//!
//! ```text
//! {"version":1,"command":"status"}
//! {"version":1,"command":"attach","ifname":"slc1a2b3c4d5e6","addrs":["198.18.1.5"],"mac":"02:..","owner":"CONTAINERID/eth0"}
//! {"version":1,"command":"detach","ifname":"slc1a2b3c4d5e6"}
//! {"version":1,"ok":false,"error":{"code":"max_pods","message":"..."}}
//! ```
//!
//! Versioned: a request carries the protocol version its client speaks
//! (absent means 1), and a daemon refuses one it does not with
//! `unsupported_version`, so that a plugin newer than its daemon fails
//! with a reason instead of a misread field.

pub mod client;
mod status;

use std::net::IpAddr;

pub use status::{
    Attached, ConntrackStatus, Io, SourceState, SourceStatus, StatusReply, WorkerStatus,
};

/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sluice/admin.sock";

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub enum Command {
    Status,
    /// Attach a pod's veth host end (its addresses routed to it).
    Attach {
        ifname: String,
        addrs: Vec<IpAddr>,
        mac: String,
        #[serde(default)]
        owner: Option<String>,
    },
    Detach {
        ifname: String,
    },
}

/// A request: a command, and the version its client speaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub version: u32,
    pub command: Command,
}

impl Request {
    pub fn new(command: Command) -> Request {
        Request {
            version: VERSION,
            command,
        }
    }

    /// The request's line (without the newline).
    pub fn to_line(&self) -> String {
        let mut v = serde_json::to_value(&self.command).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("version".into(), self.version.into());
        }
        v.to_string()
    }

    /// Reads a request line; the error is the reply to send.
    pub fn parse(line: &str) -> Result<Request, Error> {
        let bad = |m: String| Error::new(ErrorCode::BadRequest, m);
        let mut v: serde_json::Value =
            serde_json::from_str(line.trim()).map_err(|e| bad(format!("request {line:?}: {e}")))?;
        let version = match v.as_object_mut().and_then(|o| o.remove("version")) {
            None => 1,
            Some(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad(format!("request {line:?}: version {n} is not a number")))?,
        };
        if version != VERSION {
            return Err(Error::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "this daemon speaks admin protocol version {VERSION}, the client {version}: upgrade the older of the two"
                ),
            ));
        }
        let command: Command =
            serde_json::from_value(v.clone()).map_err(|e| bad(format!("request {line:?}: {e}")))?;
        // serde's deny_unknown_fields misses a unit variant's extras.
        let known = serde_json::to_value(&command).unwrap_or_default();
        if let (Some(given), Some(known)) = (v.as_object(), known.as_object()) {
            if let Some(k) = given.keys().find(|k| !known.contains_key(*k)) {
                return Err(bad(format!("request {line:?}: unknown field `{k}`")));
            }
        }
        Ok(Request { version, command })
    }
}

/// What went wrong, for a client to act on without reading the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request did not parse, or a field is wrong.
    BadRequest,
    /// The client speaks another version of this protocol.
    UnsupportedVersion,
    /// The node has its `--max-pods` pods attached.
    MaxPods,
    /// Another owner holds the interface.
    InterfaceTaken,
    /// Another interface is routed one of the addresses.
    AddressTaken,
    /// This daemon cannot do it (its backend takes no ports while running).
    Unsupported,
    /// A worker could not open its queue of the interface.
    Worker,
    /// A worker did not answer in time.
    NoAnswer,
    /// An earlier request for the same interface has not finished.
    Busy,
    /// The interface has fewer queues than the daemon has workers.
    Queues,
    /// Anything else.
    Internal,
}

/// An error reply's body.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

fn version_1() -> u32 {
    1
}

/// The daemon's answer.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    /// The version the daemon speaks (absent: 1).
    #[serde(default = "version_1")]
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusReply>,
    /// Attach: the node port the interface got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Detach: whether the interface was attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detached: Option<bool>,
}

impl Default for Reply {
    fn default() -> Reply {
        Reply {
            version: VERSION,
            ok: true,
            error: None,
            status: None,
            port: None,
            detached: None,
        }
    }
}

impl Reply {
    pub fn error(e: Error) -> Reply {
        Reply {
            ok: false,
            error: Some(e),
            ..Reply::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_with_their_version() {
        for c in [
            Command::Status,
            Command::Attach {
                ifname: "slc0123456789ab".into(),
                addrs: vec![
                    "198.18.1.5".parse().unwrap(),
                    "2001:db8:18:1::5".parse().unwrap(),
                ],
                mac: "02:53:c6:12:01:05".into(),
                owner: Some("c1/eth0".into()),
            },
            Command::Detach {
                ifname: "slc0123456789ab".into(),
            },
        ] {
            let r = Request::new(c);
            let line = r.to_line();
            assert!(line.contains("\"version\":1"), "{line}");
            assert_eq!(Request::parse(&line).unwrap(), r);
        }
    }

    #[test]
    fn a_request_without_a_version_is_version_1() {
        let r = Request::parse(r#"{"command":"status"}"#).unwrap();
        assert_eq!(r, Request::new(Command::Status));
    }

    #[test]
    fn bad_requests_and_other_versions_are_refused_with_their_code() {
        let cases = [
            (
                r#"{"command":"status","version":2}"#,
                ErrorCode::UnsupportedVersion,
            ),
            (
                r#"{"command":"status","version":"one"}"#,
                ErrorCode::BadRequest,
            ),
            (r#"{"command":"frob"}"#, ErrorCode::BadRequest),
            (r#"{"command":"detach"}"#, ErrorCode::BadRequest),
            (r#"{"command":"status","extra":1}"#, ErrorCode::BadRequest),
            ("not json", ErrorCode::BadRequest),
        ];
        for (line, code) in cases {
            let e = Request::parse(line).expect_err(line);
            assert_eq!(e.code, code, "{line}: {e}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn an_error_reply_carries_its_code_on_the_wire() {
        let r = Reply::error(Error::new(
            ErrorCode::MaxPods,
            "the node has 250 pods attached",
        ));
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains(r#""code":"max_pods""#), "{line}");
        let back: Reply = serde_json::from_str(&line).unwrap();
        assert_eq!(back.error.unwrap().code, ErrorCode::MaxPods);
    }
}
