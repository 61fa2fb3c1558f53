//! Publication: tables for the workers built from the sources' Services
//! and the attached pods' routes, changed in place on the copy no worker
//! reads and swapped in whole (left-right), with what they leave out kept
//! for `status`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sluice_dataplane::conntrack::{Conntrack, FlowRecord, Timeouts};
use sluice_dataplane::neighbor::Gateway;
use sluice_dataplane::route::{PortId, Routes};
use sluice_dataplane::service::{BuildProblem, ServiceSpec, ServiceTable};
use sluice_dataplane::Addr;

use crate::state::{Shared, Snapshot};

/// Publishes tables to the workers; cloned into whatever thread keeps the
/// tables in step with a source.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
    host_addrs: Arc<Vec<Addr>>,
    /// The copy the workers are not reading, and what it lacks. Locked
    /// only to read or change it: a publication takes the copy out (and
    /// its turn, `busy`) while it waits for the workers to leave it.
    publishing: Arc<std::sync::Mutex<Spare>>,
    /// A publication's turn: one at a time, in generation order. The next
    /// waits here, holding no lock, while one waits for the workers.
    turn: Arc<std::sync::Condvar>,
    /// What the tables leave out now, for `status` (apart from
    /// `publishing`, which a publication holds for as long as it takes).
    left_out: Arc<std::sync::Mutex<Vec<String>>>,
}

type ServiceKey = (String, String);

/// Why each Service left out of the tables (wholly or in part) is.
pub(crate) type LeftOut = BTreeMap<ServiceKey, Vec<BuildProblem>>;

/// `BuildProblem`s by the Service they are about.
fn left_out_of(problems: &[BuildProblem]) -> LeftOut {
    let mut m = LeftOut::new();
    for p in problems {
        let service = match p {
            BuildProblem::DuplicateFrontend { service, .. }
            | BuildProblem::UnresolvedTargetPort { service, .. } => service,
        };
        let (ns, name) = service.split_once('/').unwrap_or(("", service));
        m.entry((ns.to_string(), name.to_string()))
            .or_default()
            .push(p.clone());
    }
    m
}

/// Applies one change to a copy of the tables, keeping in `found` the
/// problems of the Service's last change; false when the table is full.
fn apply(snap: &mut Snapshot, c: &Change, found: &mut LeftOut) -> bool {
    let problems = match c {
        Change::Upsert(s) => match snap.services.upsert_service(s) {
            Ok(p) => p,
            Err(_) => return false,
        },
        Change::Remove { namespace, name } => {
            snap.services.remove_service(namespace, name);
            Vec::new()
        }
    };
    if problems.is_empty() {
        found.remove(&c.key());
    } else {
        found.insert(c.key(), problems);
    }
    true
}

/// Whether a Service left out for these reasons may fit once another
/// Service changes: it wanted a frontend another held. (A target port no
/// endpoint resolves changes only with the Service's own objects.)
fn wants_a_taken_frontend(problems: &[BuildProblem]) -> bool {
    problems
        .iter()
        .any(|p| matches!(p, BuildProblem::DuplicateFrontend { .. }))
}

/// The same problems, in any order.
fn same_problems(a: &[BuildProblem], b: &[BuildProblem]) -> bool {
    a.len() == b.len() && a.iter().all(|p| b.contains(p))
}

struct Spare {
    table: Option<Arc<Snapshot>>,
    /// The changes of the last publication, which this copy has not had.
    pending: Vec<Change>,
    /// Every Service as published last: what a rebuild is made from.
    current: BTreeMap<(String, String), ServiceSpec>,
    /// The pods' addresses and ports: every publication routes them.
    pods: Vec<(Addr, PortId, [u8; 6])>,
    /// The version of the ports' registry `pods` is (`publish_pods`).
    pods_version: u64,
    /// A publication is under way (it has taken `table` out).
    busy: bool,
    /// Services the tables leave out now, with why: each is tried again
    /// with the next publication (the frontend it wanted may be free).
    left_out: LeftOut,
}

