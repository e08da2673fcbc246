//! Scrape-time socket and TCP metrics, read from the kernel's counters (`SOCKET_BYTES`,
//! `TCP_COUNTS`; see `collector-ebpf/src/sockets.rs`). They are counters in the kernel, not
//! event-defined metrics: bytes move far too often for one event each, and the open
//! connections gauge must not drift when events are dropped.
use std::sync::{Arc, atomic::Ordering};

use collector_common::sockets::{Family, Protocol, SocketBytes, TcpCounts};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{MetricType, gauge::ConstGauge},
};

use crate::{metrics::counter, state::AgentState};

#[derive(Debug)]
pub struct SocketCollector {
    pub state: Arc<AgentState>,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    target: String,
    family: &'static str,
    protocol: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    target: String,
    direction: &'static str,
}

impl Collector for SocketCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = &self.state;
        // Targets, then maps (the lock order everywhere), both held while keys are named.
        let targets = state.targets();
        let maps = state.maps();
        let (bytes, mut read_failed) = maps.socket_bytes();
        let mut tcp: Vec<(String, TcpCounts)> = Vec::new();
        for (id, name) in targets.ids() {
            match maps.tcp_counts(id) {
                Ok(c) => tcp.push((name.to_owned(), c)),
                Err(_) => read_failed += 1,
            }
        }
        drop(maps);
        state.map_read_errors.fetch_add(read_failed, Ordering::Relaxed);
        let bytes: Vec<_> = bytes
            .into_iter()
            .map(|(k, v)| {
                let labels = BytesLabels {
                    target: AgentState::target_label(&targets, k.target),
                    family: Family::from_u16(k.family).label(),
                    protocol: Protocol::from_u16(k.protocol).label(),
                };
                (labels, v)
            })
            .collect();
        for (name, help, pick) in [
            (
                "collector_socket_sent_bytes",
                "Bytes target processes sent on sockets, by address family and protocol.",
                (|b| b.sent) as fn(&SocketBytes) -> u64,
            ),
            (
                "collector_socket_received_bytes",
                "Bytes target processes received from sockets, by address family and protocol.",
                |b| b.received,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, b) in &bytes {
                counter(family.encode_family(labels)?, pick(b))?;
            }
        }

        drop(targets);

        let mut family = encoder.encode_descriptor(
            "collector_tcp_connections",
            "TCP connections of targets open now: outbound (connect) or inbound (accept), since the agent started.",
            None,
            MetricType::Gauge,
        )?;
        for (target, c) in &tcp {
            for (direction, open) in [("outbound", c.open_outbound), ("inbound", c.open_inbound)] {
                let labels = DirectionLabels {
                    target: target.clone(),
                    direction,
                };
                ConstGauge::new(open).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "collector_tcp_retransmits",
            "TCP segments retransmitted on connections of targets.",
            None,
            MetricType::Counter,
        )?;
        for (target, c) in &tcp {
            let labels = TargetLabels { target: target.clone() };
            counter(family.encode_family(&labels)?, c.retransmits)?;
        }

        let mut family = encoder.encode_descriptor(
            "collector_tcp_resets",
            "TCP resets on connections of targets: sent by this host, or received from the peer.",
            None,
            MetricType::Counter,
        )?;
        for (target, c) in &tcp {
            for (direction, n) in [("sent", c.resets_sent), ("received", c.resets_received)] {
                let labels = DirectionLabels {
                    target: target.clone(),
                    direction,
                };
                counter(family.encode_family(&labels)?, n)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use collector_common::sockets::{AF_INET, AF_INET6, AF_UNIX, IPPROTO_TCP, IPPROTO_UDP};

    use super::*;

    #[test]
    fn families_and_protocols_have_the_documented_labels() {
        let label = |af, proto| {
            let f = Family::from_af(af);
            (f.label(), Protocol::of(f, proto).label())
        };
        assert_eq!(label(AF_INET, IPPROTO_TCP), ("inet", "tcp"));
        assert_eq!(label(AF_INET6, IPPROTO_UDP), ("inet6", "udp"));
        assert_eq!(label(AF_INET, 1), ("inet", "other")); // ICMP
        assert_eq!(label(AF_UNIX, 0), ("unix", "other"));
        assert_eq!(label(16, 0), ("other", "other")); // netlink
        for f in [Family::Inet, Family::Inet6, Family::Unix, Family::Other] {
            assert_eq!(Family::from_u16(f as u16), f);
        }
        for p in [Protocol::Tcp, Protocol::Udp, Protocol::Other] {
            assert_eq!(Protocol::from_u16(p as u16), p);
        }
    }
}
