//! What the lab tests share: the four-pod lab file, the keep-alive
//! clients that hold connections open while tables change, and the check
//! that every one of them ran to the end on one backend.

use std::process::{Child, Stdio};

use sluice_lab::Lab;

/// One node, a client pod and three web pods behind `default/web`
/// (198.19.0.10, 80/TCP to 8080). `NAME` is replaced by the test's lab
/// name; `EXTRA` by more Service lines (indented as the ports).
pub const FOUR_PODS: &str = "
name: NAME
nodes:
  - name: node1
    index: 1
    pods:
      - { name: client, labels: { app: client } }
      - { name: web-1, labels: { app: web } }
      - { name: web-2, labels: { app: web } }
      - { name: web-3, labels: { app: web } }
services:
  - name: web
    clusterIP: 198.19.0.10
    selector: { app: web }
EXTRA    ports:
      - { name: http, port: 80, targetPort: 8080, protocol: TCP }
";

/// `conns` keep-alive HTTP connections from the client pod to `vip`:80,
/// each asking `requests` times, `every_ms` apart; each prints its
/// answers on one line (or FAILED).
pub fn keepalive(lab: &Lab, vip: &str, conns: usize, requests: usize, every_ms: u64) -> Child {
    lab.command(&lab.netns("client"), "python3")
        .args([
            "-c",
            &format!(
                "import http.client,threading,time\n\
                 out=[None]*{conns}\n\
                 def run(i):\n  c=http.client.HTTPConnection('{vip}',80,timeout=10)\n  seen=[]\n  \
                 for _ in range({requests}):\n    c.request('GET','/');seen.append(c.getresponse().read().decode().strip());time.sleep({every_ms}/1000)\n  out[i]=seen\n\
                 ts=[threading.Thread(target=run,args=(i,)) for i in range({conns})]\n\
                 [t.start() for t in ts];[t.join() for t in ts]\n\
                 for s in out: print(' '.join(s) if s else 'FAILED')\n"
            ),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 in the client pod")
}

/// Every connection of `keepalive` answered all its requests, each from
/// one backend throughout.
pub fn check_held(child: Child, conns: usize, requests: usize) {
    let out = child.wait_with_output().expect("the keep-alive client");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "the keep-alive client failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), conns, "{text}");
    for l in lines {
        let seen: Vec<&str> = l.split(' ').collect();
        assert_eq!(seen.len(), requests, "a connection broke: {l}");
        assert!(
            seen.iter().all(|s| *s == seen[0]),
            "a connection changed backend: {l}"
        );
    }
}
