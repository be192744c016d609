//! Parsing `/proc/net/{tcp,tcp6,udp,udp6}` on the host.
//!
//! Each data line looks like
//! `   0: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1234 …`:
//! local address, remote address, state. Addresses are printed by the kernel
//! as native-endian 32-bit words; they are decoded here as little-endian
//! (x86, arm64, riscv guests). Ports are always big-endian hex.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TCP_LISTEN.
const TCP_LISTEN: &str = "0A";
/// TCP_CLOSE: what an unconnected (bound) UDP socket shows.
const UDP_UNCONNECTED: &str = "07";

/// One socket from a `/proc/net` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Socket {
    pub local: Option<IpAddr>,
    pub local_port: u16,
    pub remote_port: u16,
    pub state: String,
}

impl Socket {
    /// A listening TCP socket, or a UDP socket that receives from anyone.
    pub fn is_listening(&self, udp: bool) -> bool {
        if udp { self.state == UDP_UNCONNECTED && self.remote_port == 0 } else { self.state == TCP_LISTEN }
    }

    /// `0.0.0.0:22`, `[::]:22`, or `?:22` when the address did not parse.
    pub fn local_display(&self) -> String {
        match self.local {
            Some(IpAddr::V4(a)) => format!("{a}:{}", self.local_port),
            Some(IpAddr::V6(a)) => format!("[{a}]:{}", self.local_port),
            None => format!("?:{}", self.local_port),
        }
    }
}

/// Parses the data lines of one or more concatenated tables; header lines
/// (`sl local_address …`) and anything unparsable are skipped.
pub(crate) fn parse_table(text: &str) -> Vec<Socket> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Socket> {
    let mut fields = line.split_whitespace();
    let slot = fields.next()?;
    if !slot.ends_with(':') {
        return None;
    }
    let (local, local_port) = parse_endpoint(fields.next()?)?;
    let (_, remote_port) = parse_endpoint(fields.next()?)?;
    let state = fields.next()?;
    if state.len() != 2 || !state.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(Socket { local, local_port, remote_port, state: state.to_ascii_uppercase() })
}

fn parse_endpoint(field: &str) -> Option<(Option<IpAddr>, u16)> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some((parse_addr(addr), port))
}

fn parse_addr(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<[u8; 4]>> = hex
        .as_bytes()
        .chunks(8)
        .map(|chunk| {
            let text = std::str::from_utf8(chunk).ok()?;
            if text.len() != 8 {
                return None;
            }
            u32::from_str_radix(text, 16).ok().map(u32::to_le_bytes)
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&bytes);
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12346 1 0000000000000000 100 0 0 10 0
   2: 0F02000A:0016 0202000A:C350 01 00000000:00000000 02:000A7E2B 00000000     0        0 12347 4 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0277 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2223 1 0000000000000000 100 0 0 10 0
";
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  312: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1500 2 0000000000000000 0
  313: 0100007F:0035 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1501 2 0000000000000000 0
";

    #[test]
    fn parses_ipv4_listeners() {
        let sockets = parse_table(TCP);
        assert_eq!(sockets.len(), 3);
        assert_eq!(sockets[0].local_display(), "0.0.0.0:22");
        assert!(sockets[0].is_listening(false));
        assert_eq!(sockets[1].local_display(), "127.0.0.1:3306");
        assert_eq!(sockets[2].local_display(), "10.0.2.15:22");
        assert_eq!(sockets[2].remote_port, 50000);
        assert!(!sockets[2].is_listening(false), "ESTABLISHED is not LISTEN");
    }

    #[test]
    fn parses_ipv6_listeners() {
        let sockets = parse_table(TCP6);
        assert_eq!(sockets.len(), 2);
        assert_eq!(sockets[0].local_display(), "[::]:22");
        assert_eq!(sockets[1].local_display(), "[::1]:631");
        assert!(sockets.iter().all(|s| s.is_listening(false)));
    }

    #[test]
    fn udp_listening_means_unconnected() {
        let sockets = parse_table(UDP);
        assert_eq!(sockets.len(), 2);
        assert_eq!(sockets[0].local_port, 68);
        assert!(sockets[0].is_listening(true));
        assert!(!sockets[1].is_listening(true));
    }

    #[test]
    fn garbage_is_skipped() {
        assert!(parse_table("hello\n0: zz:zz 00:00 0A\n 1: 0100007F:GGGG 0:0 0A\n").is_empty());
        let odd = parse_table(" 0: 12345:0016 00000000:0000 0A\n");
        assert_eq!(odd.len(), 1);
        assert_eq!(odd[0].local, None);
        assert_eq!(odd[0].local_display(), "?:22");
    }
}
