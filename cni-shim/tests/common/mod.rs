//! What the plugin's test files share: running a CNI plugin as a runtime
//! does, and running a set-up command that must succeed.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// One invocation's outcome: its exit status, its stdout as JSON, and
/// stdout and stderr as text for failure messages.
pub struct Run {
    pub status: i32,
    pub out: Value,
    pub raw: String,
}

/// Runs plugin `bin` with only `env` (and a PATH) in its environment and
/// `stdin` on its input, in `netns` (the node's) if given.
pub fn invoke_bin(bin: &str, netns: Option<&str>, env: &[(&str, &str)], stdin: &str) -> Run {
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, bin]);
            c
        }
        None => Command::new(bin),
    };
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("run the plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let raw = String::from_utf8_lossy(&o.stdout).trim().to_string();
    Run {
        status: o.status.code().unwrap_or(-1),
        out: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw: format!("{raw} {}", String::from_utf8_lossy(&o.stderr).trim()),
    }
}

/// Runs a set-up command; it must succeed.
pub fn must(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}
