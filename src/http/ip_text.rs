//! A request's IP address as text, written into a stack buffer: formatted once per request and
//! shared by identity (`ip` source), `X-Forwarded-For` and the access log.

use std::fmt::Write as _;
use std::net::IpAddr;

/// An IP address written as text without allocating (the longest IPv6 text is 45 bytes).
#[derive(Clone, Copy)]
pub struct IpText {
    buf: [u8; 46],
    len: usize,
}

impl IpText {
    pub fn new(ip: IpAddr) -> Self {
        let mut t = IpText {
            buf: [0; 46],
            len: 0,
        };
        match ip {
            // Every request formats its peer: IPv4 by hand, a quarter of `Display`'s cost.
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b'.');
                    }
                    if octet >= 100 {
                        t.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        t.push(b'0' + octet / 10 % 10);
                    }
                    t.push(b'0' + octet % 10);
                }
            }
            // Cannot fail: the buffer holds the longest address.
            IpAddr::V6(_) => {
                let _ = write!(t, "{ip}");
            }
        }
        t
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII from `IpAddr`'s Display is ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_holds_the_longest_address() {
        let ip: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(IpText::new(ip).as_str(), "203.0.113.7");
        // IPv4 is formatted by hand: every octet value in every place, as `Display` has it.
        for o in 0..=255u8 {
            for place in 0..4 {
                let mut octets = [10, 0, 200, 99];
                octets[place] = o;
                let ip = IpAddr::from(octets);
                assert_eq!(IpText::new(ip).as_str(), ip.to_string());
            }
        }
    }
}
