//! In-process costs: building the snapshot of a large cluster, applying one change to it, and
//! answering queries from it (parse + lookup + write, no sockets).
//!
//! `cargo bench --bench zone` also prints the snapshot's memory per service, endpoint and pod,
//! measured with a counting allocator; autopath's cost per pod at 150,000 pods (the address →
//! namespace index and the builder's record of each pod); and the queries autopath saves a pod
//! on an ndots:5 mix, counted by walking a stub resolver's search list against the engine.

#[allow(dead_code)] // each bench uses some of the shared helpers
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};

use clusterdns::cluster::{ClusterEvent, Object};
use clusterdns::config::{ClusterConfig, PodsMode};
use clusterdns::observe::Proto;
use clusterdns::server::{Engine, Local};
use clusterdns::zone::build::{ZoneBuilder, required_kinds};
use criterion::{Criterion, criterion_group, criterion_main};

struct Counting;
/// Live bytes and live allocations (each costs the allocator a header and rounding besides).
static LIVE: AtomicIsize = AtomicIsize::new(0);
static LIVE_N: AtomicIsize = AtomicIsize::new(0);
// SAFETY: every call is forwarded to the System allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        LIVE_N.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for alloc, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        LIVE_N.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `p` came from System.alloc with layout `l` (every allocation goes there).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: as dealloc: `p` and `l` are System's.
        unsafe { System.realloc(p, l, new_size) }
    }
}
#[global_allocator]
static A: Counting = Counting;

fn cfg(pods: PodsMode) -> ClusterConfig {
    ClusterConfig {
        pods,
        ..Default::default()
    }
}

fn big() -> Vec<Object> {
    // 10,000 services (1 in 10 headless) x 10 endpoints = 100,000 endpoints, 200 namespaces
    clusterdns::testkit::synthetic_cluster(10_000, 200, 10, 10, 0)
}

fn build(
    c: &ClusterConfig,
    objects: Vec<Object>,
) -> (
    ZoneBuilder,
    std::sync::Arc<clusterdns::zone::snapshot::Snapshot>,
) {
    let mut b = ZoneBuilder::new(c, &required_kinds(c));
    b.apply(ClusterEvent::ReplaceAll { objects });
    let (s, _) = b.publish();
    (b, s)
}

fn report_memory() {
    report_memory_of(0);
    report_memory_of(150_000);
}

fn report_memory_of(pods: usize) {
    // The snapshot alone: build, then drop the builder's own state. Counted from before the
    // objects are made: the builder keeps what it needs of them and the rest is freed.
    let c = cfg(if pods > 0 {
        PodsMode::Verified
    } else {
        PodsMode::Insecure
    });
    let before = LIVE.load(Ordering::Relaxed);
    let before_n = LIVE_N.load(Ordering::Relaxed);
    let objects = clusterdns::testkit::synthetic_cluster(10_000, 200, 10, 10, pods);
    let (b, snap) = build(&c, objects);
    let with_state = LIVE.load(Ordering::Relaxed) - before;
    let with_state_n = LIVE_N.load(Ordering::Relaxed) - before_n;
    drop(b);
    let snap_only = LIVE.load(Ordering::Relaxed) - before;
    let snap_only_n = LIVE_N.load(Ordering::Relaxed) - before_n;
    let n = snap.counts();
    eprintln!(
        "memory: 10,000 services, {} endpoints, {} pods: snapshot {:.1} MB in {}k allocations ({} B/service+endpoint+pod, {} B/record over {} records); with builder state {:.1} MB in {}k allocations",
        n.endpoints,
        n.pods,
        snap_only as f64 / 1e6,
        snap_only_n / 1000,
        snap_only as usize / (n.services + n.endpoints + n.pods),
        snap_only as usize / n.records.max(1),
        n.records,
        with_state as f64 / 1e6,
        with_state_n / 1000,
    );
    drop(snap);
}

/// Resident memory of this process, KiB.
fn rss_kib() -> i64 {
    common::status_kib("self", "VmRSS:") as i64
}

