//! Keeps the workers' tables in step with a source: events from the
//! source go into the translation model, and when a Service changed, the
//! model's specs are published. A rejected object, a refused file or a
//! Service the tables left out is logged once, when it happens, and kept
//! in the status; whatever was good before keeps serving.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_dataplane::service::ServiceSpec;

use std::collections::BTreeSet;

use crate::publish::{Change, Published, Publisher};
use crate::source::file::FileSource;
use crate::source::{self};
use crate::translate::Model;
use crate::translate::ServiceKey;

/// Where a sync publishes: the daemon's workers, or a test's recorder.
pub trait Publish: Send + 'static {
    /// Every Service.
    fn publish(&self, specs: &[ServiceSpec]) -> Published;
    /// Some Services changed.
    fn publish_changes(&self, changes: &[Change]) -> Published;
    fn generation(&self) -> u64;
}

impl Publish for Publisher {
    fn publish(&self, specs: &[ServiceSpec]) -> Published {
        self.publish_services(specs)
    }
    fn publish_changes(&self, changes: &[Change]) -> Published {
        Publisher::publish_changes(self, changes)
    }
    fn generation(&self) -> u64 {
        Publisher::generation(self)
    }
}

/// The changes of the Services `touched`, as the model now has them.
pub fn changes(model: &Model, touched: &BTreeSet<ServiceKey>) -> Vec<Change> {
    touched
        .iter()
        .map(|k| match model.spec(k) {
            Some(s) => Change::Upsert(s),
            None => Change::Remove {
                namespace: k.0.clone(),
                name: k.1.clone(),
            },
        })
        .collect()
}

/// What a source has done (the admin protocol's `SourceState`).
pub use sluice_admin::SourceState as Status;

/// The file source, its model, and the first specs, read before the
/// daemon starts so that it starts with them.
pub struct Prepared {
    pub source: FileSource,
    pub model: Model,
    pub specs: Vec<ServiceSpec>,
    pub status: Status,
}

/// Reads the directory once and translates what it holds.
/// `node` is this node's name (`Model::for_node`).
pub fn prepare(dir: impl Into<PathBuf>, node: &str) -> Prepared {
    let mut source = FileSource::new(dir);
    let mut model = Model::for_node(node);
    let mut status = Status::default();
    step(&mut source, &mut model, &mut status);
    let specs = model.specs();
    services_into(&mut status, &model);
    Prepared {
        source,
        model,
        specs,
        status,
    }
}

/// One scan: returns the Services it changed.
fn step(source: &mut FileSource, model: &mut Model, status: &mut Status) -> BTreeSet<ServiceKey> {
    let scan = source.scan();
    status.scans += 1;
    for p in &scan.problems {
        eprintln!("sluice: file source: refused {p}; its last good objects keep serving");
    }
    if !scan.problems.is_empty() || !scan.events.is_empty() {
        status.file_problems = scan.problems.iter().map(|p| p.to_string()).collect();
    }
    let mut touched = BTreeSet::new();
    for ev in &scan.events {
        let a = source::apply(model, ev);
        if let Some(r) = &a.rejected {
            eprintln!("sluice: rejected {r}; its last good version keeps serving");
        }
        touched.extend(a.touched);
    }
    status.rejected = model.rejected().map(|r| r.to_string()).collect();
    status.rejections = model.rejections;
    status.skipped = model.skipped();
    touched
}

/// The Services programmed, for the status, once published.
fn services_into(status: &mut Status, model: &Model) {
    status.services = model.services();
    status.programmed = Arc::new(model.programmed());
    status.skipped = model.skipped();
}

