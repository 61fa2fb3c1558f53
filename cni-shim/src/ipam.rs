//! Host-local-style address management: a directory per network with a
//! file per allocated address (named by the address, holding the
//! container id and interface), the last address handed out per range
//! set, and a lock file that every ADD, DEL and GC holds with flock(2)
//! while it reads and writes the directory. The allocation is on disk
//! before the interface exists, so a plugin killed between the two leaks
//! nothing: DEL (same container and interface) or GC frees the address.

use std::fs::{self, File, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::conf::Range;
use crate::error::{code, CniError};

/// One range's addresses, as numbers (IPv4 in the low 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub v6: bool,
    pub first: u128,
    pub last: u128,
    /// The subnet's prefix length, for the result.
    pub prefix: u8,
}

fn to_ip(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

fn to_num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Pool {
    /// The range's usable addresses: by default the subnet without its
    /// network address, its first host (the node's, by convention) and
    /// (IPv4) its broadcast address.
    pub fn from_range(r: &Range) -> Result<Pool, String> {
        let (addr, len) = r
            .subnet
            .split_once('/')
            .ok_or_else(|| format!("subnet {:?} is not a CIDR", r.subnet))?;
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("subnet {:?}: {addr:?} is not an address", r.subnet))?;
        let prefix: u8 = len
            .parse()
            .map_err(|_| format!("subnet {:?}: bad prefix length", r.subnet))?;
        let (v6, bits) = match ip {
            IpAddr::V4(_) => (false, 32u32),
            IpAddr::V6(_) => (true, 128u32),
        };
        if u32::from(prefix) > bits - 2 {
            return Err(format!("subnet {:?} holds no pod address", r.subnet));
        }
        let host_bits = bits - u32::from(prefix);
        let mask: u128 = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let net = to_num(ip) & !mask;
        if net != to_num(ip) {
            return Err(format!("subnet {:?} has host bits set", r.subnet));
        }
        let top = net | mask;
        let mut first = net + 2;
        let mut last = if v6 { top } else { top - 1 };
        for (bound, name, slot) in [
            (r.range_start, "rangeStart", &mut first),
            (r.range_end, "rangeEnd", &mut last),
        ] {
            if let Some(b) = bound {
                let n = to_num(b);
                if matches!(b, IpAddr::V6(_)) != v6 || n <= net || n > top {
                    return Err(format!("{name} {b} is not inside {}", r.subnet));
                }
                *slot = n;
            }
        }
        if first > last {
            return Err(format!("rangeStart is after rangeEnd in {}", r.subnet));
        }
        Ok(Pool {
            v6,
            first,
            last,
            prefix,
        })
    }

    fn contains(&self, n: u128) -> bool {
        (self.first..=self.last).contains(&n)
    }

    /// Whether `ip` is one of the range's addresses.
    pub fn holds(&self, ip: IpAddr) -> bool {
        self.v6 == ip.is_ipv6() && self.contains(to_num(ip))
    }

    /// Addresses in the range (saturated: an IPv6 /64 is "many").
    pub fn size(&self) -> u128 {
        self.last - self.first + 1
    }
}

/// Who holds an address: a container's interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    fn record(&self) -> String {
        // host-local's layout: the id, a line break, the interface.
        format!("{}\n{}", self.container_id, self.ifname)
    }
    fn parse(s: &str) -> Option<Owner> {
        let mut l = s.lines();
        let container_id = l.next()?.trim().to_string();
        let ifname = l.next().unwrap_or("").trim().to_string();
        Some(Owner {
            container_id,
            ifname,
        })
    }
}

/// A network's store, locked while this value lives.
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> CniError {
    CniError::new(
        code::IO_FAILURE,
        format!("IPAM store: {what}"),
        format!("{}: {e}", path.display()),
    )
}

