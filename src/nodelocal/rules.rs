//! The interception rules, laid out as node-cache lays them out (k8s-dns
//! `cmd/node-cache/app/cache_app.go`, `initIptables`), and their text for iptables and nft.
//!
//! Per address, for TCP and UDP on the DNS port, each prepended:
//!
//! | table | chain | match | target | why |
//! |---|---|---|---|---|
//! | raw | PREROUTING | `-d IP --dport 53` | NOTRACK | pods' queries skip conntrack, so kube-proxy's DNAT of the Service IP never applies and no conntrack entry is spent |
//! | filter | INPUT | `-d IP --dport 53` | ACCEPT | rules that accept only tracked traffic would drop them |
//! | raw | OUTPUT | `-s IP --sport 53` | NOTRACK | the answers |
//! | filter | OUTPUT | `-s IP --sport 53` | ACCEPT | |
//! | raw | OUTPUT | `-d IP --dport 53` | NOTRACK | queries from the node itself (hostNetwork pods) |
//!
//! and, when the liveness endpoint is TCP on the node, raw OUTPUT NOTRACK for its port both
//! ways (node-cache's `-health-port`).
//!
//! One addition, [`Rule::only_with_socket`] (`nodelocal.fail_open`): the PREROUTING rules also
//! match `-m socket` (nft: `socket transparent 0`), so pods' packets skip conntrack only while a
//! socket is bound to the address. When no clusterdns runs (killed, crashed, between restarts)
//! the kernel tracks them again, kube-proxy's DNAT sends queries for the kube-dns Service IP to
//! kube-dns, and nothing is black-holed. Locally generated traffic (OUTPUT) cannot be gated
//! this way: there the socket the kernel finds is the sender's own.

use std::fmt::Write as _;
use std::net::IpAddr;

/// Every rule's comment: what `iptables -S` shows an operator.
pub(crate) const COMMENT: &str = "NodeLocal DNS Cache: clusterdns";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Raw,
    Filter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chain {
    Prerouting,
    Input,
    Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Tcp,
    Udp,
}

/// Which end of the packet the address and port are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Destination,
    Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Notrack,
    Accept,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub table: Table,
    pub chain: Chain,
    pub proto: Proto,
    pub end: End,
    pub ip: IpAddr,
    pub port: u16,
    pub target: Target,
    /// Match only while a socket is bound to the address (`-m socket`).
    pub only_with_socket: bool,
}

/// node-cache's rules for `ips`, in its order.
pub(crate) fn node_cache_rules(
    ips: &[IpAddr],
    port: u16,
    health_port: Option<u16>,
    fail_open: bool,
) -> Vec<Rule> {
    use {Chain::*, End::*, Proto::*, Table::*, Target::*};
    let mut out = Vec::new();
    for &ip in ips {
        let mut add = |table, chain, proto, end, port, target| {
            out.push(Rule {
                table,
                chain,
                proto,
                end,
                ip,
                port,
                target,
                only_with_socket: fail_open && chain == Prerouting,
            })
        };
        for (table, chain, end, target) in [
            (Raw, Prerouting, Destination, Notrack),
            (Filter, Input, Destination, Accept),
            (Raw, Output, Source, Notrack),
            (Filter, Output, Source, Accept),
            (Raw, Output, Destination, Notrack),
        ] {
            add(table, chain, Tcp, end, port, target);
            add(table, chain, Udp, end, port, target);
        }
        if let Some(h) = health_port {
            add(Raw, Output, Tcp, Destination, h, Notrack);
            add(Raw, Output, Tcp, Source, h, Notrack);
        }
    }
    out
}