/// The running sync.
/// A sync's thread, its stop flag and its status; stopped when dropped.
pub struct Running {
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<Status>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A reader of the status for another thread (the admin socket's).
    pub fn status_reader(&self) -> impl Fn() -> Status + Send + Sync + 'static {
        let s = self.status.clone();
        move || s.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until `ready(status)` holds; the status, or `None` on timeout.
    pub fn wait(&self, timeout: Duration, ready: impl Fn(&Status) -> bool) -> Option<Status> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            let s = self.status();
            if ready(&s) {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Waits until the tables' generation passes `after`.
    pub fn wait_for_generation(&self, after: u64, timeout: Duration) -> Option<Status> {
        self.wait(timeout, |s| s.generation > after)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The file source's sync.
pub type FileSync = Running;
/// The API server's sync.
pub type KubeSync = Running;

pub struct Files;

impl Files {
    /// Scans every `period` and publishes through `publisher`.
    pub fn start(p: Prepared, publisher: impl Publish, period: Duration) -> FileSync {
        let stop = Arc::new(AtomicBool::new(false));
        let mut first = p.status;
        first.generation = publisher.generation();
        let status = Arc::new(Mutex::new(first));
        let thread = {
            let (stop, status) = (stop.clone(), status.clone());
            let (mut source, mut model) = (p.source, p.model);
            std::thread::Builder::new()
                .name("sluice-files".into())
                .spawn(move || {
                    let mut st = status.lock().map(|s| s.clone()).unwrap_or_default();
                    while !stop.load(Ordering::Relaxed) {
                        let touched = step(&mut source, &mut model, &mut st);
                        if !touched.is_empty() {
                            let published = publisher.publish_changes(&changes(&model, &touched));
                            for problem in &published.problems {
                                eprintln!("sluice: left out of the tables: {problem}");
                            }
                            st.generation = published.generation;
                            services_into(&mut st, &model);
                        }
                        if let Ok(mut s) = status.lock() {
                            *s = st.clone();
                        }
                        std::thread::sleep(period);
                    }
                })
                .expect("spawn the file sync")
        };
        Running {
            stop,
            status,
            thread: Some(thread),
        }
    }
}

/// The API server sync: kube-rs's watchers on a thread of their own
/// (a single-threaded tokio runtime), publishing as the File sync does.
/// The first publication waits until every kind has been listed, so that
/// the tables are never published half-built.
pub struct Kube;

impl Kube {
    /// `node` is this node's name (`Model::for_node`).
    pub fn start(config: kube::Config, publisher: impl Publish, node: &str) -> KubeSync {
        let node = node.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(Status::default()));
        let thread = {
            let (stop, status) = (stop.clone(), status.clone());
            std::thread::Builder::new()
                .name("sluice-kube".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            eprintln!("sluice: API server source: no tokio runtime: {e}");
                            return;
                        }
                    };
                    rt.block_on(kube_loop(config, publisher, stop, status, &node));
                })
                .expect("spawn the API server sync")
        };
        Running {
            stop,
            status,
            thread: Some(thread),
        }
    }
}

async fn kube_loop(
    config: kube::Config,
    publisher: impl Publish,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<Status>>,
    node: &str,
) {
    use futures::{FutureExt, StreamExt};

    use crate::source::kube::{watch_all, Item, Relister};

    let client = match kube::Client::try_from(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: API server source: {e}");
            if let Ok(mut s) = status.lock() {
                s.last_error = Some(e.to_string());
            }
            return;
        }
    };
    let mut stream = watch_all(client);
    let mut relister = Relister::default();
    let mut model = Model::for_node(node);
    let mut st = Status::default();
    let mut dirty: BTreeSet<ServiceKey> = BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        // Wake every 100 ms to see the stop flag.
        let Ok(first) = tokio::time::timeout(Duration::from_millis(100), stream.next()).await
        else {
            continue;
        };
        let Some(first) = first else { break };
        // This item and whatever else is ready now, in one publication.
        let mut items = vec![first];
        while items.len() < 65_536 {
            match stream.next().now_or_never() {
                Some(Some(i)) => items.push(i),
                _ => break,
            }
        }
        for item in items {
            match &item {
                Item::Error(kind, e) => {
                    if st.connected || st.last_error.as_deref() != Some(e.as_str()) {
                        eprintln!(
                            "sluice: API server: watching {}s failed: {e}; retrying with backoff, the last tables keep serving",
                            kind.as_str()
                        );
                    }
                    st.connected = false;
                    st.last_error = Some(e.clone());
                }
                _ => {
                    if !st.connected && st.last_error.is_some() {
                        eprintln!("sluice: API server: watching again");
                    }
                    st.connected = true;
                }
            }
            for ev in relister.feed(item) {
                let a = source::apply(&mut model, &ev);
                if let Some(r) = &a.rejected {
                    eprintln!("sluice: rejected {r}; its last good version keeps serving");
                }
                dirty.extend(a.touched);
            }
        }
        st.lists = relister.lists;
        st.rejected = model.rejected().map(|r| r.to_string()).collect();
        st.rejections = model.rejections;
        st.skipped = model.skipped();
        if relister.settled() && (!dirty.is_empty() || !st.synced) {
            // The first time every Service; then only the changed ones.
            let published = if st.synced {
                publisher.publish_changes(&changes(&model, &dirty))
            } else {
                publisher.publish(&model.specs())
            };
            for problem in &published.problems {
                eprintln!("sluice: left out of the tables: {problem}");
            }
            st.generation = published.generation;
            services_into(&mut st, &model);
            st.synced = true;
            dirty.clear();
        }
        if let Ok(mut s) = status.lock() {
            *s = st.clone();
        }
    }
}
