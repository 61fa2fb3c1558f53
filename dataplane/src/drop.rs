//! Why a packet was dropped: the only errors on the packet path.
//!
//! Each reason is a small `Copy` value that indexes a per-worker counter, so
//! that a drop costs one increment and an operator can see every reason.

macro_rules! reasons {
    ($( $(#[$doc:meta])* $name:ident => $label:literal, )*) => {
        /// A reason to drop a packet. Every variant is counted per worker.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $( $(#[$doc])* $name, )* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// Number of distinct reasons (the counter array's length).
            pub const COUNT: usize = Self::ALL.len();

            /// The stable name used in counters, logs and `sluice inspect`.
            pub const fn label(self) -> &'static str {
                match self { $(DropReason::$name => $label,)* }
            }
        }
    };
}

reasons! {
    /// Shorter than an Ethernet header.
    EthTruncated => "eth_truncated",
    /// An 802.1Q tag was announced but cut short.
    VlanTruncated => "vlan_truncated",
    /// More than two stacked VLAN tags (QinQ is the most we accept).
    VlanTooDeep => "vlan_too_deep",
    /// An EtherType the dataplane does not handle.
    EthertypeUnsupported => "ethertype_unsupported",
    /// ARP shorter than its header says, or not Ethernet/IPv4.
    ArpMalformed => "arp_malformed",
    /// Shorter than a minimal IPv4 header.
    Ipv4Truncated => "ipv4_truncated",
    /// Version nibble is not 4 on an IPv4 EtherType.
    Ipv4BadVersion => "ipv4_bad_version",
    /// IHL below 5 or beyond the frame.
    Ipv4BadHeaderLen => "ipv4_bad_header_len",
    /// Total length smaller than the header or larger than the frame.
    Ipv4BadTotalLen => "ipv4_bad_total_len",
    /// IPv4 header checksum does not verify.
    Ipv4BadChecksum => "ipv4_bad_checksum",
    /// A non-first fragment whose first fragment was not seen.
    FragmentUnknown => "fragment_unknown",
    /// A later fragment that came before its first with no room to hold
    /// it (the worker's slots in use, or bigger than a slot), or that
    /// waited too long.
    FragmentHoldFull => "fragment_hold_full",
    /// A first fragment too short to carry the transport ports.
    FragmentTooShort => "fragment_too_short",
    /// Shorter than the fixed IPv6 header.
    Ipv6Truncated => "ipv6_truncated",
    /// Version nibble is not 6 on an IPv6 EtherType.
    Ipv6BadVersion => "ipv6_bad_version",
    /// Payload length runs past the end of the frame.
    Ipv6BadPayloadLen => "ipv6_bad_payload_len",
    /// An extension header runs past the payload.
    Ipv6ExtTruncated => "ipv6_ext_truncated",
    /// More extension headers than the walk allows (a cost guard).
    Ipv6ExtTooMany => "ipv6_ext_too_many",
    /// TCP header cut short or data offset out of range.
    TcpMalformed => "tcp_malformed",
    /// UDP header cut short or its length field inconsistent.
    UdpMalformed => "udp_malformed",
    /// SCTP common header cut short.
    SctpMalformed => "sctp_malformed",
    /// A fragmented SCTP packet whose ports NAT must change: SCTP's CRC32c
    /// covers the whole datagram, which no single fragment holds.
    SctpFragmentNat => "sctp_fragment_nat",
    /// ICMP or ICMPv6 header cut short.
    IcmpMalformed => "icmp_malformed",
    /// A transport the Service path cannot translate (ESP, GRE, ...)
    /// aimed at a Service frontend.
    ServiceProtoUnsupported => "service_proto_unsupported",
    /// A new flow to a Service frontend whose Service has no usable backend
    /// (kube-proxy rejects these too).
    ServiceNoBackends => "service_no_backends",
    /// A packet that would have been rejected (no endpoints), over its
    /// source's or the worker's rate of answers (`reject`).
    RejectRateLimited => "reject_rate_limited",
    /// A frame longer than its egress port's MTU: not sent (answered with
    /// fragmentation-needed / packet-too-big when it may not be
    /// fragmented; never fragmented here).
    MtuExceeded => "mtu_exceeded",
    /// A new flow to a Service port with `internalTrafficPolicy: Local`
    /// and no endpoint on this node: dropped, not refused (kube-proxy).
    ServiceNoLocalEndpoints => "service_no_local_endpoints",
    /// A packet from the backend of a flow whose backend left its Service
    /// (the flow ends with its client's next packet).
    StaleFlow => "stale_flow",
    /// A packet with no port (ICMP echo, another protocol) to a ClusterIP:
    /// no Service serves it, and no port-unreachable answers it.
    ClusterIpUnserved => "cluster_ip_unserved",
    /// The conntrack table is full; the new flow is not admitted.
    ConntrackFull => "conntrack_full",
    /// The flow's probe window (the slots its hash may use) is full while
    /// the table is not: a hash hot spot, not a full table.
    ConntrackWindowFull => "conntrack_window_full",
    /// Another worker kept changing the flow's slots while this one
    /// inserted (bounded retries, then this).
    ConntrackContended => "conntrack_contended",
    /// The flow's reply tuple is already another flow's (same client
    /// port to two Services sharing a backend); see `conntrack`.
    ConntrackReplyClash => "conntrack_reply_clash",
    /// Frame offsets did not fit the buffer at rewrite time (expected 0:
    /// decode checks them; counted rather than trusted).
    RewriteOutOfBounds => "rewrite_out_of_bounds",
    /// TTL or hop limit ran out.
    TtlExceeded => "ttl_exceeded",
    /// Link-local, multicast or broadcast: for the link, not to be routed
    /// (IPv6 neighbour and router discovery, MLD, mDNS...).
    NotRoutable => "not_routable",
    /// A pod sent from an address that is not its own (another pod's, the
    /// node's, anyone's): dropped before conntrack, so that it can neither
    /// open a flow nor have replies steered to its victim (anti-spoofing,
    /// as Calico's and Cilium's datapaths do).
    SourceSpoofed => "source_spoofed",
    /// The frame's egress has no port on this node: another node's pod
    /// before the overlay, or the uplink when none is attached.
    NoEgress => "no_egress",
    /// The egress port's TX ring was full (overload).
    TxRingFull => "tx_ring_full",
    /// No free frame in the pool for an answer (a neighbour reply, an ICMP
    /// error): the question is dropped unanswered.
    PoolEmpty => "pool_empty",
    /// For the host, on a worker without the exception path.
    NoHostPath => "no_host_path",
    /// The host's exception path refused the frame (its queue was full).
    HostRefused => "host_refused",
    /// A frame from the host that would go straight back to the host.
    HostLoop => "host_loop",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in DropReason::ALL {
            assert!(seen.insert(r.label()), "duplicate label {}", r.label());
            assert!(r
                .label()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
            assert_eq!(DropReason::ALL[*r as usize], *r);
        }
    }
}
