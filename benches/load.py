#!/usr/bin/env python3
"""clusterdns load benchmark: clusterdns against well-known DNS servers, same data, same method.

One command:

  python3 benches/load.py [--secs 5] [--repeat 3] [--phases verify,auth,tcp,cache] [--scale 1]

  1. generates the Kubernetes-like zone (gen_zone.py) and the dnsperf query files
     (gen_queries.py) of the shared harness (--shared, default ../shared/bench beside the repo)
     into --work, and converts the zone into a clusterdns objects file (zone_to_objects.py)
  2. builds clusterdns (`cargo build --release`, retried after 60 s if someone else's edit
     breaks it) unless --no-build, and uses <cargo target dir>/release/clusterdns
  3. runs the phases; in each, the peer(s) and clusterdns run at the same time, each pinned
     to CPU 0 (`taskset -c 0`; clusterdns with `server.udp_workers: 1`), and the shared
     load.sh (dnsperf pinned to CPU 1) measures them file by file, alternating servers so
     that slow drift of the host hits both alike:
       verify  knot and clusterdns answer a sample of hits/misses/mix identically
               (zone_to_objects.py --verify); differences are printed
       auth    knot-1w (knot, one UDP worker) vs clusterdns: hits, misses, mix over UDP
       tcp     bind (named -n 1) if installed, and knot-1w, vs clusterdns: hits over TCP
       cache   unbound (1 thread) vs clusterdns as caching forwarders in front of one knot
               (knot-1w, also on CPU 0): cache-hits, cache-mix with WARMUP=1; clusterdns
               runs with `cluster.enabled: false`, so cluster.local and 10.in-addr.arpa
               are forwarded to knot and cached, as unbound does
  4. reads each server's RSS (/proc, summed over its processes) after start and after the
     load, and writes a markdown table to WORK/results.md (and WORK/results.json), and
     prints it

Every process started here is stopped again by its PID. Traffic stays on 127.0.0.1.
Environment: QUIET_MAX (default here 120) and QUIET_PCT go to load.sh. On a busy machine the
waits for quiet dominate: once half of --budget (default 1200 s) is spent, each run may wait at
most its share of what is left (budget left / runs left / 2, at least 5 s), so that a full run
stays near the budget; runs measured in background load are counted as noisy= as always.
"""
import argparse
import datetime
import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True   # no __pycache__ in benches/ or the shared harness
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ZONES = ["cluster.local", "10.in-addr.arpa"]
peers = None   # the shared peers.py module, imported in main()
T0 = time.time()


def import_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def say(msg, log=None):
    line = f"[{time.time() - T0:6.0f}s] {msg}"
    print(line, flush=True)
    if log:
        log.write(line + "\n")
        log.flush()


# ---------------------------------------------------------------- preparing
def run_checked(cmd, log, **kw):
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    log.write(p.stdout + p.stderr)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return p


def prepare(a, log):
    zdir = os.path.join(a.work, "zones")
    qdir = os.path.join(a.work, "queries")
    stamp = os.path.join(a.work, "prepared.json")
    want = {"scale": a.scale, "shared": a.shared}
    have = None
    if os.path.exists(stamp):
        with open(stamp) as f:
            have = json.load(f)
    if have != want or not os.path.exists(os.path.join(a.work, "objects.yaml")):
        shutil.rmtree(zdir, ignore_errors=True)
        shutil.rmtree(qdir, ignore_errors=True)
        run_checked([sys.executable, os.path.join(a.shared, "gen_zone.py"), "--out", zdir,
                     "--scale", str(a.scale)], log)
        run_checked([sys.executable, os.path.join(a.shared, "gen_queries.py"),
                     "--zone-dir", zdir, "--out", qdir], log)
        z2o = import_file("zone_to_objects", os.path.join(HERE, "zone_to_objects.py"))
        text, stats, warn = z2o.convert(os.path.join(zdir, "cluster.local.zone"), "cluster.local",
                                        os.path.join(zdir, "10.in-addr.arpa.zone"))
        for w in warn:
            say(f"zone_to_objects warning: {w}", log)
        with open(os.path.join(a.work, "objects.yaml"), "w") as f:
            f.write(text)
        with open(os.path.join(a.work, "objects-stats.json"), "w") as f:
            json.dump(dict(stats, warnings=len(warn)), f)
        with open(stamp, "w") as f:
            json.dump(want, f)
    with open(os.path.join(zdir, "zone-stats.txt")) as f:
        zstats = dict(l.strip().split("=", 1) for l in f if "=" in l)
    with open(os.path.join(a.work, "objects-stats.json")) as f:
        ostats = json.load(f)
    return zdir, qdir, zstats, ostats


