//! CoreDNS plugins clusterdns does not carry over: those that change answers are refused (with
//! why, and what to do instead), those that only concern operation are dropped with a note.

/// Directives that change answers in ways clusterdns cannot reproduce, and why.
pub(super) fn unsupported_reason(name: &str) -> Option<&'static str> {
    Some(match name {
        "dnssec" => "it signs answers on the fly with zone keys; clusterdns does not sign",
        "sign" => "it signs zone files; clusterdns serves no zone files and does not sign",
        "file" => {
            "it serves an authoritative zone from a zone file; clusterdns serves only the cluster zone, a hosts file and forwarding. Serve the zone elsewhere and forward to it from a server block (a stub domain)"
        }
        "auto" => {
            "it serves authoritative zones from a folder of zone files; clusterdns serves no zone files"
        }
        "secondary" => {
            "it serves zones transferred from a primary (AXFR); clusterdns serves no secondary zones. Forward the zone to the primary instead (a stub domain)"
        }
        "etcd" => "it serves records from etcd (SkyDNS); clusterdns reads only Kubernetes objects",
        "tsig" => {
            "it checks TSIG signatures on queries; clusterdns checks TSIG on zone transfers only, with the one key of transfer.tsig: set that by hand (its secret from the Secret CoreDNS read) and remove the line to convert"
        }
        "acl" => {
            "it blocks or filters clients by source address; clusterdns has no per-client policy, and dropping it would open access the Corefile denies. Use a NetworkPolicy for the clusterdns pods instead"
        }
        "any" => {
            "it answers ANY queries with a minimal HINFO (RFC 8482); clusterdns answers ANY queries from what it holds"
        }
        "chaos" => {
            "it answers CH-class queries such as version.bind and authors.bind; clusterdns answers no CH-class names"
        }
        "whoami" => {
            "it answers every query with the client's address and port; clusterdns has no such answer"
        }
        "header" => {
            "it sets or clears header flags in answers; clusterdns writes the flags the DNS specification asks for"
        }
        "minimal" => {
            "it strips the authority and additional sections from answers; clusterdns writes complete answers"
        }
        "nsid" => {
            "it adds an NSID (RFC 5001) identifier to answers that ask for one; clusterdns does not send NSID. If nothing reads NSID, remove the line to convert"
        }
        "local" => {
            "it answers localhost names itself (localhost., localhost.<zone>, 127.in-addr.arpa); clusterdns forwards them instead. Put them in the hosts file if they must be answered locally"
        }
        "dns64" => {
            "it synthesises AAAA records from A records (DNS64); clusterdns does not synthesise"
        }
        "grpc" => "it forwards over gRPC; clusterdns forwards over plain DNS (UDP/TCP) only",
        "route53" => {
            "it serves zones from AWS Route 53; clusterdns serves no cloud zones. Forward the zone to the VPC resolver instead (a stub domain)"
        }
        "azure" => {
            "it serves zones from Azure DNS; clusterdns serves no cloud zones. Forward the zone to 168.63.129.16 instead (a stub domain)"
        }
        "clouddns" => {
            "it serves zones from Google Cloud DNS; clusterdns serves no cloud zones. Forward the zone to the metadata resolver instead (a stub domain)"
        }
        "erratic" => {
            "it deliberately drops and delays answers for testing; clusterdns has no such mode"
        }
        "geoip" => {
            "it looks up client locations for other plugins; clusterdns has no per-client answers"
        }
        "view" => {
            "it selects server blocks by client address or query; clusterdns answers every client the same"
        }
        "alternate" => {
            "it re-sends queries elsewhere when the answer has a given rcode; clusterdns has no rcode-based fallback"
        }
        _ => return None,
    })
}

/// Directives dropped with a note: they only concern operation, not answers.
pub(super) fn dropped_note(name: &str) -> Option<&'static str> {
    Some(match name {
        "reload" => {
            "not needed: clusterdns re-reads its config file when it changes (a ConfigMap update included) and on SIGHUP; an invalid new config is rejected and the running one stays"
        }
        "debug" => {
            "debug mode (panics not recovered) has no clusterdns equivalent; set RUST_LOG=debug for more logging"
        }
        "pprof" => "Go profiling endpoints have no clusterdns equivalent",
        "trace" => "OpenTracing/Zipkin spans have no clusterdns equivalent",
        "dnstap" => {
            "dnstap output has no clusterdns equivalent; `querylog` logs queries as structured log lines"
        }
        "metadata" => "plugin metadata only feeds other plugins' log formats",
        "cancel" => "clusterdns bounds upstream queries with forward.timeout",
        "root" => "the root folder only matters to zone-file plugins",
        "multisocket" => "clusterdns opens one UDP socket per CPU by default (server.udp_workers)",
        "timeouts" => {
            "read/write/idle timeouts of DoT/DoH/gRPC servers; clusterdns closes idle TCP connections after server.tcp_idle_timeout"
        }
        "on" => "event hooks have no clusterdns equivalent",
        _ => return None,
    })
}
