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

use crate::daemon::Publisher;
use crate::source::file::FileSource;
use crate::source::{self};
use crate::translate::Model;

/// What the control side has done, for `status` and for tests that wait
/// until a change is programmed rather than sleep.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// The generation of the tables published last (0: none yet).
    pub generation: u64,
    /// Scans of the source so far.
    pub scans: u64,
    pub services: usize,
    /// Objects rejected now, and all rejections so far.
    pub rejected: Vec<String>,
    pub rejections: u64,
    /// Files refused at their last reading.
    pub file_problems: Vec<String>,
}

/// The file source, its model, and the first specs, read before the
/// daemon starts so that it starts with them.
pub struct Prepared {
    pub source: FileSource,
    pub model: Model,
    pub specs: Vec<ServiceSpec>,
    pub status: Status,
}

/// Reads the directory once and translates what it holds.
pub fn prepare(dir: impl Into<PathBuf>) -> Prepared {
    let mut source = FileSource::new(dir);
    let mut model = Model::default();
    let mut status = Status::default();
    step(&mut source, &mut model, &mut status);
    let specs = model.specs();
    status.services = specs.len();
    Prepared {
        source,
        model,
        specs,
        status,
    }
}

/// One scan: returns whether a Service changed.
fn step(source: &mut FileSource, model: &mut Model, status: &mut Status) -> bool {
    let scan = source.scan();
    status.scans += 1;
    for p in &scan.problems {
        eprintln!("sluice: file source: refused {p}; its last good objects keep serving");
    }
    if !scan.problems.is_empty() || !scan.events.is_empty() {
        status.file_problems = scan.problems.iter().map(|p| p.to_string()).collect();
    }
    let mut touched = false;
    for ev in &scan.events {
        let a = source::apply(model, ev);
        if let Some(r) = &a.rejected {
            eprintln!("sluice: rejected {r}; its last good version keeps serving");
        }
        touched |= !a.touched.is_empty();
    }
    status.rejected = model.rejected().map(|r| r.to_string()).collect();
    status.rejections = model.rejections;
    touched
}

/// The running sync.
pub struct FileSync {
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<Status>>,
    thread: Option<JoinHandle<()>>,
}

impl FileSync {
    /// Scans every `period` and publishes through `publisher`.
    pub fn start(p: Prepared, publisher: Publisher, period: Duration) -> FileSync {
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
                        if step(&mut source, &mut model, &mut st) {
                            let specs = model.specs();
                            let published = publisher.publish_services(&specs);
                            for problem in &published.problems {
                                eprintln!("sluice: left out of the tables: {problem}");
                            }
                            st.generation = published.generation;
                            st.services = specs.len();
                        }
                        if let Ok(mut s) = status.lock() {
                            *s = st.clone();
                        }
                        std::thread::sleep(period);
                    }
                })
                .expect("spawn the file sync")
        };
        FileSync {
            stop,
            status,
            thread: Some(thread),
        }
    }

    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until the tables' generation passes `after` and a scan has
    /// seen the source since; returns the status, or `None` on timeout.
    pub fn wait_for_generation(&self, after: u64, timeout: Duration) -> Option<Status> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            let s = self.status();
            if s.generation > after {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for FileSync {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