/// What the allocator holds after the cluster arrives the way the API source delivers it (one
/// full list per kind, a snapshot after each) and freed memory is handed back.
fn report_heap() {
    use clusterdns::cluster::Kind;
    // SAFETY: malloc_trim only walks glibc\'s own free lists.
    unsafe { libc::malloc_trim(0) };
    let rss0 = rss_kib();
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct.
    let m0 = unsafe { libc::mallinfo2() };
    let c = cfg(PodsMode::Insecure);
    let mut b = ZoneBuilder::new(&c, &required_kinds(&c));
    // Objects are decoded on another thread (another malloc arena), as the API source does.
    let (mut kinds, known) = std::thread::spawn(|| {
        let mut kinds: std::collections::HashMap<Kind, Vec<Object>> = Default::default();
        for o in clusterdns::testkit::synthetic_cluster(10_000, 200, 10, 10, 0) {
            kinds.entry(o.key().kind).or_default().push(o);
        }
        let known: std::collections::HashSet<clusterdns::cluster::ObjectKey> =
            if std::env::var("KNOWN").is_ok() {
                kinds[&Kind::Service].iter().map(Object::key).collect()
            } else {
                Default::default()
            };
        (kinds, known)
    })
    .join()
    .unwrap();
    let mut snap = None;
    let show = |what: &str| {
        // SAFETY: malloc_trim only walks glibc\'s own free lists.
        unsafe { libc::malloc_trim(0) };
        // SAFETY: mallinfo2 takes no arguments and returns a plain struct.
        let m = unsafe { libc::mallinfo2() };
        eprintln!(
            "  {what}: in use {:.1} MB, free {:.1} MB, resident +{:.1} MB",
            (m.uordblks as f64 - m0.uordblks as f64) / 1e6,
            m.fordblks as f64 / 1e6,
            (rss_kib() - rss0) as f64 / 1024.0
        );
    };
    show("objects");
    if std::env::var("DROP_ONLY").is_ok() {
        drop(std::mem::take(&mut kinds));
        show("dropped");
    }
    for k in [Kind::Namespace, Kind::Service, Kind::EndpointSlice] {
        b.apply(ClusterEvent::Relist {
            kind: k,
            objects: kinds.remove(&k).unwrap_or_default(),
        });
        show("applied");
        snap = Some(b.publish().0);
        show("published");
    }
    // SAFETY: malloc_trim only walks glibc\'s own free lists.
    unsafe { libc::malloc_trim(0) };
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct.
    let m1 = unsafe { libc::mallinfo2() };
    eprintln!(
        "heap: after the lists, {:.1} MB in use, {:.1} MB free in the heap, resident +{:.1} MB",
        (m1.uordblks as f64 - m0.uordblks as f64) / 1e6,
        m1.fordblks as f64 / 1e6,
        (rss_kib() - rss0) as f64 / 1024.0
    );
    if let Ok(path) = std::env::var("MALLOC_INFO_TO") {
        let p = std::ffi::CString::new(path).unwrap();
        // SAFETY: a NUL-terminated path and mode; the FILE is checked and closed below.
        unsafe {
            let f = libc::fopen(p.as_ptr(), c"w".as_ptr());
            libc::malloc_info(0, f);
            libc::fclose(f);
        }
    }
    drop((b, snap, known));
}