/// A publication's turn, given back when it ends (or panics): the next
/// publication may take the spare copy.
struct Turn<'a>(&'a Publisher);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut sp = self.0.publishing.lock().unwrap_or_else(|p| p.into_inner());
        sp.busy = false;
        drop(sp);
        self.0.turn.notify_one();
    }
}

/// One Service's change, as the control side publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Upsert(ServiceSpec),
    Remove { namespace: String, name: String },
}

impl Change {
    fn key(&self) -> ServiceKey {
        match self {
            Change::Upsert(s) => (s.namespace.clone(), s.name.clone()),
            Change::Remove { namespace, name } => (namespace.clone(), name.clone()),
        }
    }
}

/// What a publication did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub generation: u64,
    /// Services or ports left out of the tables (a frontend another
    /// Service holds, a target port no endpoint resolves); the rest is in.
    pub problems: Vec<String>,
}

impl Publisher {
    /// A publisher of `shared`'s tables, which were built from `specs` and
    /// `pods`; `spare` is their second copy, and `left_out` what they
    /// leave out.
    pub(crate) fn new(
        shared: Arc<Shared>,
        host_addrs: Vec<Addr>,
        specs: &[ServiceSpec],
        pods: Vec<(Addr, PortId, [u8; 6])>,
        spare: Snapshot,
        left_out: LeftOut,
    ) -> Publisher {
        Publisher {
            shared,
            host_addrs: Arc::new(host_addrs),
            turn: Arc::new(std::sync::Condvar::new()),
            publishing: Arc::new(std::sync::Mutex::new(Spare {
                table: Some(Arc::new(spare)),
                pending: Vec::new(),
                pods,
                pods_version: 0,
                busy: false,
                current: specs
                    .iter()
                    .map(|s| ((s.namespace.clone(), s.name.clone()), s.clone()))
                    .collect(),
                left_out: left_out.clone(),
            })),
            left_out: Arc::new(std::sync::Mutex::new(
                left_out
                    .values()
                    .flatten()
                    .map(ToString::to_string)
                    .collect(),
            )),
        }
    }