def build(a, log):
    """cargo build --release (unless --no-build); returns the binary's path."""
    if a.binary:
        return a.binary
    if not a.no_build:
        for attempt in range(1, 4):
            say(f"cargo build --release (attempt {attempt})", log)
            p = subprocess.run(["cargo", "build", "--release"], cwd=REPO, capture_output=True,
                               text=True, timeout=1800)
            log.write(p.stderr[-5000:])
            if p.returncode == 0:
                break
            say("build failed (someone's file mid-edit?); retrying in 60 s:\n"
                + "\n".join(p.stderr.strip().splitlines()[-8:]), log)
            if attempt == 3:
                raise SystemExit("cargo build --release failed 3 times")
            time.sleep(60)
    meta = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    target = json.loads(meta.stdout)["target_directory"] if meta.returncode == 0 \
        else os.path.join(REPO, "target")
    built = os.path.join(target, "release", "clusterdns")
    if not os.access(built, os.X_OK):
        raise SystemExit(f"no clusterdns binary at {built}")
    # a copy: others rebuild the shared target directory while the benchmark runs
    binary = os.path.join(a.work, "bin", "clusterdns")
    os.makedirs(os.path.dirname(binary), exist_ok=True)
    shutil.copy2(built, binary)
    return binary


# ---------------------------------------------------------------- clusterdns
class ClusterDns:
    """clusterdns on 127.0.0.1 and a free port, pinned to CPU 0; the same interface as
    peers.Server (dir, port, proc, argv, ready(), stop())."""

    def __init__(self, work, binary, label, objects=None, ttl=30, upstream=None):
        self.kind = "clusterdns"
        self.label = label
        self.dir = os.path.join(work, "run", label)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.port = peers.free_port()
        lines = [f'listen: ["127.0.0.1:{self.port}"]']
        if upstream:
            # A pure caching forwarder: cluster.local and 10.in-addr.arpa go to the upstream.
            lines += ["cluster: {enabled: false}",
                      f'forward: {{enabled: true, upstreams: ["127.0.0.1:{upstream}"]}}']
        else:
            lines += [f"cluster: {{ttl: {ttl}}}",
                      f"source: {{file: {json.dumps(objects)}}}",
                      "forward: {enabled: false}"]
        lines += ["server: {udp_workers: 1}",
                  "metrics: {listen: null}",
                  "health: {listen: null, lameduck: 0s, drain_timeout: 1s}",
                  "ready: {listen: null}",
                  "querylog: {enabled: false}"]
        self.config = os.path.join(self.dir, "clusterdns.yaml")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.argv = ["taskset", "-c", "0", binary, "serve", "--config", self.config]
        self.logpath = os.path.join(self.dir, "stderr.log")
        self.log = open(self.logpath, "w")
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.dir,
                                     env=dict(os.environ, NO_COLOR="1"))
        peers.STARTED.append((self.proc.pid, peers.proc_start_time(self.proc.pid)))

    def ready(self, checks, timeout=120):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clusterdns exited with {self.proc.returncode}: "
                                   + open(self.logpath).read()[-1500:])
            with open(self.logpath) as f:
                if "clusterdns: listening dns=" in f.read():
                    break
            time.sleep(0.05)
        secs = peers.wait_ready(self.proc, self.port, checks, timeout=timeout)
        peers.remember_tree(self.proc.pid)
        return time.time() - t0

    def stop(self):
        peers.stop(self.proc)
        self.log.close()


# ---------------------------------------------------------------- measuring
CALLS_LEFT = [0]   # load.sh calls still to come (set from the phases in run())


