//! A test API server: the list and watch wire protocol of Kubernetes for
//! Services, EndpointSlices and Nodes, enough for the real `kube` client,
//! and the failures a real one has. No kube-apiserver can be installed on
//! these machines (DESIGN.md), so this is the one stand-in, and it speaks
//! the real protocol:
//!
//! - list: `GET /api/v1/services` gives a `ServiceList` with the current
//!   `metadata.resourceVersion` (pagination asked for with `limit` is
//!   answered in one page, as a server may);
//! - watch: `?watch=true&resourceVersion=N` streams, chunked, one JSON
//!   event a line (`ADDED`, `MODIFIED`, `DELETED`, and `BOOKMARK` every
//!   second when `allowWatchBookmarks` is set), from just after N;
//! - 410 Gone: a watch from a version older than the compacted history
//!   gets one `ERROR` event with a `Status` of code 410, as etcd's
//!   compaction gives;
//! - failures on demand: every open connection dropped, history
//!   compacted, the server stopped (connections refused) and started
//!   again on the same port.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The kinds served, by their collection path.
const KINDS: [(&str, &str, &str); 3] = [
    ("/api/v1/services", "v1", "Service"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "discovery.k8s.io/v1",
        "EndpointSlice",
    ),
    ("/api/v1/nodes", "v1", "Node"),
];

