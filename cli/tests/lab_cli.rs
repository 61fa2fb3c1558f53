//! `sluice lab up` and `down` as a user runs them, and a daemon killed
//! with SIGKILL: its XDP programs stay attached, the next daemon replaces
//! them and serves, and `down` leaves nothing behind. Root only.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_lab::alive;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn lab_file(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "name: {name}
nodes:
  - name: node1
    index: 1
    pods:
      - {{ name: client }}
      - {{ name: web-1, labels: {{ app: web }} }}
      - {{ name: web-2, labels: {{ app: web }} }}
services:
  - name: web
    clusterIP: 198.19.0.10
    selector: {{ app: web }}
    ports: [{{ port: 80, targetPort: 8080 }}]
"
        ),
    )
    .unwrap();
    path
}

fn sluice(args: &[&str], file: &Path) -> Output {
    Command::new(SLUICE)
        .args(args)
        .arg("--file")
        .arg(file)
        .output()
        .expect("run sluice")
}

fn curl(ns: &str, url: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "--max-time", "10", url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn xdp_on(ns: &str, ifname: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", ns, "-d", "link", "show", "dev", ifname])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

fn namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect()
}

fn daemon_pid(state: &Path) -> i32 {
    let s = std::fs::read_to_string(state.join("daemon.pid")).expect("lab up writes daemon.pid");
    s.trim().parse().expect("a pid")
}

/// Brings the lab down on drop, whatever the test did.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = sluice(&["lab", "down"], self.0);
    }
}