impl Rule {
    /// `iptables -t TABLE <op> CHAIN` is the caller's; these are the rule's own arguments
    /// (the same for `-C`, `-I` and `-D`).
    pub(crate) fn iptables_args(&self) -> Vec<String> {
        let (addr_flag, port_flag) = match self.end {
            End::Destination => ("-d", "--dport"),
            End::Source => ("-s", "--sport"),
        };
        let mut a: Vec<String> = vec![
            "-p".into(),
            self.proto_name().into(),
            addr_flag.into(),
            self.ip.to_string(),
            port_flag.into(),
            self.port.to_string(),
        ];
        if self.only_with_socket {
            a.extend(["-m".into(), "socket".into()]);
        }
        a.extend([
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            COMMENT.into(),
            "-j".into(),
            match self.target {
                Target::Notrack => "NOTRACK",
                Target::Accept => "ACCEPT",
            }
            .into(),
        ]);
        a
    }

    pub(crate) fn table_name(&self) -> &'static str {
        match self.table {
            Table::Raw => "raw",
            Table::Filter => "filter",
        }
    }

    pub(crate) fn chain_name(&self) -> &'static str {
        match self.chain {
            Chain::Prerouting => "PREROUTING",
            Chain::Input => "INPUT",
            Chain::Output => "OUTPUT",
        }
    }

    fn proto_name(&self) -> &'static str {
        match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// The rule as an nft statement of the table [`nft_script`] writes.
    fn nft_statement(&self) -> String {
        let family = if self.ip.is_ipv4() { "ip" } else { "ip6" };
        let (addr, port) = match self.end {
            End::Destination => ("daddr", "dport"),
            End::Source => ("saddr", "sport"),
        };
        let mut s = format!(
            "{family} {addr} {} {} {port} {}",
            self.ip,
            self.proto_name(),
            self.port
        );
        if self.only_with_socket {
            // Not `socket wildcard 0`: nft breaks on a socket that is not a full one, such as
            // the request socket the handshake's final ACK finds, and that ACK would then be
            // tracked and DNATed away. `transparent 0` matches every socket we bind, as
            // iptables' `-m socket` does.
            s.push_str(" socket transparent 0");
        }
        s.push_str(match self.target {
            Target::Notrack => " notrack",
            Target::Accept => " accept",
        });
        write!(s, " comment \"{COMMENT}\"").expect("writing to a String");
        s
    }

    /// The nft base chain that stands for this rule's iptables table and chain.
    fn nft_chain(&self) -> NftChain {
        match (self.table, self.chain) {
            (Table::Raw, Chain::Prerouting) => NftChain::PreroutingRaw,
            (Table::Raw, _) => NftChain::OutputRaw,
            (Table::Filter, Chain::Input) => NftChain::InputFilter,
            (Table::Filter, _) => NftChain::OutputFilter,
        }
    }
}

/// nft's table of its own: `inet` holds both families.
pub(crate) const NFT_TABLE: &str = "clusterdns-nodelocal";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NftChain {
    PreroutingRaw,
    InputFilter,
    OutputRaw,
    OutputFilter,
}

const NFT_CHAINS: [(NftChain, &str, &str, &str); 4] = [
    (
        NftChain::PreroutingRaw,
        "prerouting_raw",
        "prerouting",
        "raw",
    ),
    (NftChain::InputFilter, "input_filter", "input", "filter"),
    (NftChain::OutputRaw, "output_raw", "output", "raw"),
    (NftChain::OutputFilter, "output_filter", "output", "filter"),
];

