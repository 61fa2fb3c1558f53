//! How fast one worker answers packets for a Service without endpoints:
//! TCP SYNs from 1,024 client addresses to a ClusterIP whose Service has
//! none, through the burst function, each answered with ICMP
//! port-unreachable (the clock advanced a millisecond a burst, so that no
//! answer is rate-limited). Usage: reject_probe [ROUNDS]
use std::time::Instant;

use sluice_dataplane::conntrack::{Conntrack, Timeouts};
use sluice_dataplane::pipeline::{decide, Action, Answer, Core, Ingress, Tables, BURST};
use sluice_dataplane::route::Routes;
use sluice_dataplane::service::{PortSpec, ServiceSpec, ServiceTable, TargetPort};
use sluice_dataplane::{Addr, Proto};
use sluice_fixtures::frames::{self, Ip, SYN};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(100_000, |s| s.parse().unwrap());
    let empty = ServiceSpec {
        namespace: "bench".into(),
        name: "empty".into(),
        cluster_ips: vec![Addr::from_v4([198, 19, 0, 11])],
        ports: vec![PortSpec {
            name: String::new(),
            port: 80,
            proto: Proto::Tcp,
            target: TargetPort::Number(8080),
        }],
        endpoints: vec![],
        affinity: Default::default(),
        internal_local: false,
    };
    let (services, _) = ServiceTable::build(&[empty]);
    let conntrack = Conntrack::new(1024, Timeouts::default());
    let routes = Routes::default();
    let t = Tables::new(&services, &conntrack, &routes);
    let templates: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| {
            let src = [198, 18, 4 + (i >> 8) as u8, i as u8];
            frames::tcp(Ip::V4(src), 40000, Ip::V4([198, 19, 0, 11]), 80, SYN, b"")
        })
        .collect();
    let mut core = Core::default();
    let mut actions = [Action::ToHost; BURST];
    let mut burst: Vec<Vec<u8>> = templates[..BURST].to_vec();
    let mut answered = 0usize;
    let start = Instant::now();
    for r in 0..rounds {
        core.now_ms = 1_000 + r as u64;
        let base = (r * BURST) % templates.len();
        for (f, tpl) in burst.iter_mut().zip(&templates[base..base + BURST]) {
            f.copy_from_slice(tpl);
        }
        let mut refs: Vec<&mut [u8]> = burst.iter_mut().map(|f| f.as_mut_slice()).collect();
        decide(&mut refs, Ingress::Uplink, &t, &mut core, &mut actions);
        answered += actions
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Reply {
                        answer: Answer::Reject,
                        ..
                    }
                )
            })
            .count();
    }
    let ns = start.elapsed().as_nanos() as f64 / (rounds * BURST) as f64;
    println!(
        "{answered} of {} answered; {ns:.0} ns a reject: {:.2} M rejects/s from one worker",
        rounds * BURST,
        1e3 / ns
    );
    assert_eq!(
        answered,
        rounds * BURST,
        "a reject was rate-limited or dropped"
    );
}
