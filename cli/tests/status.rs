//! `sluice status` against a running `sluice run`, as an operator reads
//! it: what the tables leave out (a Service whose ClusterIP:port another
//! holds) with its reason, until the frontend is free; objects the source
//! rejected; each worker's live counters and the conntrack's occupancy.
//! Root only (control/src/testing.rs).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_control::testing::root_or_skip;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{ name: {name}, namespace: default }}
spec: {{ clusterIP: {ip}, ports: [{{ port: 80, targetPort: 8080 }}] }}
"
    )
}

struct Daemon {
    child: Child,
    netns: String,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the daemon this test started, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn status(sock: &Path) -> Option<Value> {
    let o = Command::new(SLUICE)
        .args(["status", "--json", "--admin"])
        .arg(sock)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| serde_json::from_slice(&o.stdout).ok())
        .flatten()
}

fn until(sock: &Path, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = status(sock) {
            if f(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{what}: status {s:#}");
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the daemon does not answer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_shows_what_the_tables_leave_out_and_the_workers_counters() {
    if !root_or_skip("status_shows_what_the_tables_leave_out_and_the_workers_counters") {
        return;
    }
    let netns = format!("st{}", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(format!("sluice-{netns}"));
    let _ = std::fs::remove_dir_all(&dir);
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    // Two Services on one ClusterIP:port from the start: the first (by
    // namespace and name) keeps it.
    std::fs::write(manifests.join("a.yaml"), service("a", "198.19.0.50")).unwrap();
    std::fs::write(manifests.join("b.yaml"), service("b", "198.19.0.50")).unwrap();
    let _ = Command::new("ip").args(["netns", "del", &netns]).output();
    assert!(Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .unwrap()
        .success());
    let sock = dir.join("admin.sock");
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let child = Command::new(SLUICE)
        .args(["run", "--source"])
        .arg(format!("file:{}", manifests.display()))
        .args(["--netns", &netns, "--idle-nap-us", "100", "--admin"])
        .arg(&sock)
        .arg("--cni-data-dir")
        .arg(dir.join("ipam"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _daemon = Daemon {
        child,
        netns,
        dir: dir.clone(),
    };

    let s = until(&sock, "b left out", |s| {
        s["left_out"].as_array().is_some_and(|l| !l.is_empty())
    });
    let left: Vec<&str> = s["left_out"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].contains("default/b")
            && left[0].contains("198.19.0.50:80/TCP")
            && left[0].contains("default/a"),
        "the reason names the Service, the frontend and its owner: {}",
        left[0]
    );
    // The text form says it too.
    let text = Command::new(SLUICE)
        .args(["status", "--admin"])
        .arg(&sock)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("left out: Service default/b"), "{text}");
    assert!(text.contains("worker 0"), "{text}");

    // The protocol is versioned: a client of another version is refused
    // with a code it can act on, not misread.
    {
        use std::io::{BufRead, BufReader, Write};
        let stream = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        (&stream)
            .write_all(b"{\"version\":2,\"command\":\"status\"}\n")
            .unwrap();
        let mut reply = String::new();
        BufReader::new(&stream).read_line(&mut reply).unwrap();
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["ok"], false, "{reply}");
        assert_eq!(reply["error"]["code"], "unsupported_version", "{reply}");
        assert_eq!(reply["version"], 1, "{reply}");
    }

    // The live counters: one worker, its pool, the conntrack.
    let w = &s["counters"][0];
    assert_eq!(w["worker"], 0, "{s:#}");
    assert!(w["age_ms"].as_u64().is_some_and(|ms| ms < 5_000), "{w:#}");
    assert!(
        w["drops"]["eth_truncated"].is_u64(),
        "every reason is listed: {w:#}"
    );
    assert_eq!(w["backend"]["pool"]["max_ports"], 250, "{w:#}");
    assert_eq!(s["conntrack"]["capacity"], 1 << 20, "{s:#}");
    assert_eq!(s["max_pods"], 250);

    // a goes: b gets the frontend at the next publication, and nothing is
    // left out.
    std::fs::remove_file(manifests.join("a.yaml")).unwrap();
    until(&sock, "b placed once a is gone", |s| {
        s["left_out"].as_array().is_some_and(Vec::is_empty)
    });
    // c takes b's frontend: left out with b named as the owner.
    std::fs::write(manifests.join("c.yaml"), service("c", "198.19.0.50")).unwrap();
    let s = until(&sock, "c left out", |s| {
        s["left_out"].as_array().is_some_and(|l| l.len() == 1)
    });
    assert!(
        s["left_out"][0]
            .as_str()
            .is_some_and(|l| l.contains("default/c") && l.contains("default/b")),
        "{s:#}"
    );
    // A manifest that does not parse is refused, with its file named, and
    // the tables keep what they had.
    std::fs::write(
        manifests.join("broken.yaml"),
        "kind: Service\nmetadata: {name: [\n",
    )
    .unwrap();
    let s = until(&sock, "the broken file refused", |s| {
        s["sources"][0]["file_problems"]
            .as_array()
            .is_some_and(|p| {
                p.iter()
                    .any(|p| p.as_str().is_some_and(|p| p.contains("broken.yaml")))
            })
    });
    assert_eq!(s["left_out"].as_array().map(Vec::len), Some(1), "{s:#}");
}
