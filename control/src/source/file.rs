//! The `file:DIR` source: a directory of Kubernetes manifests (YAML or
//! JSON, several documents a file, `kind: List` too), read with the API's
//! own schema and turned into the same events a watch of the API server
//! gives.
//!
//! The directory is scanned rather than watched with inotify: a scan is a
//! readdir and a stat per file, it sees every way a file can change
//! (editors that rename over the file, a ConfigMap volume's symlink swap,
//! a bind mount), and it needs no descriptor per file. A file whose stamp
//! (size, mtime, inode) changed is read again.
//!
//! A file is taken whole or not at all: if any document in it does not
//! parse, it is refused with its path, the line and the reason, and the
//! objects it gave last time keep serving. A deleted file deletes its
//! objects. An object defined by two files belongs to the first one read;
//! the second is refused for it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;

use crate::translate::{Kind, ObjectRef};

/// One object read from a manifest.
#[derive(Clone, Debug)]
pub enum Object {
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Node(Box<Node>),
}

impl Object {
    pub fn reference(&self) -> ObjectRef {
        let (kind, meta) = match self {
            Object::Service(s) => (Kind::Service, &s.metadata),
            Object::EndpointSlice(e) => (Kind::EndpointSlice, &e.metadata),
            Object::Node(n) => (Kind::Node, &n.metadata),
        };
        ObjectRef {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// A change, as a watch event.
#[derive(Clone, Debug)]
pub enum Event {
    Apply(Object),
    Delete(ObjectRef),
}

/// A file that was refused; its previous objects keep serving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProblem {
    pub path: PathBuf,
    /// Which document (from 1) and where, when known.
    pub at: String,
    pub reason: String,
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.path.display(), self.at, self.reason)
    }
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct Scan {
    pub events: Vec<Event>,
    pub problems: Vec<FileProblem>,
    /// Documents of kinds this source does not read (Deployments, ...).
    pub ignored: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: std::time::SystemTime,
    ino: u64,
}

struct FileState {
    /// `None` forces a read at the next scan.
    stamp: Option<Stamp>,
    /// The objects its last good version gave.
    objects: BTreeSet<ObjectRef>,
}

pub struct FileSource {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// Which file an object belongs to.
    owner: BTreeMap<ObjectRef, PathBuf>,
    /// Files refused an object another file owns: read again once the
    /// owner lets it go.
    contenders: BTreeMap<ObjectRef, BTreeSet<PathBuf>>,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
}

/// The objects of one file's text, or why it is refused.
pub fn parse(text: &str) -> Result<(Vec<Object>, usize), (String, String)> {
    let mut objects = Vec::new();
    let mut ignored = 0;
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let at = |e: Option<serde_yaml::Location>| match e {
            Some(l) => format!("document {} (line {})", i + 1, l.line()),
            None => format!("document {}", i + 1),
        };
        let value =
            serde_yaml::Value::deserialize(doc).map_err(|e| (at(e.location()), e.to_string()))?;
        if value.is_null() {
            continue; // an empty document ("---" at the end)
        }
        collect(value, &mut objects, &mut ignored).map_err(|r| (at(None), r))?;
    }
    Ok((objects, ignored))
}

fn collect(
    value: serde_yaml::Value,
    out: &mut Vec<Object>,
    ignored: &mut usize,
) -> Result<(), String> {
    let head: Head = serde_yaml::from_value(value.clone()).map_err(|e| e.to_string())?;
    let (Some(api), Some(kind)) = (head.api_version.as_deref(), head.kind.as_deref()) else {
        return Err("no apiVersion and kind: not a Kubernetes object".into());
    };
    let schema = |e: serde_yaml::Error| format!("{kind} ({api}): {e}");
    let mut obj = match (api, kind) {
        ("v1", "Service") => Object::Service(Box::new(serde_yaml::from_value(value).map_err(schema)?)),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            Object::EndpointSlice(Box::new(serde_yaml::from_value(value).map_err(schema)?))
        }
        ("v1", "Node") => Object::Node(Box::new(serde_yaml::from_value(value).map_err(schema)?)),
        (_, "List") => {
            let items = value
                .get("items")
                .and_then(|i| i.as_sequence())
                .cloned()
                .unwrap_or_default();
            for item in items {
                collect(item, out, ignored)?;
            }
            return Ok(());
        }
        (_, "Service" | "EndpointSlice" | "Node") => {
            return Err(format!(
                "{kind} of apiVersion {api}: this source reads v1 Service, discovery.k8s.io/v1 EndpointSlice and v1 Node"
            ))
        }
        _ => {
            *ignored += 1;
            return Ok(());
        }
    };
    // As kubectl apply does: a namespaced object without a namespace is
    // in "default".
    let meta = match &mut obj {
        Object::Service(s) => Some(&mut s.metadata),
        Object::EndpointSlice(e) => Some(&mut e.metadata),
        Object::Node(_) => None,
    };
    if let Some(m) = meta {
        if m.namespace.as_deref().unwrap_or_default().is_empty() {
            m.namespace = Some("default".into());
        }
    }
    if obj.reference().name.is_empty() {
        return Err(format!("{kind} without metadata.name"));
    }
    out.push(obj);
    Ok(())
}