#[derive(Default)]
struct State {
    rv: u64,
    /// (kind, namespace, name) -> object.
    objects: BTreeMap<(String, String, String), Value>,
    /// (resourceVersion, kind, event type, object), oldest first.
    log: Vec<(u64, String, &'static str, Value)>,
    /// Watches from a version below this get 410 Gone.
    oldest: u64,
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    running: AtomicBool,
    /// Bumped to drop every open connection.
    epoch: AtomicU64,
    /// Requests served, by kind of request ("list", "watch"), for tests.
    lists: AtomicU64,
    watches: AtomicU64,
}

pub struct ApiServer {
    inner: Arc<Inner>,
    pub port: u16,
    accept: Option<std::thread::JoinHandle<()>>,
}

fn kind_of(v: &Value) -> String {
    v["kind"].as_str().unwrap_or_default().to_string()
}

impl ApiServer {
    /// Listens on 127.0.0.1, on a port of the system's choosing.
    pub fn start() -> ApiServer {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                rv: 100,
                ..State::default()
            }),
            changed: Condvar::new(),
            running: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            watches: AtomicU64::new(0),
        });
        let mut s = ApiServer {
            inner,
            port: 0,
            accept: None,
        };
        s.listen(0);
        s
    }

    fn listen(&mut self, port: u16) {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the test API server");
        self.port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        self.inner.running.store(true, Ordering::SeqCst);
        let inner = self.inner.clone();
        self.accept = Some(std::thread::spawn(move || {
            while inner.running.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let inner = inner.clone();
                        std::thread::spawn(move || serve(conn, &inner));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }

    /// A kubeconfig for the real client, pointing here over plain HTTP.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://127.0.0.1:{}\nusers:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test}}\ncurrent-context: test\n",
            self.port
        )
    }

    /// Creates or replaces an object (YAML or JSON text of one object).
    pub fn apply(&self, text: &str) -> u64 {
        let mut v: Value = serde_yaml::from_str(text).expect("an object");
        let kind = kind_of(&v);
        let ns = if kind == "Node" {
            String::new()
        } else {
            v["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        };
        if kind != "Node" {
            v["metadata"]["namespace"] = json!(ns);
        }
        let name = v["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_string();
        let mut st = self.inner.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        v["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = (kind.clone(), ns, name);
        let ty = if st.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.objects.insert(key, v.clone());
        st.log.push((rv, kind, ty, v));
        drop(st);
        self.inner.changed.notify_all();
        rv
    }

    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> u64 {
        let mut st = self.inner.state.lock().unwrap();
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        let Some(mut v) = st.objects.remove(&key) else {
            return st.rv;
        };
        st.rv += 1;
        let rv = st.rv;
        v["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.log.push((rv, kind.to_string(), "DELETED", v));
        drop(st);
        self.inner.changed.notify_all();
        rv
    }

    /// Forgets the history, as etcd's compaction does: a watch resumed from
    /// an older version now gets 410 Gone. Open watches are dropped so that
    /// the clients resume (and meet the 410).
    pub fn compact(&self) {
        let mut st = self.inner.state.lock().unwrap();
        st.oldest = st.rv;
        st.log.clear();
        drop(st);
        self.drop_connections();
    }

    /// Drops every open connection, mid-stream.
    pub fn drop_connections(&self) {
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        self.inner.changed.notify_all();
    }

    /// Stops listening and drops every connection: the server is gone.
    pub fn stop(&mut self) {
        self.inner.running.store(false, Ordering::SeqCst);
        self.drop_connections();
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        let port = self.port;
        self.listen(port);
    }

    /// (lists, watches) served so far.
    pub fn requests(&self) -> (u64, u64) {
        (
            self.inner.lists.load(Ordering::SeqCst),
            self.inner.watches.load(Ordering::SeqCst),
        )
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn respond(conn: &mut TcpStream, code: u16, reason: &str, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    write!(
        conn,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn chunk(conn: &mut TcpStream, line: &Value) -> std::io::Result<()> {
    let data = format!("{line}\n");
    write!(conn, "{:x}\r\n{data}\r\n", data.len())?;
    conn.flush()
}

fn serve(conn: TcpStream, inner: &Inner) {
    let epoch = inner.epoch.load(Ordering::SeqCst);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone the connection"));
    let mut conn = conn;
    loop {
        // One request: its line and headers (no body for GETs).
        let mut line = String::new();
        loop {
            if inner.epoch.load(Ordering::SeqCst) != epoch || !inner.running.load(Ordering::SeqCst)
            {
                let _ = conn.shutdown(std::net::Shutdown::Both);
                return;
            }
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => break,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    continue
                }
                Err(_) => return,
            }
        }
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) => return,
                Ok(_) if h == "\r\n" || h == "\n" => break,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    continue
                }
                Err(_) => return,
            }
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let q: BTreeMap<&str, &str> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let Some(&(_, api_version, kind)) = KINDS.iter().find(|k| k.0 == path) else {
            let _ = respond(
                &mut conn,
                404,
                "Not Found",
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            );
            continue;
        };
        if q.get("watch") == Some(&"true") || q.get("watch") == Some(&"1") {
            inner.watches.fetch_add(1, Ordering::SeqCst);
            watch(&mut conn, inner, epoch, api_version, kind, &q);
            return;
        }
        inner.lists.fetch_add(1, Ordering::SeqCst);
        let st = inner.state.lock().unwrap();
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|(k, _)| k.0 == kind)
            .map(|(_, v)| v.clone())
            .collect();
        let body = json!({
            "apiVersion": api_version,
            "kind": format!("{kind}List"),
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items,
        });
        drop(st);
        if respond(&mut conn, 200, "OK", &body).is_err() {
            return;
        }
    }
}

fn watch(
    conn: &mut TcpStream,
    inner: &Inner,
    epoch: u64,
    api_version: &str,
    kind: &str,
    q: &BTreeMap<&str, &str>,
) {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = Duration::from_secs(
        q.get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    );
    let bookmarks = q.get("allowWatchBookmarks") == Some(&"true");
    if write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .is_err()
    {
        return;
    }
    let mut st = inner.state.lock().unwrap();
    if from < st.oldest {
        let gone = json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {from} ({})", st.oldest),
            "reason": "Expired", "code": 410}});
        drop(st);
        let _ = chunk(conn, &gone);
        let _ = write!(conn, "0\r\n\r\n");
        return;
    }
    let mut sent = from;
    let start = Instant::now();
    let mut last_bookmark = Instant::now();
    loop {
        if inner.epoch.load(Ordering::SeqCst) != epoch || !inner.running.load(Ordering::SeqCst) {
            // Dropped mid-stream: no final chunk, as a broken connection.
            drop(st);
            let _ = conn.shutdown(std::net::Shutdown::Both);
            return;
        }
        let events: Vec<Value> = st
            .log
            .iter()
            .filter(|(rv, k, _, _)| *rv > sent && k == kind)
            .map(|(_, _, ty, v)| json!({"type": ty, "object": v}))
            .collect();
        let now_rv = st.rv;
        drop(st);
        for e in &events {
            if chunk(conn, e).is_err() {
                return;
            }
        }
        sent = sent.max(now_rv);
        if bookmarks && last_bookmark.elapsed() >= Duration::from_secs(1) {
            let b = json!({"type": "BOOKMARK", "object": {
                "kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": sent.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}}});
            if chunk(conn, &b).is_err() {
                return;
            }
            last_bookmark = Instant::now();
        }
        if start.elapsed() >= timeout {
            let _ = write!(conn, "0\r\n\r\n");
            return;
        }
        st = inner.state.lock().unwrap();
        if st.rv <= sent {
            st = inner
                .changed
                .wait_timeout(st, Duration::from_millis(200))
                .unwrap()
                .0;
        }
    }
}
