//! Who runs where, made explicit: worker `w` on its core (or unpinned),
//! owning queue `w` of every interface it serves, as DPDK's l3fwd keeps
//! its (port, queue, lcore) table. Checked when the daemon starts (every
//! core exists, none twice) and at every attach (the interface has a queue
//! for every worker: a worker without one would never see that pod's
//! frames).

/// One worker's place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub worker: usize,
    /// The core it is pinned to (`None`: not pinned, one worker).
    pub core: Option<usize>,
    /// The queue of every interface it owns.
    pub queue: u32,
}

/// Why a placement was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlacementError {
    NoSuchCore {
        core: usize,
        available: Vec<usize>,
    },
    /// Two workers on one core: they would take turns at its rings.
    CoreTwice {
        core: usize,
    },
    /// The interface has fewer receive queues than there are workers.
    TooFewQueues {
        ifname: String,
        queues: u32,
        workers: usize,
    },
}

impl std::fmt::Display for PlacementError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlacementError::NoSuchCore { core, available } => write!(
                f,
                "--cores: core {core} does not exist (this machine has {available:?})"
            ),
            PlacementError::CoreTwice { core } => {
                write!(f, "--cores: core {core} is given twice; a worker needs a core of its own")
            }
            PlacementError::TooFewQueues {
                ifname,
                queues,
                workers,
            } => write!(
                f,
                "interface {ifname} has {queues} receive queue(s), and the daemon's {workers} workers need one each (a veth made with numrxqueues {workers} numtxqueues {workers}, as sluice-cni makes them)"
            ),
        }
    }
}

impl std::error::Error for PlacementError {}

/// Every worker's place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    places: Vec<Place>,
}

impl Placement {
    /// A worker per core of `cores` (one unpinned worker if none), checked
    /// against the cores the machine has.
    pub fn new(cores: &[usize], available: &[usize]) -> Result<Placement, PlacementError> {
        if cores.is_empty() {
            return Ok(Placement {
                places: vec![Place {
                    worker: 0,
                    core: None,
                    queue: 0,
                }],
            });
        }
        let mut places = Vec::with_capacity(cores.len());
        for (w, &core) in cores.iter().enumerate() {
            if !available.contains(&core) {
                return Err(PlacementError::NoSuchCore {
                    core,
                    available: available.to_vec(),
                });
            }
            if cores[..w].contains(&core) {
                return Err(PlacementError::CoreTwice { core });
            }
            places.push(Place {
                worker: w,
                core: Some(core),
                queue: w as u32,
            });
        }
        Ok(Placement { places })
    }

    pub fn places(&self) -> &[Place] {
        &self.places
    }

    pub fn workers(&self) -> usize {
        self.places.len()
    }

    /// Whether `ifname`, with `queues` receive queues (`None`: its driver
    /// does not say), has a queue for every worker.
    pub fn check_queues(&self, ifname: &str, queues: Option<u32>) -> Result<(), PlacementError> {
        let needed = self.places.iter().map(|p| p.queue + 1).max().unwrap_or(1);
        match queues {
            Some(q) if q < needed => Err(PlacementError::TooFewQueues {
                ifname: ifname.to_string(),
                queues: q,
                workers: self.places.len(),
            }),
            _ => Ok(()),
        }
    }

    /// One line a worker, for the log.
    pub fn describe(&self) -> String {
        self.places
            .iter()
            .map(|p| {
                format!(
                    "worker {} on {}, queue {} of every interface",
                    p.worker,
                    p.core
                        .map(|c| format!("core {c}"))
                        .unwrap_or_else(|| "any core".into()),
                    p.queue
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_per_core_each_with_its_queue() {
        let p = Placement::new(&[1, 0], &[0, 1]).unwrap();
        assert_eq!(
            p.places(),
            &[
                Place {
                    worker: 0,
                    core: Some(1),
                    queue: 0
                },
                Place {
                    worker: 1,
                    core: Some(0),
                    queue: 1
                },
            ]
        );
        assert_eq!(Placement::new(&[], &[0]).unwrap().workers(), 1);
    }

    #[test]
    fn bad_cores_and_short_interfaces_are_refused_by_name() {
        assert_eq!(
            Placement::new(&[3], &[0, 1]),
            Err(PlacementError::NoSuchCore {
                core: 3,
                available: vec![0, 1]
            })
        );
        assert_eq!(
            Placement::new(&[1, 1], &[0, 1]),
            Err(PlacementError::CoreTwice { core: 1 })
        );
        let p = Placement::new(&[0, 1], &[0, 1]).unwrap();
        let e = p.check_queues("slc123", Some(1)).unwrap_err();
        assert!(e.to_string().contains("slc123 has 1 receive queue"), "{e}");
        assert!(p.check_queues("slc123", Some(2)).is_ok());
        assert!(p.check_queues("tap0", None).is_ok());
    }
}