/// Autopath's memory per pod at 150,000 pods: the snapshot's address → namespace index, and the
/// builder's record of each pod (name, addresses, host-network bit), both measured.
fn report_autopath_memory() {
    const PODS: usize = 150_000;
    let c = cfg(PodsMode::Insecure);
    let measure = |pods: usize, index: bool| {
        let before = LIVE.load(Ordering::Relaxed);
        let objects = clusterdns::testkit::synthetic_cluster(10_000, 200, 10, 10, pods);
        let mut b = ZoneBuilder::new(&c, &required_kinds(&c)).with_client_namespaces(index);
        b.apply(ClusterEvent::ReplaceAll { objects });
        let (snap, _) = b.publish();
        let with_state = LIVE.load(Ordering::Relaxed) - before;
        drop(b);
        let snap_only = LIVE.load(Ordering::Relaxed) - before;
        assert_eq!(snap.pod_namespaces.len(), if index { pods } else { 0 });
        drop(snap);
        (snap_only, with_state - snap_only)
    };
    let (snap0, state0) = measure(0, false);
    let (snap_no_index, state_pods) = measure(PODS, false);
    let (snap_index, state_index) = measure(PODS, true);
    let per = |b: isize| b as f64 / PODS as f64;
    eprintln!(
        "autopath memory at {PODS} pods: address -> namespace index {:.1} B/pod in the snapshot, builder's pod records {:.1} B/pod; {:.1} B/pod in all (pods without the index: snapshot {:.1} B/pod, it holds no pod)",
        per(snap_index - snap_no_index),
        per(state_index - state0),
        per(snap_index - snap_no_index + state_index - state0),
        per(snap_no_index - snap0),
    );
    let _ = state_pods;
}