/// One nft transaction that (re)creates the table with exactly `rules`: declaring the table
/// first makes the `delete` valid whether it existed or not, and `nft -f` applies the whole
/// file atomically, so no packet sees a half-written table.
pub(crate) fn nft_script(rules: &[Rule]) -> String {
    let mut s = format!(
        "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\ntable inet {NFT_TABLE} {{\n"
    );
    for (chain, name, hook, priority) in NFT_CHAINS {
        writeln!(
            s,
            "  chain {name} {{\n    type filter hook {hook} priority {priority}; policy accept;"
        )
        .expect("writing to a String");
        for r in rules.iter().filter(|r| r.nft_chain() == chain) {
            writeln!(s, "    {}", r.nft_statement()).expect("writing to a String");
        }
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn node_cache_layout_per_address() {
        let rules = node_cache_rules(&[ip("169.254.20.10"), ip("10.96.0.10")], 53, None, false);
        assert_eq!(rules.len(), 20, "ten per address");
        let shown: Vec<String> = rules[..10]
            .iter()
            .map(|r| {
                format!(
                    "-t {} {} {}",
                    r.table_name(),
                    r.chain_name(),
                    r.iptables_args().join(" ")
                )
            })
            .collect();
        let c = format!("-m comment --comment {COMMENT}");
        let expect = [
            "-t raw PREROUTING -p tcp -d 169.254.20.10 --dport 53 {c} -j NOTRACK",
            "-t raw PREROUTING -p udp -d 169.254.20.10 --dport 53 {c} -j NOTRACK",
            "-t filter INPUT -p tcp -d 169.254.20.10 --dport 53 {c} -j ACCEPT",
            "-t filter INPUT -p udp -d 169.254.20.10 --dport 53 {c} -j ACCEPT",
            "-t raw OUTPUT -p tcp -s 169.254.20.10 --sport 53 {c} -j NOTRACK",
            "-t raw OUTPUT -p udp -s 169.254.20.10 --sport 53 {c} -j NOTRACK",
            "-t filter OUTPUT -p tcp -s 169.254.20.10 --sport 53 {c} -j ACCEPT",
            "-t filter OUTPUT -p udp -s 169.254.20.10 --sport 53 {c} -j ACCEPT",
            "-t raw OUTPUT -p tcp -d 169.254.20.10 --dport 53 {c} -j NOTRACK",
            "-t raw OUTPUT -p udp -d 169.254.20.10 --dport 53 {c} -j NOTRACK",
        ]
        .map(|e| e.replace("{c}", &c));
        assert_eq!(shown, expect);
        assert!(rules[10..].iter().all(|r| r.ip == ip("10.96.0.10")));
    }

    #[test]
    fn fail_open_gates_only_prerouting_and_health_rules_follow_the_port() {
        let rules = node_cache_rules(&[ip("169.254.20.10")], 53, Some(8080), true);
        assert_eq!(rules.len(), 12);
        for r in &rules {
            assert_eq!(r.only_with_socket, r.chain == Chain::Prerouting, "{r:?}");
            assert_eq!(
                r.iptables_args().contains(&"socket".to_string()),
                r.chain == Chain::Prerouting
            );
        }
        let health: Vec<_> = rules.iter().filter(|r| r.port == 8080).collect();
        assert_eq!(health.len(), 2);
        assert!(health.iter().all(|r| r.table == Table::Raw
            && r.chain == Chain::Output
            && r.proto == Proto::Tcp
            && r.target == Target::Notrack));
    }

    #[test]
    fn nft_table_holds_every_rule_in_its_chain() {
        let rules = node_cache_rules(&[ip("169.254.20.10"), ip("fd00::10")], 53, None, true);
        let s = nft_script(&rules);
        assert!(s.starts_with(
            "table inet clusterdns-nodelocal\ndelete table inet clusterdns-nodelocal\n"
        ));
        assert_eq!(s.matches(" comment ").count(), rules.len());
        assert!(
            s.contains("ip daddr 169.254.20.10 udp dport 53 socket transparent 0 notrack comment")
        );
        assert!(s.contains("ip6 saddr fd00::10 tcp sport 53 accept comment"));
        assert!(s.contains("type filter hook prerouting priority raw;"));
        // The prerouting chain holds only the PREROUTING rules.
        let pre = s
            .split("chain prerouting_raw")
            .nth(1)
            .unwrap()
            .split('}')
            .next()
            .unwrap();
        assert_eq!(pre.matches("comment").count(), 4);
    }
}