impl Store {
    /// Opens (creating it) the store of `network` under `data_dir` and
    /// takes its lock, waiting for any other plugin holding it.
    pub fn lock(data_dir: &Path, network: &str) -> Result<Store, CniError> {
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir).map_err(|e| io_error("cannot create", &dir, e))?;
        let path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_error("cannot open the lock", &path, e))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_error(
                "cannot lock",
                &path,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Store { dir, _lock: lock })
    }

    /// Every allocation: address and owner.
    pub fn allocations(&self) -> Vec<(IpAddr, Owner)> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<(IpAddr, Owner)> = rd
            .flatten()
            .filter_map(|e| {
                let ip: IpAddr = e.file_name().to_str()?.parse().ok()?;
                let owner = Owner::parse(&fs::read_to_string(e.path()).ok()?)?;
                Some((ip, owner))
            })
            .collect();
        out.sort_by_key(|(ip, _)| (matches!(ip, IpAddr::V6(_)), to_num(*ip)));
        out
    }

    /// The addresses `owner` holds.
    pub fn of(&self, owner: &Owner) -> Vec<IpAddr> {
        self.allocations()
            .into_iter()
            .filter(|(_, o)| o == owner)
            .map(|(ip, _)| ip)
            .collect()
    }

    /// One address from each range set for `owner`: the one it holds
    /// there already (a repeated ADD), or the next free one after the
    /// last handed out, so that a freed address is not reused at once.
    pub fn allocate(
        &self,
        sets: &[Vec<Pool>],
        owner: &Owner,
    ) -> Result<Vec<(IpAddr, Pool)>, CniError> {
        self.allocate_with(sets, owner, &[])
    }

    /// As `allocate`, but a range set that holds an address of `requested`
    /// (host-local's CNI_ARGS `IP=`) gives that one, or an error if it is
    /// another owner's.
    pub fn allocate_with(
        &self,
        sets: &[Vec<Pool>],
        owner: &Owner,
        requested: &[IpAddr],
    ) -> Result<Vec<(IpAddr, Pool)>, CniError> {
        let taken: Vec<(IpAddr, Owner)> = self.allocations();
        for r in requested {
            if !sets.iter().flatten().any(|p| p.holds(*r)) {
                return Err(CniError::new(
                    code::ADDRESS_UNAVAILABLE,
                    "the address asked for is in no range",
                    format!("IP={r}"),
                ));
            }
        }
        let mut out = Vec::new();
        for (i, set) in sets.iter().enumerate() {
            let asked = requested
                .iter()
                .find_map(|r| set.iter().find(|p| p.holds(*r)).map(|p| (*r, *p)));
            if let Some((ip, pool)) = asked {
                if let Some((_, o)) = taken.iter().find(|(t, o)| *t == ip && o != owner) {
                    return Err(CniError::new(
                        code::ADDRESS_UNAVAILABLE,
                        "the address asked for is taken",
                        format!("{ip} is {}'s ({})", o.container_id, o.ifname),
                    ));
                }
                let path = self.dir.join(ip.to_string());
                fs::write(&path, owner.record())
                    .map_err(|e| io_error("cannot record", &path, e))?;
                out.push((ip, pool));
                continue;
            }
            // A repeated ADD: the address it has.
            if let Some((ip, pool)) = taken
                .iter()
                .filter(|(_, o)| o == owner)
                .find_map(|(ip, _)| set.iter().find(|p| p.holds(*ip)).map(|p| (*ip, *p)))
            {
                out.push((ip, pool));
                continue;
            }
            let last_path = self.dir.join(format!("last_reserved_ip.{i}"));
            let last: Option<u128> = fs::read_to_string(&last_path)
                .ok()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
                .map(to_num);
            let used: std::collections::BTreeSet<u128> =
                taken.iter().map(|(ip, _)| to_num(*ip)).collect();
            let found = pick(set, last, &used).ok_or_else(|| {
                CniError::new(
                    code::POOL_EXHAUSTED,
                    "no free address",
                    format!(
                        "every address of range set {i} ({} addresses) is allocated",
                        set.iter().map(|p| p.size()).sum::<u128>()
                    ),
                )
            })?;
            let (n, pool) = found;
            let ip = to_ip(pool.v6, n);
            let path = self.dir.join(ip.to_string());
            fs::write(&path, owner.record()).map_err(|e| io_error("cannot record", &path, e))?;
            fs::write(&last_path, ip.to_string())
                .map_err(|e| io_error("cannot record", &last_path, e))?;
            out.push((ip, pool));
        }
        Ok(out)
    }

    /// Frees every address `owner` holds; returns them.
    pub fn release(&self, owner: &Owner) -> Vec<IpAddr> {
        let mine = self.of(owner);
        for ip in &mine {
            let _ = fs::remove_file(self.dir.join(ip.to_string()));
        }
        mine
    }
}