def quiet_max_for(a, repeat):
    """QUIET_MAX for the next load.sh call: the environment's (120) until half the budget is
    spent, then the call's share of the rest."""
    qm = int(os.environ.get("QUIET_MAX", "120"))
    spent = time.time() - T0
    if spent > a.budget / 2:
        share = (a.budget - spent) / max(1, CALLS_LEFT[0]) / (2 * repeat)
        qm = int(max(5, min(qm, share)))
    return str(qm)


def load(port, qfile, secs, repeat, raw_dir, quiet_max, mode="udp", warmup=False, log=None):
    """load.sh once (REPEAT runs); returns the RESULT fields."""
    env = dict(os.environ, REPEAT=str(repeat), MODE=mode, RAW_DIR=raw_dir,
               WARMUP="1" if warmup else "0", QUIET_MAX=quiet_max)
    cmd = [peers.LOAD, "127.0.0.1", str(port), qfile, str(secs)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True,
                       timeout=repeat * 3 * (secs * (2 if warmup else 1) + 60 + int(quiet_max)) + 120)
    if log:
        log.write(f"$ REPEAT={repeat} MODE={mode} WARMUP={int(warmup)} QUIET_MAX={quiet_max} "
                  f"{' '.join(cmd)}\n{p.stdout}{p.stderr}\n")
        log.flush()
    res = None
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            res = dict(re.findall(r"(\w+)=(\S+)", line))
    if res is None:
        raise RuntimeError(f"load.sh failed: {p.stdout[-500:]} {p.stderr[-500:]}")
    res["median_qps"] = int(res["median_qps"])
    res["runs"] = [int(x) for x in res["runs"].split("/")]
    res["quiet_max"] = int(quiet_max)
    res["repeated_runs"] = p.stderr.count("repeating it")
    res["waited_busy"] = p.stderr.count("waiting for an idle machine")
    res["completed"] = 0
    for i in range(1, repeat + 1):
        path = os.path.join(raw_dir, f"{os.path.basename(qfile)[:-4]}-{mode}-{i}.txt")
        try:
            with open(path) as f:
                m = re.search(r"Queries completed:\s+(\d+)", f.read())
            res["completed"] += int(m.group(1)) if m else 0
        except OSError:
            pass
    return res


def pcts(s):
    """'97/98(steal:3)/96%' -> [97, 98, 96]"""
    out = []
    for x in s.rstrip("%").split("/"):
        m = re.match(r"\d+", x)
        out.append(int(m.group(0)) if m else None)
    return out


def summarize(r):
    """Derived numbers of one load() result."""
    cs = pcts(r["cpu_server"])
    cc = pcts(r["cpu_client"])
    us = [c * 10000 / q for c, q in zip(cs, r["runs"]) if c is not None and q]
    return {"cpu_server_med": statistics.median([c for c in cs if c is not None]) if cs else None,
            "cpu_client_med": statistics.median([c for c in cc if c is not None]) if cc else None,
            "us_per_q": statistics.median(us) if us else None}


def measure(srv, qd, fname, a, raw, log, mode="udp", warmup=False, upstream=None):
    t_cpu = peers.cpu_ticks(srv.proc.pid)
    t_up = peers.cpu_ticks(upstream.proc.pid) if upstream else None
    r = load(srv.port, os.path.join(qd, f"{fname}.txt"), a.secs, a.repeat,
             os.path.join(raw, srv.label), quiet_max_for(a, a.repeat), mode=mode,
             warmup=warmup, log=log)
    CALLS_LEFT[0] -= 1
    hz = os.sysconf("SC_CLK_TCK")
    cpu_s = (peers.cpu_ticks(srv.proc.pid) - t_cpu) / hz
    r.update(summarize(r))
    # whole-process CPU (user+sys) per completed query. Warm-up passes burn CPU that no
    # counted query paid for (left out); a run load.sh repeated for background load is
    # counted as one more run of the same size (approximate, marked ~ in the table)
    r["proc_cpu_s"] = cpu_s
    n = r["completed"] * (a.repeat + r["repeated_runs"]) / a.repeat
    r["proc_us_per_q"] = cpu_s * 1e6 / n if n and not warmup else None
    r["proc_approx"] = bool(r["repeated_runs"])
    if upstream:
        r["upstream_cpu_ms"] = round((peers.cpu_ticks(upstream.proc.pid) - t_up) * 1000 / hz)
    rc = r.get("rcodes", "")
    r["odd_rcodes"] = [x for x in rc.split(",") if x and x.split(":")[0] not in ("NOERROR", "NXDOMAIN")]
    say(f"  {srv.label:12} {fname:10} {mode}: {r['median_qps']} qps runs={r['runs']} "
        f"lost={r['lost']} rcodes={rc} cpu0={r['cpu_server']} cpu1={r['cpu_client']} "
        f"us/q={fmt(r['us_per_q'], 2)} noisy={r['noisy']}", log)
    return r