#[test]
fn up_survives_a_killed_daemon_and_down_leaves_nothing() {
    if !sluice_control::testing::root_or_skip("up_survives_a_killed_daemon_and_down_leaves_nothing")
    {
        return;
    }
    let name = format!("c{}", std::process::id() % 100_000);
    let file = lab_file(&name);
    let _down = Down(&file);
    let state = std::path::PathBuf::from(format!("/run/sluice/lab-{name}"));

    let up = sluice(&["lab", "up"], &file);
    assert!(
        up.status.success(),
        "lab up failed (root, iproute2, ethtool, python3 and curl needed): {}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let printed = String::from_utf8_lossy(&up.stdout);
    for want in [
        format!("{name}-client"),
        "198.18.1.2".into(),
        "198.19.0.10".into(),
        "default/web".into(),
    ] {
        assert!(
            printed.contains(&want),
            "up does not print {want}:\n{printed}"
        );
    }
    let client = format!("{name}-client");
    let node = format!("{name}-node1");
    // web-1's veth, named by sluice-cni, which wired it.
    let end = sluice_cni::link::host_name(&format!("{name}-web-1"), "eth0");
    assert!(curl(&client, "http://198.19.0.10/").starts_with("web-"));

    // `sluice status` with no --admin finds the lab's daemon; with other
    // labs running (tests run in parallel) it names their sockets, this
    // lab's among them. `up` said where it is.
    let sock = sluice_lab::cni_data_dir().join(format!("{name}.sock"));
    let sock_name = sock.display().to_string();
    assert!(
        printed.contains(&sock_name),
        "up names the admin socket:\n{printed}"
    );
    let st = Command::new(SLUICE).arg("status").output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&st.stdout),
        String::from_utf8_lossy(&st.stderr)
    );
    if st.status.success() {
        assert!(said.contains(&end) && said.contains(&sock_name), "{said}");
    } else {
        assert!(said.contains(&sock_name), "{said}");
    }
    // Its live counters show the requests just made.
    let st = Command::new(SLUICE)
        .args(["status", "--json", "--admin"])
        .arg(&sock)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&st.stdout).expect("status --json");
    assert!(
        json["counters"][0]["packets"]["rx"].as_u64().unwrap_or(0) > 0,
        "{json:#}"
    );
    assert!(
        json["conntrack"]["entries"].as_u64().unwrap_or(0) > 0,
        "{json:#}"
    );

    // The daemon watches the lab's manifests: a file that does not parse is
    // refused and logged while the Services keep serving; a new Service in
    // a new file is served.
    let manifests = state.join("manifests");
    std::fs::write(
        manifests.join("broken.yaml"),
        "kind: Service\nmetadata: {name: [\n",
    )
    .unwrap();
    std::fs::write(
        manifests.join("extra.yaml"),
        "apiVersion: v1
kind: Service
metadata: { name: extra }
spec: { clusterIP: 198.19.0.20, ports: [{ port: 81, targetPort: 8080 }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: extra-1, labels: { kubernetes.io/service-name: extra } }
addressType: IPv4
endpoints: [{ addresses: [198.18.1.4] }]
",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut extra = String::new();
    while Instant::now() < deadline && extra != "web-2" {
        extra = curl(&client, "http://198.19.0.20:81/");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(extra, "web-2", "the new Service from extra.yaml");
    assert!(curl(&client, "http://198.19.0.10/").starts_with("web-"));
    let log = std::fs::read_to_string(state.join("daemon.log")).unwrap();
    assert!(
        log.contains("broken.yaml") && log.contains("refused"),
        "{log}"
    );

    // Connections open across the crash and the restart: the new daemon
    // has no conntrack, but picks their next segments up as established
    // flows and Maglev (fixed seed, same endpoints) gives each the backend
    // it had; TCP retransmits over the gap.
    let held = Command::new("ip")
        .args(["netns", "exec", &client, "python3", "-c"])
        .arg(
            "import http.client,threading,time\n\
             out=[None]*6\n\
             def run(i):\n  c=http.client.HTTPConnection('198.19.0.10',80,timeout=20)\n  seen=[]\n  \
             for _ in range(50):\n    c.request('GET','/');seen.append(c.getresponse().read().decode().strip());time.sleep(0.1)\n  out[i]=seen\n\
             ts=[threading.Thread(target=run,args=(i,)) for i in range(6)]\n\
             [t.start() for t in ts];[t.join() for t in ts]\n\
             for s in out: print(' '.join(s) if s else 'FAILED')\n",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));

    // A crash: the program stays, and the pods' frames go nowhere.
    let pid = daemon_pid(&state);
    // SAFETY: the daemon this test's `lab up` started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        xdp_on(&node, &end),
        "SIGKILL left no program; the restart below proves nothing"
    );

    // A new daemon on the same lab finds the stale programs and replaces them.
    let _ = std::fs::remove_file(state.join("ready"));
    let log = std::fs::File::create(state.join("restart.log")).unwrap();
    let mut restarted = Command::new(SLUICE)
        .args(["lab", "daemon", "--state"])
        .arg(&state)
        .arg("--file")
        .arg(state.join("lab.yaml"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.join("ready").exists() {
        assert!(
            Instant::now() < deadline,
            "the restarted daemon is not ready"
        );
        assert!(
            restarted.try_wait().unwrap().is_none(),
            "the restarted daemon exited: {}",
            std::fs::read_to_string(state.join("restart.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(state.join("restart.log")).unwrap();
    assert!(
        log.contains(&format!("replaced a stale XDP program on {end}")),
        "{log}"
    );
    assert!(curl(&client, "http://198.19.0.10/").starts_with("web-"));
    let held = held.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&held.stdout).to_string();
    assert!(
        held.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&held.stderr)
    );
    for l in text.lines() {
        let seen: Vec<&str> = l.split(' ').collect();
        assert_eq!(seen.len(), 50, "a connection broke across the restart: {l}");
        assert!(
            seen.iter().all(|s| *s == seen[0]),
            "a connection changed backend: {l}"
        );
    }
    assert_eq!(text.lines().count(), 6, "{text}");

    // SIGTERM: a clean stop detaches every program.
    // SAFETY: the daemon this test started.
    unsafe { libc::kill(restarted.id() as i32, libc::SIGTERM) };
    let status = restarted.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!xdp_on(&node, &end), "SIGTERM left an XDP program on {end}");
    let log = std::fs::read_to_string(state.join("restart.log")).unwrap();
    assert!(log.contains("XDP programs detached"), "{log}");

    // `up` again over the leftovers, then `down`.
    let up = sluice(&["lab", "up"], &file);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(curl(&client, "http://198.19.0.10/").starts_with("web-"));
    let pid = daemon_pid(&state);
    let down = sluice(&["lab", "down"], &file);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(namespaces(&name), Vec::<String>::new());
    assert!(!state.exists(), "{} is left", state.display());
    assert!(!alive(pid), "the daemon is still running");
    let cni = sluice_lab::cni_data_dir();
    assert!(
        !cni.join(&name).exists(),
        "sluice-cni's allocations are left"
    );
    assert!(
        !cni.join(format!("{name}.sock")).exists(),
        "the daemon's admin socket is left"
    );
    let _ = std::fs::remove_file(&file);
}