/// The queries a pod sends for an ndots:5 mix with and without autopath. The pod (10.200.0.2,
/// namespace team-0) looks names up as glibc does: A and AAAA for each search-list expansion
/// (`team-0.svc.cluster.local svc.cluster.local cluster.local corp.internal`), then the name
/// itself, until one is not NXDOMAIN. The mix, per 100 lookups: 35 services of its own
/// namespace by short name, 15 of another namespace (`svc.ns`), 10 fully qualified cluster
/// names written without the trailing dot (4 dots, so still expanded), 40 names outside the
/// cluster (`api.github.com`). There is no resolver here: a name that leaves the cluster zone
/// gets REFUSED, which ends a stub's walk as a forwarded answer would; the forwarded
/// expansions themselves (`*.corp.internal`, the bare name) go upstream in both modes.
fn report_autopath_savings() {
    let dir = std::env::temp_dir().join(format!("clusterdns-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "search corp.internal\n").unwrap();
    let c = cfg(PodsMode::Insecure);
    let objects = clusterdns::testkit::synthetic_cluster(2_000, 200, 2, 2, 2_000);
    let mut b = ZoneBuilder::new(&c, &required_kinds(&c)).with_client_namespaces(true);
    b.apply(ClusterEvent::ReplaceAll { objects });
    let (snap, _) = b.publish();
    let swap = std::sync::Arc::new(arc_swap::ArcSwap::new(snap));
    let engine = |autopath: bool| {
        let mut config = clusterdns::config::Config::default();
        config.forward.enabled = false;
        config.shape.autopath.enabled = autopath;
        config.shape.autopath.resolv_conf = Some(resolv.clone());
        let shape = clusterdns::server::shape::Shaper::new(&config).unwrap();
        Engine::new(&config, swap.clone(), None, shape, Default::default())
    };
    let pod: std::net::IpAddr = "10.200.0.2".parse().unwrap();
    let search = [
        "team-0.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
        "corp.internal",
    ];
    // svc-200 and svc-400 are in team-0 (service i is in team-(i % 200)), svc-7 in team-7.
    let mut mix: Vec<String> = Vec::new();
    for i in 0..35 {
        mix.push(format!("svc-{}", 200 * (i % 5 + 1)));
    }
    for i in 0..15 {
        mix.push(format!("svc-{}.team-{}", 7 + i, 7 + i));
    }
    for i in 0..10 {
        mix.push(format!("svc-{}.team-{}.svc.cluster.local", 9 + i, 9 + i));
    }
    for i in 0..40 {
        mix.push(format!("api-{i}.github.com"));
    }
    let count = |e: &Engine| {
        let mut queries = 0;
        let mut out = Vec::with_capacity(4096);
        for name in &mix {
            'walk: for cand in search
                .iter()
                .map(|s| format!("{name}.{s}"))
                .chain(std::iter::once(name.clone()))
            {
                let mut found = false;
                for qtype in [1u16, 28] {
                    queries += 1;
                    out.clear();
                    if let Local::Reply(f) =
                        e.answer_from(&query(&cand, qtype), Proto::Udp, Some(pod), &mut out)
                    {
                        found |= f.rcode != 3;
                    }
                }
                if found {
                    break 'walk;
                }
            }
        }
        queries
    };
    let without = count(&engine(false));
    let with = count(&engine(true));
    eprintln!(
        "autopath on an ndots:5 mix of {} lookups: {without} queries from the pod without autopath, {with} with it ({:.0}% fewer)",
        mix.len(),
        100.0 * (without - with) as f64 / without as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn benches(cr: &mut Criterion) {
    report_heap();
    report_memory();
    report_autopath_memory();
    report_autopath_savings();
    let c = cfg(PodsMode::Insecure);
    cr.bench_function("build_snapshot_10k_services_100k_endpoints", |bch| {
        bch.iter_batched(
            big,
            |objs| black_box(build(&c, objs)),
            criterion::BatchSize::LargeInput,
        )
    });
    let (mut b, snap) = build(&c, big());
    // The service lookup alone (a hit and a miss), without parsing or writing.
    let hit = clusterdns::wire::encode_labels(&["svc-4321", "team-121"]);
    let miss = clusterdns::wire::encode_labels(&["com", "team-7"]);
    cr.bench_function("lookup_service_hit_and_miss", |bch| {
        bch.iter(|| {
            let a = snap.services.get(black_box(&hit[..])).is_some();
            let b = snap.services.get(black_box(&miss[..])).is_some();
            black_box((a, b))
        })
    });
    let mut flip = 0u32;
    cr.bench_function("apply_one_service_change_10k_cluster", |bch| {
        bch.iter(|| {
            flip = flip.wrapping_add(1);
            let objs = clusterdns::testkit::synthetic_cluster(1, 1, 1 + (flip % 3) as usize, 0, 0);
            for o in objs {
                b.apply(ClusterEvent::Apply {
                    object: o,
                    changed_at: None,
                });
            }
            black_box(b.publish())
        })
    });
    let swap = std::sync::Arc::new(arc_swap::ArcSwap::new(snap));
    let mut config = clusterdns::config::Config::default();
    config.forward.enabled = false;
    let engine = Engine::new(&config, swap, None, None, Default::default());
    let mut out = Vec::with_capacity(4096);
    for (name, qname, qtype) in [
        ("answer_a_hit", "svc-4321.team-121.svc.cluster.local", 1u16),
        (
            "answer_nxdomain_search_path",
            "www.example.com.team-7.svc.cluster.local",
            1,
        ),
        (
            "answer_srv_headless_10",
            "_http._tcp.svc-4320.team-120.svc.cluster.local",
            33,
        ),
        ("answer_ptr", "11.0.96.10.in-addr.arpa", 12),
    ] {
        let q = query(qname, qtype);
        cr.bench_function(name, |bch| {
            bch.iter(|| {
                let r = engine.answer_local(black_box(&q), Proto::Udp, &mut out);
                assert!(matches!(r, Local::Reply(_)));
                black_box(out.len())
            })
        });
    }
    bench_with_metrics(cr, &engine, &mut out);
}

/// The same hit with the metrics counted, as the server does per query.
fn bench_with_metrics(cr: &mut Criterion, engine: &Engine, out: &mut Vec<u8>) {
    let q = query("svc-4321.team-121.svc.cluster.local", 1);
    let src: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
    cr.bench_function("answer_a_hit_with_metrics", |bch| {
        bch.iter(|| {
            let start = std::time::Instant::now();
            if let Local::Reply(f) = engine.answer_local(black_box(&q), Proto::Udp, out) {
                engine.observe(&f, q.len(), out, Proto::Udp, src, start);
            }
            black_box(out.len())
        })
    });
}

fn query(name: &str, qtype: u16) -> Vec<u8> {
    common::question(0x1234, common::RD, name, qtype)
}

criterion_group!(name = g; config = Criterion::default().sample_size(10).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2)); targets = benches);
criterion_main!(g);
