//! Which addresses a metadata fetch may connect to, and the DNS resolver that enforces it.
//!
//! The resolver is the enforcement point: reqwest connects only to the addresses it returns, so
//! the addresses that were checked are the ones connected to and a DNS answer that changes
//! between a check and the connect (rebinding) cannot slip through. Hosts that are IP literals
//! never reach a resolver; `fetch` checks those itself before sending.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use crate::config::AllowHost;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why the resolver refused a name; found again in reqwest's error chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AddressError {
    #[error("resolved to an address that is not public")]
    Forbidden,
    #[error("resolved to no address")]
    Resolve,
}

/// What a resolver lets through.
#[derive(Debug, Clone)]
enum Rule {
    /// Only names whose every address is public.
    PublicOnly,
    /// Only these operator-listed names, whatever they resolve to.
    Listed(Arc<[String]>),
}

/// A `reqwest` resolver that resolves with the system resolver and applies a [`Rule`].
#[derive(Debug, Clone)]
pub(crate) struct CheckedResolver {
    rule: Rule,
}

// === impl CheckedResolver ===

impl CheckedResolver {
    /// Refuses every name that resolves to any address that is not public.
    pub(crate) fn public_only() -> CheckedResolver {
        CheckedResolver {
            rule: Rule::PublicOnly,
        }
    }

    /// Resolves the domains among `allowed` without the public-address rule, and nothing else.
    pub(crate) fn listed(allowed: &[AllowHost]) -> CheckedResolver {
        let names: Vec<String> = allowed
            .iter()
            .filter_map(AllowHost::domain)
            .map(str::to_string)
            .collect();
        CheckedResolver {
            rule: Rule::Listed(names.into()),
        }
    }
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let rule = self.rule.clone();
        let name = name.as_str().to_string();
        Box::pin(async move {
            if let Rule::Listed(names) = &rule {
                // Never reached through `fetch`, which picks this resolver's client only for
                // listed hosts; refusing keeps the exemption from spreading if that changes.
                if !names
                    .iter()
                    .any(|listed| listed.eq_ignore_ascii_case(&name))
                {
                    return Err(AddressError::Forbidden.into());
                }
            }
            // Port 0: hyper puts the URL's port on each address.
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await
                .map_err(|_| AddressError::Resolve)?
                .collect();
            if addrs.is_empty() {
                return Err(AddressError::Resolve.into());
            }
            // One private address refuses the name: connecting to "the public ones only" would
            // still let a name that also points inside probe which of its addresses answer.
            if matches!(rule, Rule::PublicOnly) && !addrs.iter().all(|a| is_public(a.ip())) {
                return Err(AddressError::Forbidden.into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Whether `ip` is a public unicast address: not loopback, private, link-local (the cloud
/// metadata address 169.254.169.254 included), shared (CGNAT), unspecified, broadcast,
/// multicast, reserved, or set aside for documentation or benchmarks; for IPv6 also not
/// unique-local, and the IPv4 inside a mapped or NAT64 address must itself be public.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = a == 0 // "this network", 0.0.0.0 included
        || a == 10 // private
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local, cloud metadata endpoints
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments (DS-Lite, ...)
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 192 && b == 168) // private
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    !refused
}

/// An allow list, not a block list: only global unicast (2000::/3) can be public, and within it
/// the ranges that are not globally reachable or that embed another address are refused. Mapped
/// and NAT64 addresses reach an IPv4 address, which must be public itself.
fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 well-known prefix 64:ff9b::/96: the gateway connects to the embedded IPv4.
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    // Outside 2000::/3: unspecified, loopback, IPv4-compatible (deprecated), the local NAT64
    // prefix 64:ff9b:1::/48, discard-only 100::/64, unique-local fc00::/7, link-local and
    // site-local fe80::/10 and fec0::/10, multicast ff00::/8, and everything unassigned.
    if s[0] & 0xe000 != 0x2000 {
        return false;
    }
    let refused = match s[0] {
        // IETF protocol assignments (Teredo, benchmarking, ORCHID, ...) and documentation.
        0x2001 => s[1] < 0x0200 || s[1] == 0x0db8,
        // 6to4 (deprecated; embeds an IPv4 address).
        0x2002 => true,
        // Documentation, 3fff::/20.
        0x3fff => s[1] < 0x1000,
        _ => false,
    };
    !refused
}
