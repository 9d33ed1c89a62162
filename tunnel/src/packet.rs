//! Just enough of IPv4, TCP and UDP to classify and police the packets inside the tunnel: who
//! sent a packet, where it goes, and which flow it belongs to. Nothing here reads a payload: the
//! appliance never inspects patient data.

use std::net::Ipv4Addr;

/// IP protocol numbers the tunnel cares about.
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

/// The header fields of one inner IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerPacket {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Source and destination port of a TCP or UDP packet that is not a later fragment.
    pub ports: Option<(u16, u16)>,
}

/// One direction of a conversation: protocol, addresses and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub src_port: u16,
    pub dst: Ipv4Addr,
    pub dst_port: u16,
}

impl Flow {
    /// The same conversation seen from the other end.
    pub fn reversed(self) -> Flow {
        Flow {
            protocol: self.protocol,
            src: self.dst,
            src_port: self.dst_port,
            dst: self.src,
            dst_port: self.src_port,
        }
    }
}

impl InnerPacket {
    /// Parses an IPv4 packet's header; `None` for anything else (IPv6, truncated, a header
    /// length that does not fit).
    pub fn parse(packet: &[u8]) -> Option<InnerPacket> {
        let first = *packet.first()?;
        if first >> 4 != 4 {
            return None;
        }
        let header_len = usize::from(first & 0x0f) * 4;
        if header_len < 20 || packet.len() < header_len {
            return None;
        }
        let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        if total_len < header_len || total_len > packet.len() {
            return None;
        }
        let fragment_offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
        let protocol = packet[9];
        let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
        let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        let ports = match protocol {
            TCP | UDP if fragment_offset == 0 && total_len >= header_len + 4 => {
                let p = &packet[header_len..];
                Some((
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                ))
            }
            _ => None,
        };
        Some(InnerPacket {
            src,
            dst,
            protocol,
            ports,
        })
    }

    /// The packet's flow (ports 0 for protocols without them, and for later fragments).
    pub fn flow(&self) -> Flow {
        let (src_port, dst_port) = self.ports.unwrap_or((0, 0));
        Flow {
            protocol: self.protocol,
            src: self.src,
            src_port,
            dst: self.dst,
            dst_port,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal IPv4 packet of `protocol` from `src:sport` to `dst:dport` with `payload` bytes.
    pub(crate) fn ipv4(
        protocol: u8,
        src: Ipv4Addr,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
        payload: usize,
    ) -> Vec<u8> {
        let l4 = if protocol == TCP { 20 } else { 8 };
        let total = 20 + l4 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = protocol;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn a_udp_packet_is_read_as_its_addresses_and_ports() {
        let bytes = ipv4(
            UDP,
            Ipv4Addr::new(100, 96, 0, 2),
            40000,
            Ipv4Addr::new(203, 0, 113, 60),
            5004,
            160,
        );
        let packet = InnerPacket::parse(&bytes).expect("parses");
        assert_eq!(packet.ports, Some((40000, 5004)));
        let flow = packet.flow();
        assert_eq!(flow.reversed().src, Ipv4Addr::new(203, 0, 113, 60));
        assert_eq!(flow.reversed().reversed(), flow);
    }

    #[test]
    fn truncated_non_ipv4_and_lying_headers_are_not_parsed() {
        let good = ipv4(
            TCP,
            Ipv4Addr::new(100, 96, 0, 2),
            1,
            Ipv4Addr::new(203, 0, 113, 60),
            2,
            0,
        );
        assert!(InnerPacket::parse(&good[..19]).is_none());
        let mut v6 = good.clone();
        v6[0] = 0x60;
        assert!(InnerPacket::parse(&v6).is_none());
        let mut long = good.clone();
        long[2..4].copy_from_slice(&1000u16.to_be_bytes());
        assert!(InnerPacket::parse(&long).is_none());
        let mut short_header = good;
        short_header[0] = 0x44;
        assert!(InnerPacket::parse(&short_header).is_none());
        assert!(InnerPacket::parse(&[]).is_none());
    }

    #[test]
    fn a_later_fragment_has_no_ports() {
        let mut bytes = ipv4(
            UDP,
            Ipv4Addr::new(100, 96, 0, 2),
            1,
            Ipv4Addr::new(203, 0, 113, 60),
            2,
            8,
        );
        bytes[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
        assert_eq!(InnerPacket::parse(&bytes).expect("parses").ports, None);
    }
}