fn is_manifest(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    !hidden
        && matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
}

fn stamp(p: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    // Followed through symlinks, as a ConfigMap volume's files are.
    let m = std::fs::metadata(p).ok()?;
    m.is_file().then(|| Stamp {
        len: m.len(),
        mtime: m.modified().unwrap_or(std::time::UNIX_EPOCH),
        ino: m.ino(),
    })
}

impl FileSource {
    pub fn new(dir: impl Into<PathBuf>) -> FileSource {
        FileSource {
            dir: dir.into(),
            files: BTreeMap::new(),
            owner: BTreeMap::new(),
            contenders: BTreeMap::new(),
        }
    }

    /// `o` no longer belongs to any file: the files that wanted it are
    /// read again at the next scan.
    fn release(&mut self, o: &ObjectRef, events: &mut Vec<Event>) {
        self.owner.remove(o);
        events.push(Event::Delete(o.clone()));
        for p in self.contenders.remove(o).unwrap_or_default() {
            if let Some(f) = self.files.get_mut(&p) {
                f.stamp = None;
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads what changed since the last scan. The first scan gives every
    /// object. A directory that cannot be read is a problem, and nothing
    /// is deleted for it.
    pub fn scan(&mut self) -> Scan {
        let mut scan = Scan::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                scan.problems.push(FileProblem {
                    path: self.dir.clone(),
                    at: "directory".into(),
                    reason: e.to_string(),
                });
                return scan;
            }
        };
        let mut present: BTreeMap<PathBuf, Stamp> = BTreeMap::new();
        for e in entries.flatten() {
            let p = e.path();
            if is_manifest(&p) {
                if let Some(s) = stamp(&p) {
                    present.insert(p, s);
                }
            }
        }
        // Deleted files first, so that an object moved to another file is
        // deleted and then applied, not the reverse.
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !present.contains_key(*p))
            .cloned()
            .collect();
        for p in gone {
            let state = self.files.remove(&p).expect("a known file");
            for o in state.objects {
                if self.owner.get(&o) == Some(&p) {
                    self.release(&o, &mut scan.events);
                }
            }
        }
        for (p, s) in present {
            if self.files.get(&p).is_some_and(|f| f.stamp == Some(s)) {
                continue;
            }
            let text = match std::fs::read_to_string(&p) {
                Ok(t) => t,
                Err(e) => {
                    scan.problems.push(FileProblem {
                        path: p,
                        at: "file".into(),
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            let (objects, ignored) = match parse(&text) {
                Ok(o) => o,
                Err((at, reason)) => {
                    scan.problems.push(FileProblem {
                        path: p.clone(),
                        at,
                        reason,
                    });
                    // Not read again until it changes; its last good
                    // objects stay.
                    let objects = self
                        .files
                        .get(&p)
                        .map(|f| f.objects.clone())
                        .unwrap_or_default();
                    self.files.insert(
                        p,
                        FileState {
                            stamp: Some(s),
                            objects,
                        },
                    );
                    continue;
                }
            };
            scan.ignored += ignored;
            let mut mine = BTreeSet::new();
            for o in objects {
                let r = o.reference();
                match self.owner.get(&r) {
                    Some(other) if *other != p => {
                        self.contenders
                            .entry(r.clone())
                            .or_default()
                            .insert(p.clone());
                        scan.problems.push(FileProblem {
                            path: p.clone(),
                            at: r.to_string(),
                            reason: format!("also defined in {}, which keeps it", other.display()),
                        });
                        continue;
                    }
                    _ => {}
                }
                if !mine.insert(r.clone()) {
                    scan.problems.push(FileProblem {
                        path: p.clone(),
                        at: r.to_string(),
                        reason: "defined twice in this file; the last one counts".into(),
                    });
                }
                self.owner.insert(r, p.clone());
                scan.events.push(Event::Apply(o));
            }
            let before = self
                .files
                .get(&p)
                .map(|f| f.objects.clone())
                .unwrap_or_default();
            for o in before.difference(&mine) {
                if self.owner.get(o) == Some(&p) {
                    self.release(o, &mut scan.events);
                }
            }
            self.files.insert(
                p,
                FileState {
                    stamp: Some(s),
                    objects: mine,
                },
            );
        }
        scan
    }
}

#[cfg(test)]
mod tests;
