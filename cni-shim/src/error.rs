//! Errors in the CNI spec's format: a code, a message, details, printed
//! on stdout with a non-zero exit (SPEC.md, "Error").

/// The spec's well-known codes.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: ADD would fail now.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: ADD would fail, and existing pods may have lost
    /// connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// Plugin-specific: the address pool has no free address.
    pub const POOL_EXHAUSTED: u32 = 100;
    /// Plugin-specific: CHECK found the attachment not as ADD left it.
    pub const CHECK_FAILED: u32 = 101;
    /// Plugin-specific: setting up the interface failed.
    pub const SETUP_FAILED: u32 = 102;
    /// Plugin-specific: CNI_IFNAME exists in the namespace already.
    pub const INTERFACE_EXISTS: u32 = 103;
    /// Plugin-specific: an address asked for (CNI_ARGS IP=) is another
    /// container's, or in no range.
    pub const ADDRESS_UNAVAILABLE: u32 = 104;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error as the spec prints it, for `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
        .to_string()
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {}): {}", self.msg, self.code, self.details)
    }
}

impl std::error::Error for CniError {}
