//! Changing a Service table in place: one Service's ports added, replaced
//! or removed, in time proportional to that Service, not to the table.
//!
//! Only a table nobody reads may be changed (`&mut self`): the daemon
//! keeps two copies, changes the one the workers have left, and swaps it
//! in (left-right), so that workers never see a table mid-change.
//!
//! Frontend slots use linear probing; a removal shifts the slots after it
//! back (no tombstones, so lookups never slow down with churn). Freed
//! Maglev regions are reused by ports of the same size class, freed
//! backend regions by ports of the same power-of-two class; the unused
//! tail of each arena takes the rest. When there is no room left, the
//! caller rebuilds the table with more (`Full`).

use hashbrown::HashMap;

use super::BuildProblem;
use super::{
    backend_class, draft, front_hash, place, Draft, FrontSlot, Frontend, ServicePort, ServiceSpec,
    ServiceTable,
};
use crate::flow::{Addr, Proto};

/// The table has no room for a change: rebuild it with more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl ServiceTable {
    /// Replaces (or adds) Service `spec`'s ports. On `Full` the table is
    /// left with the Service removed, and must be rebuilt.
    pub fn upsert_service(&mut self, spec: &ServiceSpec) -> Result<Vec<BuildProblem>, Full> {
        self.remove_service(&spec.namespace, &spec.name);
        let mut problems = Vec::new();
        let mut local: HashMap<Frontend, usize> = HashMap::new();
        let mut drafts: Vec<Draft> = Vec::new();
        draft(spec, &mut local, &mut drafts, &mut problems);
        let key = (spec.namespace.clone(), spec.name.clone());
        let mut ids = Vec::new();
        for d in drafts {
            if let Some(&owner) = self.owners.get(&d.frontend) {
                problems.push(BuildProblem::DuplicateFrontend {
                    service: format!("{}/{}", spec.namespace, spec.name),
                    frontend: format!(
                        "{}:{}/{}",
                        d.frontend.addr,
                        d.frontend.port,
                        d.frontend.proto.k8s_name()
                    ),
                    owner: self.ports[owner as usize].name.clone(),
                });
                continue;
            }
            match self.add_port(d) {
                Ok(id) => ids.push(id),
                Err(Full) => {
                    self.by_service.insert(key.clone(), ids);
                    self.remove_service(&spec.namespace, &spec.name);
                    return Err(Full);
                }
            }
        }
        if !ids.is_empty() {
            self.by_service.insert(key, ids);
        }
        Ok(problems)
    }

    /// Removes Service `namespace/name`'s ports; nothing if it has none.
    pub fn remove_service(&mut self, namespace: &str, name: &str) {
        let Some(ids) = self
            .by_service
            .remove(&(namespace.to_string(), name.to_string()))
        else {
            return;
        };
        for id in ids {
            self.remove_port(id);
        }
    }

    fn alloc_maglev(&mut self, len: usize) -> Option<usize> {
        if len == 0 {
            return Some(0);
        }
        if let Some(off) = self.maglev_free.get_mut(&(len as u32)).and_then(Vec::pop) {
            return Some(off as usize);
        }
        let off = self.maglev_top;
        (off + len <= self.maglev.len()).then(|| {
            self.maglev_top += len;
            off
        })
    }

    fn alloc_backends(&mut self, n: usize) -> Option<usize> {
        let class = backend_class(n);
        if let Some(off) = self
            .backends_free
            .get_mut(&(class as u32))
            .and_then(Vec::pop)
        {
            return Some(off as usize);
        }
        let off = self.backends_top;
        (off + class <= self.backends.len()).then(|| {
            self.backends_top += class;
            off
        })
    }

    fn add_port(&mut self, d: Draft) -> Result<u32, Full> {
        // Room in the slots first: at most half full, as `build` leaves it.
        if (self.len() + 1) * 2 > self.slots.len() {
            return Err(Full);
        }
        let moff = self.alloc_maglev(d.maglev.len()).ok_or(Full)?;
        let Some(boff) = self.alloc_backends(d.eligible.len()) else {
            if !d.maglev.is_empty() {
                self.maglev_free
                    .entry(d.maglev.len() as u32)
                    .or_default()
                    .push(moff as u32);
            }
            return Err(Full);
        };
        self.maglev[moff..moff + d.maglev.len()].copy_from_slice(&d.maglev);
        self.backends[boff..boff + d.eligible.len()].copy_from_slice(&d.eligible);
        let epoch = super::epoch_of(&d.frontend, &d.endpoints);
        let p = ServicePort {
            name: d.name,
            frontend: d.frontend,
            endpoints: d.endpoints,
            eligible: d.eligible,
            maglev_off: moff as u32,
            maglev_len: d.maglev.len() as u32,
            backends_off: boff as u32,
            epoch,
            affinity_s: d.affinity_s,
            local_only: d.local_only,
        };
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.ports[id as usize] = p;
                id
            }
            None => {
                self.ports.push(p);
                (self.ports.len() - 1) as u32
            }
        };
        if self.epochs.len() <= id as usize {
            self.epochs.resize(id as usize + 1, super::NO_EPOCH);
        }
        self.epochs[id as usize] = epoch;
        let fe = self.ports[id as usize].frontend;
        place(&mut self.slots, self.mask, &self.ports[id as usize], id);
        self.owners.insert(fe, id);
        *self.vips.entry(fe.addr).or_default() += 1;
        Ok(id)
    }

    fn remove_port(&mut self, id: u32) {
        let Some(p) = self.ports.get_mut(id as usize) else {
            return;
        };
        let fe = p.frontend;
        if self.owners.get(&fe) != Some(&id) {
            return;
        }
        self.owners.remove(&fe);
        if let Some(e) = self.epochs.get_mut(id as usize) {
            *e = super::NO_EPOCH;
        }
        if let Some(n) = self.vips.get_mut(&fe.addr) {
            *n -= 1;
            if *n == 0 {
                self.vips.remove(&fe.addr);
            }
        }
        if p.maglev_len > 0 {
            self.maglev_free
                .entry(p.maglev_len)
                .or_default()
                .push(p.maglev_off);
        }
        self.backends_free
            .entry(backend_class(p.eligible.len()) as u32)
            .or_default()
            .push(p.backends_off);
        p.name.clear();
        p.endpoints = Vec::new();
        p.eligible = Vec::new();
        p.maglev_len = 0;
        self.free_ids.push(id);
        // The slot, then the ones after it shifted back into the gap
        // wherever their home position allows (linear-probing deletion).
        let mask = self.mask;
        let mut i = front_hash(fe.addr, fe.port, fe.proto) as usize & mask;
        loop {
            let s = &self.slots[i];
            if s.used == 0 {
                return; // not found: nothing to remove
            }
            if s.id == id && s.addr == fe.addr.0 && s.port == fe.port {
                break;
            }
            i = (i + 1) & mask;
        }
        self.slots[i] = FrontSlot::EMPTY;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s.used == 0 {
                return;
            }
            let proto = Proto::from_number(s.proto).unwrap_or(Proto::Tcp);
            let home = front_hash(Addr(s.addr), s.port, proto) as usize & mask;
            // Stays if its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.slots[i] = s;
                self.slots[j] = FrontSlot::EMPTY;
                i = j;
            }
        }
    }
}

impl FrontSlot {
    const EMPTY: FrontSlot = FrontSlot {
        addr: 0,
        port: 0,
        proto: 0,
        used: 0,
        id: 0,
        epoch: 0,
        affinity_s: 0,
        local_only: false,
        maglev_off: 0,
        maglev_len: 0,
        backends_off: 0,
    };
}