def fmt(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}"


# ---------------------------------------------------------------- phases
def start_all(servers, checks_of, log):
    """Start each (factory) in turn and wait until it answers; returns the servers."""
    out = []
    for make in servers:
        s = make()
        out.append(s)
        secs = s.ready(checks_of(s))
        m = peers.mem_of(s.proc.pid)
        esc = peers.affinity_escapes(s.proc.pid)
        s.mem_ready = m
        s.ready_s = secs
        say(f"{s.label}: port {s.port} ready in {secs:.1f}s rss={m['rss_kib']}KiB "
            f"threads={m['threads']} argv={' '.join(s.argv)}"
            + (f" NOT PINNED: {esc}" if esc else ""), log)
        s.escapes = esc
    return out


def run_phase(name, servers, files, a, qd, raw, log, results, mode="udp", warmup=False,
              upstream=None):
    """Alternate the servers file by file; record results[name][label]."""
    ph = results["phases"].setdefault(name, {})
    for s in servers:
        ph[s.label] = {"argv": " ".join(s.argv), "ready_s": round(s.ready_s, 2),
                       "rss_ready_kib": s.mem_ready["rss_kib"],
                       "threads": s.mem_ready["threads"], "affinity_escapes": s.escapes,
                       "files": {}}
    for f in files:
        for s in servers:
            ph[s.label]["files"][f"{f}-{mode}"] = measure(s, qd, f, a, raw, log, mode=mode,
                                                          warmup=warmup, upstream=upstream)
            save(a, results)
    for s in servers:
        m = peers.mem_of(s.proc.pid)
        ph[s.label]["rss_after_kib"] = m["rss_kib"]
        ph[s.label]["pss_after_kib"] = m["pss_kib"]
        ph[s.label]["threads_after"] = m["threads"]
    if upstream:
        ph["_upstream"] = {"argv": " ".join(upstream.argv)}


def save(a, results):
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)


def main():
    global peers
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--secs", type=int, default=5, help="seconds per dnsperf run (5)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per file, median reported (3)")
    ap.add_argument("--phases", default="verify,auth,tcp,cache")
    ap.add_argument("--scale", type=int, default=1, help="gen_zone.py --scale (1)")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(REPO), "shared", "bench"),
                    help="the shared harness (gen_zone.py, gen_queries.py, load.sh, peers.py)")
    ap.add_argument("--work", default="/tmp/clusterdns-bench", help="work directory")
    ap.add_argument("--binary", help="clusterdns binary to use (skips the build)")
    ap.add_argument("--no-build", action="store_true", help="use the binary already built")
    ap.add_argument("--budget", type=int, default=1200,
                    help="seconds; past it, runs stop waiting for a quiet machine (1200)")
    ap.add_argument("--verify-sample", type=int, default=200,
                    help="distinct queries per file in the verify phase (200)")
    a = ap.parse_args()
    a.shared = os.path.abspath(a.shared)
    a.work = os.path.abspath(a.work)
    os.makedirs(a.work, exist_ok=True)
    os.environ.setdefault("QUIET_MAX", "120")
    for tool in ("dnsperf", "taskset", "kdig", "knotd"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (Debian: dnsperf util-linux knot-dnsutils knot)")
    peers = import_file("peers", os.path.join(a.shared, "peers.py"))
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: (peers.stop_all(), sys.exit(130)))
    try:
        run(a)
    finally:
        peers.stop_all()