    /// A publisher whose tables no worker reads, built from `specs`: for
    /// benchmarks of the publication path alone.
    pub fn detached(specs: &[ServiceSpec]) -> Publisher {
        let build = || Snapshot {
            services: ServiceTable::build_with_room(specs, room(ports_of(specs))).0,
            routes: Routes::default(),
            gateway: Gateway::DEFAULT,
            generation: 1,
        };
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(build()),
            conntrack: Conntrack::new(1024, Timeouts::default()),
            stop: AtomicBool::new(false),
            generation: AtomicU64::new(1),
            live: Vec::new(),
            seen: Vec::new(),
        });
        let left_out = build_services(specs).1;
        Publisher::new(shared, Vec::new(), specs, Vec::new(), build(), left_out)
    }

    /// A reader's load of the live tables, as a worker's: the Service
    /// ports they hold, and their generation.
    pub fn read(&self) -> (usize, u64) {
        let s = self.shared.snapshot.load();
        (s.services.len(), s.generation)
    }

    /// Addresses the live tables route to pods.
    pub fn routed_pods(&self) -> usize {
        self.shared.snapshot.load().routes.pods()
    }

    /// The generation of the tables the workers now read.
    pub fn generation(&self) -> u64 {
        self.shared.snapshot.load().generation
    }

    /// Publishes the pods' routes (a pod attached or detached), with the
    /// Services as they are.
    ///
    /// `version` is the ports' registry's version that `pods` is: two
    /// attaches that finish at once may publish in either order, and the
    /// older registry never replaces the newer.
    pub fn publish_pods(&self, pods: Vec<(Addr, PortId, [u8; 6])>, version: u64) -> Published {
        {
            let mut sp = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
            if version >= sp.pods_version {
                sp.pods = pods;
                sp.pods_version = version;
            }
        }
        self.publish_changes(&[])
    }

    /// Waits until every running worker has loaded tables of `generation`
    /// or later, at most `timeout`; whether they all have. A worker loads
    /// the tables once per batch of rounds, which is milliseconds when it
    /// naps: a pod's ADD waits for this, so that the pod is routed from
    /// its first packet.
    pub fn wait_loaded(&self, generation: u64, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let all = self.shared.stop.load(Ordering::Relaxed)
                || self
                    .shared
                    .seen
                    .iter()
                    .all(|s| s.0.load(Ordering::Acquire) >= generation);
            if all {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Publishes a whole set of Services: the differences from what was
    /// published last go out as changes.
    pub fn publish_services(&self, specs: &[ServiceSpec]) -> Published {
        let changes = {
            let sp = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
            let wanted: BTreeMap<(String, String), &ServiceSpec> = specs
                .iter()
                .map(|s| ((s.namespace.clone(), s.name.clone()), s))
                .collect();
            let mut changes: Vec<Change> = sp
                .current
                .keys()
                .filter(|k| !wanted.contains_key(*k))
                .map(|(namespace, name)| Change::Remove {
                    namespace: namespace.clone(),
                    name: name.clone(),
                })
                .collect();
            changes.extend(
                wanted
                    .iter()
                    .filter(|(k, s)| sp.current.get(*k) != Some(**s))
                    .map(|(_, s)| Change::Upsert((*s).clone())),
            );
            changes
        };
        self.publish_changes(&changes)
    }

    /// Publishes changes to some Services, in time proportional to them:
    /// they are made in place to the copy the workers are not reading
    /// (once the last worker has left it), and that copy is swapped in.
    /// The workers see the old tables or the new ones, never a mix, and
    /// never wait; the copy they leave gets the same changes next time.
    pub fn publish_changes(&self, changes: &[Change]) -> Published {
        let mut sp = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        while sp.busy {
            sp = self.turn.wait(sp).unwrap_or_else(|p| p.into_inner());
        }
        for c in changes {
            match c {
                Change::Upsert(s) => {
                    sp.current
                        .insert((s.namespace.clone(), s.name.clone()), s.clone());
                }
                Change::Remove { namespace, name } => {
                    sp.current.remove(&(namespace.clone(), name.clone()));
                }
            }
        }
        // A Service's last change is its state (an upsert carries the
        // whole Service), so one change per Service; and removes first: a
        // frontend that one Service gives up in this batch is free for
        // another that wants it in the same batch.
        let mut seen = std::collections::BTreeSet::new();
        let mut last: Vec<Change> = changes
            .iter()
            .rev()
            .filter(|c| seen.insert(c.key()))
            .cloned()
            .collect();
        last.reverse();
        let (mut changes, upserts): (Vec<Change>, Vec<Change>) = last
            .into_iter()
            .partition(|c| matches!(c, Change::Remove { .. }));
        changes.extend(upserts);
        let generation = self.shared.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut table = sp.table.take();
        sp.busy = true;
        let _turn = Turn(self);
        drop(sp);
        // Workers hold a snapshot for one batch of rounds (microseconds,
        // a few milliseconds when they nap): wait for the last to leave,
        // holding no lock (a second publication waits for its turn).
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        let mut ready = false;
        if let Some(t) = table.as_mut() {
            while Arc::get_mut(t).is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(20));
            }
            ready = Arc::get_mut(t).is_some();
        }
        let mut sp = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let pending = std::mem::take(&mut sp.pending);
        let before = std::mem::take(&mut sp.left_out);
        let mut full = !ready;
        // Each Service's problems after its last change in this batch.
        let mut found = LeftOut::new();
        if let Some(snap) = table.as_mut().and_then(Arc::get_mut).filter(|_| ready) {
            // The last publication's changes (their problems were told
            // then), then this one's.
            let mut told = LeftOut::new();
            full = !pending.iter().all(|c| apply(snap, c, &mut told));
            if !full {
                full = !changes.iter().all(|c| apply(snap, c, &mut found));
            }
            // Then, with any change, every Service left out for a taken
            // frontend is tried again: the frontend may be free now.
            if !full && !changes.is_empty() {
                let touched: std::collections::BTreeSet<ServiceKey> =
                    changes.iter().map(Change::key).collect();
                let retry: Vec<Change> = before
                    .iter()
                    .filter(|(k, _)| !touched.contains(*k))
                    .chain(found.iter())
                    .filter(|(_, p)| wants_a_taken_frontend(p))
                    .filter_map(|(k, _)| sp.current.get(k).cloned().map(Change::Upsert))
                    .collect();
                for c in retry {
                    if !apply(snap, &c, &mut found) {
                        full = true;
                        break;
                    }
                    changes.push(c);
                }
            }
            snap.routes = build_routes(&sp.pods, &self.host_addrs);
            snap.generation = generation;
        }
        let next = if full {
            // No room left, or a worker held the copy for a second: both
            // copies are built afresh from every Service (rare; the tables
            // are built with a quarter more room than they need). The
            // Services that hold their frontends now go first, so that a
            // rebuild moves no frontend from one Service to another.
            let (held, wanting): (Vec<_>, Vec<_>) = sp
                .current
                .iter()
                .partition(|(k, _)| !before.contains_key(*k));
            let specs: Vec<ServiceSpec> = held
                .into_iter()
                .chain(wanting)
                .map(|(_, s)| s.clone())
                .collect();
            let pods = sp.pods.clone();
            let build = || {
                let (services, p) = ServiceTable::build_with_room(&specs, room(ports_of(&specs)));
                (
                    Snapshot {
                        services,
                        routes: build_routes(&pods, &self.host_addrs),
                        gateway: Gateway::DEFAULT,
                        generation,
                    },
                    p,
                )
            };
            let (snap, p) = build();
            sp.left_out = left_out_of(&p);
            let prev = self.shared.snapshot.swap(Arc::new(snap));
            drop(prev);
            // The spare is built now, not from the copy just swapped out,
            // which workers may still read.
            Arc::new(build().0)
        } else {
            let mut left_out = before.clone();
            for c in &changes {
                match found.get(&c.key()) {
                    Some(p) => left_out.insert(c.key(), p.clone()),
                    None => left_out.remove(&c.key()),
                };
            }
            sp.left_out = left_out;
            let new = table.expect("the spare copy");
            let prev = self.shared.snapshot.swap(new);
            sp.pending = changes;
            prev
        };
        if full {
            sp.pending.clear();
        }
        sp.table = Some(next);
        // Told once: what was left out already is not news.
        let problems = sp
            .left_out
            .iter()
            .filter(|(k, p)| !before.get(*k).is_some_and(|b| same_problems(b, p)))
            .flat_map(|(_, p)| p.iter().map(ToString::to_string))
            .collect();
        *self.left_out.lock().unwrap_or_else(|p| p.into_inner()) = sp
            .left_out
            .values()
            .flatten()
            .map(ToString::to_string)
            .collect();
        Published {
            generation,
            problems,
        }
    }

    /// What the tables leave out now (a frontend another Service holds, a
    /// target port no endpoint resolves), one line each.
    pub fn left_out(&self) -> Vec<String> {
        self.left_out.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Live flows, at most `limit`.
    pub fn flows(&self, limit: usize) -> Vec<FlowRecord> {
        self.shared.conntrack.flows(limit)
    }
}

/// Room for this many more Service ports than a table is built with, so
/// that updates go in place for a while before a rebuild.
fn room(ports: usize) -> usize {
    (ports / 4).max(1024)
}

fn ports_of(specs: &[ServiceSpec]) -> usize {
    specs
        .iter()
        .map(|s| s.ports.len() * s.cluster_ips.len())
        .sum()
}

/// The first tables, and what they leave out (logged, shown by status).
pub(crate) fn build_services(specs: &[ServiceSpec]) -> (ServiceTable, LeftOut) {
    let (table, problems) = ServiceTable::build_with_room(specs, room(ports_of(specs)));
    (table, left_out_of(&problems))
}

pub(crate) fn build_routes(pods: &[(Addr, PortId, [u8; 6])], host: &[Addr]) -> Routes {
    let mut r = Routes::default();
    for &(a, p, m) in pods {
        r.add_pod(a, p, m);
    }
    for &a in host {
        r.add_host(a);
    }
    r
}
