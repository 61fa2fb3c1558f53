//! The flow key: parsed once, read by every later stage.
//!
//! IPv4 and IPv6 share one key shape. An IPv4 address is held as its
//! IPv4-mapped IPv6 form (`::ffff:a.b.c.d`) and the family is a field of its
//! own, so that a mapped address seen in a real IPv6 header can never alias
//! an IPv4 flow.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 address as a 128-bit number (IPv4 mapped into ::ffff:0:0/96).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Addr(pub u128);

impl Addr {
    /// `::ffff:0:0`, the IPv4-mapped prefix, shifted down by 32 bits.
    const V4_MAPPED_HIGH: u128 = 0xffff;

    pub const fn from_v4(octets: [u8; 4]) -> Self {
        Addr((Self::V4_MAPPED_HIGH << 32) | (u32::from_be_bytes(octets) as u128))
    }
    pub const fn from_v6(octets: [u8; 16]) -> Self {
        Addr(u128::from_be_bytes(octets))
    }
    pub fn is_v4(self) -> bool {
        self.0 >> 32 == Self::V4_MAPPED_HIGH
    }
    /// The four bytes of an IPv4 address (the low 32 bits).
    pub const fn v4_octets(self) -> [u8; 4] {
        (self.0 as u32).to_be_bytes()
    }
    pub const fn v6_octets(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
    /// An address as the standard library holds it.
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Self::from_v4(a.octets()),
            IpAddr::V6(a) => Self::from_v6(a.octets()),
        }
    }
    /// The address as the standard library holds it: IPv4 when mapped.
    pub fn ip(self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::from(self.v4_octets()))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.v6_octets()))
        }
    }
    /// The address as it sits in the given family's header.
    pub fn to_ip(self, family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(self.v4_octets())),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(self.v6_octets())),
        }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Addr::from_v4(a.octets()),
            IpAddr::V6(a) => Addr::from_v6(a.octets()),
        }
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_v4() {
            write!(f, "{}", Ipv4Addr::from(self.v4_octets()))
        } else {
            write!(f, "{}", Ipv6Addr::from(self.v6_octets()))
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Address family of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Family {
    V4 = 4,
    V6 = 6,
}

/// Transport protocols the dataplane tracks. Others are forwarded as
/// plain IP without a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Proto {
    Tcp = 6,
    Udp = 17,
    Sctp = 132,
    /// ICMP echo for IPv4; the identifier stands in for both ports.
    Icmp = 1,
    /// ICMPv6 echo; the identifier stands in for both ports.
    Icmp6 = 58,
}

impl Proto {
    pub const fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            132 => Some(Proto::Sctp),
            1 => Some(Proto::Icmp),
            58 => Some(Proto::Icmp6),
            _ => None,
        }
    }
    pub const fn number(self) -> u8 {
        self as u8
    }
    /// The name Kubernetes uses in `Service.spec.ports[].protocol`.
    pub const fn k8s_name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
            Proto::Icmp => "ICMP",
            Proto::Icmp6 => "ICMPv6",
        }
    }
}

/// The 5-tuple of a packet, in the direction it travels.
///
/// For ICMP echo the identifier is the source "port" of a request and the
/// destination "port" of a reply, so that a reply's key is exactly the
/// reverse of its request's.
#[derive(Clone, Copy, Eq, Debug)]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: Proto,
    pub family: Family,
}

/// Compared as three words without branches: the derived comparison,
/// field by field with early exits, was a measurable share of an insert.
impl PartialEq for FlowKey {
    #[inline]
    fn eq(&self, o: &FlowKey) -> bool {
        ((self.src.0 ^ o.src.0) | (self.dst.0 ^ o.dst.0)) == 0 && self.tail() == o.tail()
    }
}

/// Hashes the same three words that equality compares.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u128(self.src.0);
        h.write_u128(self.dst.0);
        h.write_u64(self.tail());
    }
}

impl FlowKey {
    /// Ports, protocol and family in one word.
    #[inline]
    fn tail(&self) -> u64 {
        u64::from(self.sport)
            | u64::from(self.dport) << 16
            | u64::from(self.proto as u8) << 32
            | (self.family as u64) << 40
    }

    /// A placeholder for scratch arrays.
    pub const EMPTY: FlowKey = FlowKey {
        src: Addr(0),
        dst: Addr(0),
        sport: 0,
        dport: 0,
        proto: Proto::Tcp,
        family: Family::V4,
    };

    /// The key of a packet travelling the other way.
    #[inline]
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            family: self.family,
        }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (l, r) = match self.family {
            Family::V4 => ("", ""),
            Family::V6 => ("[", "]"),
        };
        write!(
            f,
            "{} {l}{}{r}:{} -> {l}{}{r}:{}",
            self.proto.k8s_name(),
            self.src,
            self.sport,
            self.dst,
            self.dport
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_round_trip_and_display() {
        let a = Addr::from_v4([198, 19, 0, 10]);
        assert!(a.is_v4());
        assert_eq!(a.v4_octets(), [198, 19, 0, 10]);
        assert_eq!(a.to_string(), "198.19.0.10");
        let b = Addr::from_v6("2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        assert!(!b.is_v4());
        assert_eq!(b.to_string(), "2001:db8::1");
    }

    #[test]
    fn reversed_twice_is_identity() {
        let k = FlowKey {
            src: Addr::from_v4([198, 18, 1, 2]),
            dst: Addr::from_v4([198, 19, 0, 1]),
            sport: 40000,
            dport: 80,
            proto: Proto::Tcp,
            family: Family::V4,
        };
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(k.to_string(), "TCP 198.18.1.2:40000 -> 198.19.0.1:80");
    }
}