def run(a):
    log = open(os.path.join(a.work, "commands.log"), "a")
    say(f"work directory {a.work}, shared harness {a.shared}", log)
    zdir, qd, zstats, ostats = prepare(a, log)
    say(f"zone: {zstats.get('records_total')} records; objects: {ostats}", log)
    binary = build(a, log)
    raw = os.path.join(a.work, "raw")
    shutil.rmtree(raw, ignore_errors=True)
    phases = a.phases.split(",")
    git = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    results = {
        "started": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "secs": a.secs, "repeat": a.repeat, "scale": a.scale, "zone": zstats,
        "objects": ostats, "phases": {}, "notes": [],
        "quiet_max": os.environ.get("QUIET_MAX"),
        "machine": f"{os.cpu_count()} CPUs, "
                   + next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                           if l.startswith("model name")), "?"),
        "versions": {k: peers.version(k) for k in ("knotd", "named", "unbound", "dnsperf")},
    }
    results["versions"]["clusterdns"] = (
        subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
        + f" (git {git}, {binary})")
    CALLS_LEFT[0] = (6 * ("auth" in phases) + 3 * ("tcp" in phases) + 4 * ("cache" in phases))
    ttl = int(zstats.get("ttl", 30))
    objects = os.path.join(a.work, "objects.yaml")
    checks_ref = peers.checks_for(zdir, ZONES)
    # clusterdns serves PTRs under in-addr.arpa, not a 10.in-addr.arpa zone with its own SOA
    checks_cd = [c for c in checks_ref if c != ("10.in-addr.arpa", "SOA")]
    checks_of = lambda s: checks_cd if s.kind == "clusterdns" else checks_ref
    auth_peer = lambda kind: (lambda: peers.Server(a.work, kind, zdir, ZONES, label=kind))
    cdns_auth = lambda: ClusterDns(a.work, binary, "clusterdns", objects=objects, ttl=ttl)

    if "verify" in phases:
        say("phase verify: knot vs clusterdns answers", log)
        srv = start_all([auth_peer("knot-1w"), cdns_auth], checks_of, log)
        try:
            z2o = import_file("zone_to_objects", os.path.join(HERE, "zone_to_objects.py"))
            with open(os.path.join(a.work, "verify.txt"), "w") as out:
                bad, explained = z2o.verify(srv[0].port, srv[1].port,
                                            [os.path.join(qd, f"{f}.txt") for f in ("hits", "misses", "mix")],
                                            a.verify_sample, out=out)
            with open(os.path.join(a.work, "verify.txt")) as f:
                text = f.read()
            print(text, end="")
            log.write(text)
            results["verify"] = {"queries": 3 * 2 * a.verify_sample, "mismatches": len(bad),
                                 "explained_tc": len(explained),
                                 "examples": [" ".join(map(str, b[:3])) + ": " + "; ".join(b[3])
                                              for b in bad[:10]],
                                 "explained_example": explained[0][1] if explained else None}
        finally:
            for s in srv:
                s.stop()
        save(a, results)

    if "auth" in phases:
        say("phase auth: knot-1w vs clusterdns, UDP", log)
        srv = start_all([auth_peer("knot-1w"), cdns_auth], checks_of, log)
        try:
            run_phase("auth", srv, ["hits", "misses", "mix"], a, qd, raw, log, results)
        finally:
            for s in srv:
                s.stop()

    if "tcp" in phases:
        kinds = (["bind-n1"] if shutil.which("named") else []) + ["knot-1w"]
        if not shutil.which("named"):
            results["notes"].append("bind (named) not installed: TCP compared with knot-1w only")
        say(f"phase tcp: {', '.join(kinds)} vs clusterdns, hits over TCP", log)
        srv = start_all([auth_peer(k) for k in kinds] + [cdns_auth], checks_of, log)
        try:
            run_phase("tcp", srv, ["hits"], a, qd, raw, log, results, mode="tcp")
        finally:
            for s in srv:
                s.stop()

    if "cache" in phases:
        say("phase cache: unbound vs clusterdns as caching forwarders in front of knot-1w", log)
        up = peers.Server(a.work, "knot-1w", zdir, ZONES, label="upstream-knot")
        srv = []
        try:
            up.ready(checks_ref)
            say(f"upstream knot-1w on port {up.port} (pinned to CPU 0 too)", log)
            fwd_check = [("kubernetes.default.svc.cluster.local", "A")]
            kinds = []
            if shutil.which("unbound"):
                kinds.append(lambda: peers.Server(a.work, "unbound", upstream=up.port, label="unbound"))
            else:
                results["notes"].append("unbound not installed: no cache peer")
            kinds.append(lambda: ClusterDns(a.work, binary, "clusterdns-cache", upstream=up.port))
            for make in kinds:
                s = make()
                try:
                    secs = peers.wait_ready(s.proc, s.port, fwd_check, timeout=20)
                    peers.remember_tree(s.proc.pid)
                except RuntimeError as e:
                    st, out = peers.query(s.port, *fwd_check[0])
                    msg = (f"{s.label} does not answer as a forwarder ({st or e}) for "
                           f"{fwd_check[0][0]}: left out of the cache phase")
                    say(msg, log)
                    results["notes"].append(msg)
                    s.stop()
                    continue
                s.mem_ready = peers.mem_of(s.proc.pid)
                s.ready_s = secs
                s.escapes = peers.affinity_escapes(s.proc.pid)
                say(f"{s.label}: port {s.port} ready in {secs:.1f}s "
                    f"rss={s.mem_ready['rss_kib']}KiB threads={s.mem_ready['threads']}", log)
                srv.append(s)
            if srv:
                run_phase("cache", srv, ["cache-hits", "cache-mix"], a, qd, raw, log, results,
                          warmup=True, upstream=up)
        finally:
            for s in srv:
                s.stop()
            up.stop()

    results["finished"] = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    results["elapsed_s"] = round(time.time() - T0)
    save(a, results)
    md = report(results)
    with open(os.path.join(a.work, "results.md"), "w") as f:
        f.write(md)
    print("\n" + md)


