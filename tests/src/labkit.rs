//! What the lab tests share: the four-pod lab file, the keep-alive
//! clients that hold connections open while tables change, and the check
//! that every one of them ran to the end on one backend.

use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sluice_control::daemon::{Daemon, Io};
use sluice_control::sync::FileSync;
use sluice_dataplane::worker::Idle;
use sluice_lab::file::LabFile;
use sluice_lab::{start_daemon, write_manifests, Lab};

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

/// A lab of a test's own with the daemon running on it.
pub struct Running {
    // Field order: the sync stops, then the daemon, then the lab goes.
    pub files: FileSync,
    pub daemon: Daemon,
    pub lab: Lab,
    /// The manifests the daemon's file source watches.
    pub manifests: std::path::PathBuf,
}

/// Sets up a lab of its own from `lab_file` (given the lab's unique name),
/// starts the daemon on it (one worker a core of `cores`, or one
/// unpinned) and the servers; the file source must load `services`.
pub fn start(
    io: Io,
    cores: Vec<usize>,
    lab_file: impl Fn(&str) -> String,
    services: usize,
) -> Running {
    start_sized(io, cores, lab_file, services, 1 << 16)
}

/// `start`, with a conntrack of `capacity` flows.
pub fn start_sized(
    io: Io,
    cores: Vec<usize>,
    lab_file: impl Fn(&str) -> String,
    services: usize,
    capacity: usize,
) -> Running {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t{}{}",
        std::process::id() % 10_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let plan = LabFile::parse(&lab_file(&name))
        .and_then(|f| f.plan())
        .expect("the test's lab file");
    let queues = cores.len().max(1);
    let mut lab = Lab::create(&plan, io, queues).unwrap_or_else(|e| {
        panic!("cannot set up the lab (root, iproute2, ethtool and python3 needed): {e}")
    });
    let idle = Idle {
        spin_rounds: 2_000,
        sleep: Duration::from_micros(50),
    };
    let manifests = std::env::temp_dir().join(format!("{name}-manifests"));
    let _ = std::fs::remove_dir_all(&manifests);
    write_manifests(&manifests, &plan, &[]).expect("the lab's manifests");
    let (daemon, files) = start_daemon(&plan, io, cores, idle, capacity, &manifests)
        .unwrap_or_else(|e| panic!("the daemon did not start over {io}: {e}"));
    assert_eq!(files.status().services, services, "{:?}", files.status());
    if io == Io::Afxdp {
        // Every pod was wired by sluice-cni, as a runtime would, and the
        // daemon holds each for its container.
        let attached = daemon.ports().attached();
        for pod in &plan.node().pods {
            let a = attached
                .iter()
                .find(|a| a.ifname == pod.host_end)
                .unwrap_or_else(|| panic!("{} not attached: {attached:?}", pod.name));
            assert_eq!(
                a.owner.as_deref(),
                Some(format!("{}/eth0", pod.netns).as_str())
            );
            assert!(a.addrs.contains(&std::net::IpAddr::V4(pod.ip)), "{a:?}");
        }
    }
    lab.start_servers(None, false)
        .unwrap_or_else(|e| panic!("servers: {e}"));
    Running {
        files,
        daemon,
        lab,
        manifests,
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.manifests);
    }
}

impl Running {
    pub fn python(&self, pod: &str, script: &str) -> Output {
        self.lab
            .exec(pod, &["python3", "-c", script])
            .expect("python3 in a pod")
    }
    pub fn stdout(out: &Output) -> String {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
    /// `n` HTTP GETs of `url` from `pod`, one connection each (python's
    /// urllib): each answer's body, trimmed.
    pub fn gets(&self, pod: &str, url: &str, n: usize) -> Vec<String> {
        let out = self.python(
            pod,
            &format!(
                "import urllib.request\n\
                 for i in range({n}):\n  print(urllib.request.urlopen('{url}',timeout=5).read().decode().strip())\n"
            ),
        );
        assert_ok(&out, url);
        Running::stdout(&out).lines().map(str::to_string).collect()
    }
    /// `curl -s --max-time SECS URL` from `pod`: its whole output.
    pub fn curl_within(&self, pod: &str, url: &str, secs: u32) -> Output {
        self.lab
            .exec(pod, &["curl", "-s", "--max-time", &secs.to_string(), url])
            .expect("curl")
    }
    pub fn curl(&self, pod: &str, url: &str) -> String {
        let out = self
            .lab
            .exec(pod, &["curl", "-s", "--max-time", "10", url])
            .expect("curl");
        Running::stdout(&out)
    }
    /// The workers' counters, for failure messages.
    pub fn detail(&mut self) -> String {
        let flows = self.daemon.flows(usize::MAX).len();
        format!("{flows} flows in conntrack")
    }
}

/// Fails with the command's output unless it succeeded.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}
