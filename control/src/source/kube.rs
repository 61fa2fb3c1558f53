//! The `kube` source: the API server's Services, EndpointSlices and Nodes
//! through kube-rs's watcher (a list, then a watch from its
//! resourceVersion, with bookmarks), turned into the same events as the
//! file source.
//!
//! What the watcher does and this source relies on: a dropped watch is
//! resumed from the last resourceVersion seen; a 410 Gone (the version was
//! compacted away) makes it list again. A relist is diffed here against
//! what was known, so that only the objects that went away while nobody
//! watched are deleted: nothing is flushed, and the tables keep serving
//! throughout. While the API server cannot be reached, errors are retried
//! with a capped exponential backoff (250 ms doubling to 5 s), and the last
//! published tables keep serving.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use super::file::{Event, Object};
use crate::translate::{Kind, ObjectRef};

/// 250 ms doubling to 5 s, with a little jitter so that many nodes do not
/// retry in step; reset once a stream gives something again.
pub struct CappedBackoff {
    next: Duration,
    seed: u64,
}

impl CappedBackoff {
    pub const MIN: Duration = Duration::from_millis(250);
    pub const MAX: Duration = Duration::from_secs(5);

    pub fn new(seed: u64) -> CappedBackoff {
        CappedBackoff {
            next: Self::MIN,
            seed: seed | 1,
        }
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // xorshift for up to 10% of jitter.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = d.as_millis() as u64 / 10;
        Some(d + Duration::from_millis(if jitter == 0 { 0 } else { self.seed % jitter }))
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// One item of the merged watch streams.
pub enum Item {
    Event(Event),
    /// A kind's list began (`Init`) or ended (`InitDone`).
    ListStarted(Kind),
    ListDone(Kind),
    /// The watch of a kind failed; the watcher retries after a backoff.
    Error(Kind, String),
}

fn stream_of<K>(
    api: Api<K>,
    kind: Kind,
    wrap: fn(K) -> Object,
    seed: u64,
) -> impl Stream<Item = Item> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default().timeout(60))
        .backoff(CappedBackoff::new(seed))
        .map(move |r| match r {
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                Item::Event(Event::Apply(wrap(o)))
            }
            Ok(watcher::Event::Delete(o)) => Item::Event(Event::Delete(wrap(o).reference())),
            Ok(watcher::Event::Init) => Item::ListStarted(kind),
            Ok(watcher::Event::InitDone) => Item::ListDone(kind),
            Err(e) => Item::Error(kind, e.to_string()),
        })
}

/// The three watches, merged into one stream.
pub fn watch_all(client: Client) -> impl Stream<Item = Item> + Send + Unpin {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    futures::stream::select_all([
        stream_of(
            Api::<Service>::all(client.clone()),
            Kind::Service,
            |o| Object::Service(Box::new(o)),
            seed,
        )
        .boxed(),
        stream_of(
            Api::<EndpointSlice>::all(client.clone()),
            Kind::EndpointSlice,
            |o| Object::EndpointSlice(Box::new(o)),
            seed.rotate_left(21),
        )
        .boxed(),
        stream_of(
            Api::<Node>::all(client),
            Kind::Node,
            |o| Object::Node(Box::new(o)),
            seed.rotate_left(42),
        )
        .boxed(),
    ])
}

/// Turns the watcher's items into events, diffing each relist against
/// what was known of its kind.
#[derive(Default)]
pub struct Relister {
    known: BTreeMap<Kind, BTreeSet<ObjectRef>>,
    /// Kinds in the middle of a list, and what the list has given so far.
    listing: BTreeMap<Kind, BTreeSet<ObjectRef>>,
    /// Kinds whose first list has completed.
    listed: BTreeSet<Kind>,
    /// Lists completed, the first ones included.
    pub lists: u64,
}

impl Relister {
    /// The events `item` amounts to.
    pub fn feed(&mut self, item: Item) -> Vec<Event> {
        match item {
            Item::Event(Event::Apply(o)) => {
                let r = o.reference();
                if let Some(seen) = self.listing.get_mut(&r.kind) {
                    seen.insert(r.clone());
                }
                self.known.entry(r.kind).or_default().insert(r);
                vec![Event::Apply(o)]
            }
            Item::Event(Event::Delete(r)) => {
                if let Some(k) = self.known.get_mut(&r.kind) {
                    k.remove(&r);
                }
                vec![Event::Delete(r)]
            }
            Item::ListStarted(kind) => {
                self.listing.insert(kind, BTreeSet::new());
                Vec::new()
            }
            Item::ListDone(kind) => {
                self.lists += 1;
                self.listed.insert(kind);
                let seen = self.listing.remove(&kind).unwrap_or_default();
                let known = self.known.entry(kind).or_default();
                let gone: Vec<ObjectRef> = known.difference(&seen).cloned().collect();
                for r in &gone {
                    known.remove(r);
                }
                gone.into_iter().map(Event::Delete).collect()
            }
            Item::Error(..) => Vec::new(),
        }
    }

    /// Whether every kind has been listed once and none is being relisted:
    /// the moment the model is whole.
    pub fn settled(&self) -> bool {
        self.listed.len() == 3 && self.listing.is_empty()
    }
}

/// The client's configuration: from the kubeconfig at `path`, or else as
/// kubectl finds it ($KUBECONFIG, ~/.kube/config, or the in-cluster
/// service account).
pub fn load_config(path: Option<&std::path::Path>) -> Result<kube::Config, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        match path {
            Some(p) => {
                let kc = kube::config::Kubeconfig::read_from(p)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .map_err(|e| format!("{}: {e}", p.display()))
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| format!("no kubeconfig and not in a cluster: {e}")),
        }
    })
}