# ---------------------------------------------------------------- report
def report(R):
    L = []
    z = R["zone"]
    L.append(f"## clusterdns load benchmark, {R['started']}\n")
    L.append(f"{R['machine']}; zone: {z.get('records_total')} records ({z.get('services')} "
             f"services, {z.get('headless')} headless x {z.get('endpoints')} endpoints, "
             f"{z.get('namespaces')} namespaces, scale {R['scale']}); dnsperf `-c 4 -q 200` pinned "
             f"to CPU 1, every server pinned to CPU 0; {R['repeat']} runs x {R['secs']} s per "
             f"file, median; QUIET_MAX={R.get('quiet_max')}{qm_note(R)}; took {R.get('elapsed_s', '?')} s.\n")
    L.append("| phase | server | file | median QPS | runs min/max kQPS | lost | rcodes % | "
             "cpu_server % | µs CPU0/query | proc µs/query | cpu_client % | "
             "clusterdns/peer QPS | clusterdns/peer µs/q | noisy |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    odd = []
    for ph, servers in R["phases"].items():
        cd = next((v for k, v in servers.items() if k.startswith("clusterdns")), None)
        for label, s in servers.items():
            if label.startswith("_"):
                continue
            for test, r in s["files"].items():
                ratio_q = ratio_c = "—"
                if cd and s is not cd and test in cd["files"]:
                    c = cd["files"][test]
                    # (parentheses): a noisy row on either side, not to be trusted
                    o, e = ("(", ")") if int(c["noisy"]) or int(r["noisy"]) else ("", "")
                    ratio_q = f"{o}{c['median_qps'] / r['median_qps']:.2f}{e}" if r["median_qps"] else "-"
                    ratio_c = (f"{o}{c['us_per_q'] / r['us_per_q']:.2f}{e}"
                               if c.get("us_per_q") and r.get("us_per_q") else "-")
                rc = r.get("rcodes", "")
                L.append(f"| {ph} | {label} | {test} | {r['median_qps']} | "
                         f"{min(r['runs'])/1000:.1f} / {max(r['runs'])/1000:.1f} | {r['lost']} | "
                         f"{rc.replace(',', ' ')} | {r['cpu_server']} | {fmt(r.get('us_per_q'), 2)} | "
                         f"{'~' if r.get('proc_approx') and r.get('proc_us_per_q') else ''}{fmt(r.get('proc_us_per_q'), 2)} | {r['cpu_client']} | {ratio_q} | "
                         f"{ratio_c} | {r['noisy']} |")
                if int(r["lost"]):
                    odd.append(f"{ph}/{label}/{test}: {r['lost']} queries lost")
                if r.get("odd_rcodes"):
                    odd.append(f"{ph}/{label}/{test}: rcodes {', '.join(r['odd_rcodes'])}")
                if int(r["noisy"]):
                    odd.append(f"{ph}/{label}/{test}: {r['noisy']} noisy runs (background load)")
        # rcode mix must agree between the servers of a phase
        for label, s in servers.items():
            if label.startswith("_") or s is cd or not cd:
                continue
            for test, r in s["files"].items():
                c = cd["files"].get(test)
                if c and rc_map(c.get("rcodes")) and rc_map(r.get("rcodes")):
                    a, b = rc_map(r["rcodes"]), rc_map(c["rcodes"])
                    diff = max(abs(a.get(k, 0) - b.get(k, 0)) for k in set(a) | set(b))
                    if diff > 0.5:
                        odd.append(f"{ph}/{test}: rcodes differ, {label} {r['rcodes']} vs "
                                   f"clusterdns {c['rcodes']}")
    L.append("\n### Memory and threads (sum over each server's processes)\n")
    L.append("| phase | server | threads | ready in | RSS after start | RSS after load | "
             "upstream CPU ms per file |")
    L.append("|---|---|---|---|---|---|---|")
    for ph, servers in R["phases"].items():
        for label, s in servers.items():
            if label.startswith("_"):
                continue
            up = ", ".join(f"{t}: {r['upstream_cpu_ms']}" for t, r in s["files"].items()
                           if "upstream_cpu_ms" in r) or "-"
            L.append(f"| {ph} | {label} | {s['threads']} | {s['ready_s']:.1f} s | "
                     f"{s['rss_ready_kib']/1024:.1f} MiB | {s.get('rss_after_kib', 0)/1024:.1f} MiB | {up} |")
            if s.get("affinity_escapes"):
                odd.append(f"{ph}/{label}: threads not pinned to CPU 0: {s['affinity_escapes']}")
    v = R.get("verify")
    if v:
        L.append(f"\nVerify: {v['queries']} queries (hits/misses/mix sample, TCP and UDP) "
                 f"compared between knot and clusterdns: {v['mismatches']} mismatches"
                 + (f"; {v['explained_tc']} UDP answers knot truncates (TC, empty answer, no "
                    f"EDNS) that clusterdns fits whole in 512 bytes, e.g. `{v['explained_example']}`"
                    if v["explained_tc"] else "") + ".")
        for e in v["examples"]:
            odd.append(f"verify mismatch: {e}")
    if odd or R["notes"]:
        L.append("\n### Odd things seen\n")
        for n in R["notes"] + odd:
            L.append(f"- {n}")
    L.append("\n### Versions\n")
    for k, val in R["versions"].items():
        L.append(f"- {k}: {val}")
    L.append("\nColumns: `cpu_server %` is CPU 0 busy (the server's CPU, kernel included) per run; "
             "`µs CPU0/query` = cpu_server % x 10000 / QPS, median over runs; `proc µs/query` = "
             "the server process's own user+sys time / completed queries (not for warm-up runs); "
             "ratios are clusterdns ÷ that peer (QPS: > 1 is faster; µs/q: < 1 is cheaper), in "
             "parentheses when either row had noisy runs.")
    return "\n".join(L) + "\n"


def qm_note(R):
    used = [r.get("quiet_max") for s in R["phases"].values() for v in s.values()
            if isinstance(v, dict) for r in v.get("files", {}).values()]
    used = [u for u in used if u is not None]
    lo = min(used) if used else None
    return f" (down to {lo} s for late runs, --budget)" if lo is not None and str(lo) != str(R.get("quiet_max")) else ""


def rc_map(s):
    out = {}
    for item in (s or "").split(","):
        if ":" in item:
            k, v = item.split(":", 1)
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


if __name__ == "__main__":
    main()