/// The first free address after `last` in a range set, wrapping round.
fn pick(
    set: &[Pool],
    last: Option<u128>,
    used: &std::collections::BTreeSet<u128>,
) -> Option<(u128, Pool)> {
    // Allocated addresses are few next to a range: walking past them
    // takes at most as many steps as there are.
    let free_in = |p: &Pool, from: u128, to: u128| {
        let mut n = from;
        loop {
            if n > to {
                return None;
            }
            if !used.contains(&n) {
                return Some((n, *p));
            }
            n = n.checked_add(1)?;
        }
    };
    let whole = |p: &Pool| free_in(p, p.first, p.last);
    match last.and_then(|l| set.iter().position(|p| p.contains(l)).map(|i| (i, l))) {
        None => set.iter().find_map(whole),
        Some((i, l)) => {
            let p = &set[i];
            l.checked_add(1)
                .and_then(|next| free_in(p, next, p.last))
                .or_else(|| set[i + 1..].iter().chain(&set[..i]).find_map(whole))
                .or_else(|| free_in(p, p.first, l))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> Range {
        Range {
            subnet: s.into(),
            range_start: None,
            range_end: None,
        }
    }

    fn owner(i: usize) -> Owner {
        Owner {
            container_id: format!("c{i}"),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn a_v4_subnet_skips_network_first_host_and_broadcast() {
        let p = Pool::from_range(&range("198.18.1.0/24")).unwrap();
        assert_eq!(
            to_ip(false, p.first),
            "198.18.1.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            to_ip(false, p.last),
            "198.18.1.254".parse::<IpAddr>().unwrap()
        );
        assert!(Pool::from_range(&range("198.18.1.1/24")).is_err());
        assert!(Pool::from_range(&range("198.18.1.0/31")).is_err());
        assert!(Pool::from_range(&range("nonsense")).is_err());
    }

    #[test]
    fn addresses_are_distinct_wrap_round_and_run_out() {
        let dir = std::env::temp_dir().join(format!("sluice-ipam-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let sets = vec![vec![Pool::from_range(&Range {
            subnet: "198.18.1.0/29".into(),
            range_start: None,
            range_end: None,
        })
        .unwrap()]];
        let s = Store::lock(&dir, "net").unwrap();
        // .2 to .6: five addresses.
        let got: Vec<IpAddr> = (0..5)
            .map(|i| s.allocate(&sets, &owner(i)).unwrap()[0].0)
            .collect();
        let distinct: std::collections::BTreeSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), 5);
        assert_eq!(
            s.allocate(&sets, &owner(9)).unwrap_err().code,
            code::POOL_EXHAUSTED
        );
        // A repeated ADD gets the address it has.
        assert_eq!(s.allocate(&sets, &owner(2)).unwrap()[0].0, got[2]);
        assert_eq!(s.release(&owner(2)), vec![got[2]]);
        assert_eq!(s.release(&owner(2)), Vec::<IpAddr>::new());
        // The freed address is the only one left, found by wrapping round.
        assert_eq!(s.allocate(&sets, &owner(7)).unwrap()[0].0, got[2]);
        drop(s);
        let _ = fs::remove_dir_all(&dir);
    }
}
