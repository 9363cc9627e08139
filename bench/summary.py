#!/usr/bin/env python3
"""Helpers of scripts/bench for qmsbench RESULT lines (JSON).

  summary.py append RESULTS.jsonl SCENARIO SYSTEM LABEL LOADAVG COMMAND JSON
  summary.py line JSON                 one-line digest on stdout
  summary.py check RESULTS.jsonl       --quick: exit 1 if anything failed or was lost
  summary.py drop RESULTS.jsonl a,b    remove the records of these scenarios
  summary.py combine RESULTS.jsonl SCENARIO SYSTEM LABEL LOADAVG WINDOW OUT...
      appends one record adding up the RESULT lines of several qmsbench
      processes that measured one window (OUT: their outputs; WINDOW: JSON
      with the servers' CPU over the window, read by scripts/bench)
  summary.py profile TAG PIDS ROLES RATE STAT BYTHREAD BYSYMBOL TASKS
      the text of one profile of scripts/bench (QMS_BENCH_PROFILE): perf
      stat's counts per second and per message at RATE msg/s, the samples
      per process (ROLES names PIDS, in order; TASKS: "pid tid" lines) and
      per thread, then the top of the report per symbol
  summary.py report RESULTS.jsonl OUT.md DOCDIR
      writes the generated part of OUT.md (between the markers below; the
      rest of the file is kept) and DOCDIR/latency.png (gnuplot)
"""
import json
import math
import os
import subprocess
import sys

BEGIN = "<!-- bench:generated:begin (scripts/bench rewrites this part) -->"
END = "<!-- bench:generated:end -->"


def g(r, path, default=0):
    """r["a"]["b"] for path "a.b", or default."""
    for k in path.split("."):
        if not isinstance(r, dict) or k not in r:
            return default
        r = r[k]
    return r


def append(path, scen, system, label, load, cmd, text):
    try:
        r = json.loads(text) if text.strip() else {}
    except ValueError:
        r = {"unparsed": text[:200]}
    rec = {"scenario": scen, "system": system, "label": label, "loadavg": load}
    if cmd:
        rec["command"] = cmd
    rec.update(r)
    with open(path, "a") as f:
        f.write(json.dumps(rec, separators=(",", ":")) + "\n")


def digest(r):
    if not r:
        return "no result"
    parts = ["%s %s" % (r.get("proto", "?"), r.get("mode", "?")),
             "conn %d/%d" % (g(r, "connections.ok"), g(r, "config.clients")),
             "login %d" % g(r, "login.ok")]
    if "messages" in r:
        parts.append("delivered %d lost %d" % (g(r, "messages.delivered"), g(r, "messages.lost")))
        parts.append("%.0f msg/s" % g(r, "throughput.delivered_per_s"))
        parts.append("p99 %.3f ms" % g(r, "latency_ms.p99"))
    if "resume" in r:
        parts.append("resumed %d (%.0f/s)" % (g(r, "resume.ok"), g(r, "resume.per_s")))
    if "stored_drain" in r:
        parts.append("drained %d/%d in %.2f s" % (g(r, "stored_drain.received"), g(r, "stored_drain.expected"),
                                                  g(r, "stored_drain.seconds_from_first_connect")))
    if "combined" in r:
        parts.append("%d processes, server CPU %.2f s over %.2f s" % (
            g(r, "combined.processes"), g(r, "combined.server_cpu_s"), g(r, "combined.window_s")))
    elif "server" in r:
        parts.append("server RSS %.1f KiB/conn" % g(r, "server.rss_per_connection_kib"))
    parts.append("bench CPU %.0f%%" % (100 * g(r, "bench.cpu_s") / g(r, "bench.run_s", 1) if g(r, "bench.run_s") else 0))
    return ", ".join(parts)


def hist_quantiles(hists):
    """Merges latency_hist objects of RESULT lines ([value ns, count] per
    bucket, the value qmsbench reports for the bucket) and returns the
    latency_ms object qmsbench would print for one run holding them all:
    the same rank rule (ceil(q * count)), values capped at the largest max."""
    counts = {}
    total = 0
    top = 0
    ssum = 0
    for h in hists:
        top = max(top, h.get("max_ns", 0))
        ssum += h.get("sum_ns", 0)
        for v, c in h.get("buckets", []):
            counts[v] = counts.get(v, 0) + c
            total += c
    out = {"count": total}
    if not total:
        for k in ("p50", "p90", "p99", "p999", "max", "mean"):
            out[k] = 0
        return out
    vals = sorted(counts)
    for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)):
        rank = max(1, math.ceil(q * total))
        seen = 0
        for v in vals:
            seen += counts[v]
            if seen >= rank:
                out[name] = min(v, top) / 1e6
                break
    out["max"] = top / 1e6
    out["mean"] = ssum / total / 1e6
    return out


def combine(path, scen, system, label, load_, window, outs):
    """One record for several qmsbench processes that measured one window:
    counts added up, latency from the merged histograms, the servers' CPU
    and the window's length as scripts/bench read them (bench.run_s is that
    window, so the (i) arithmetic applies unchanged)."""
    win = json.loads(window)
    rs = []
    for o in outs:
        r = {}
        try:
            with open(o) as f:
                for line in f:
                    if line.startswith("RESULT "):
                        r = json.loads(line[7:])
        except (OSError, ValueError):
            r = {}
        rs.append(r)
    ok = [r for r in rs if "tool" in r]
    rec = {"scenario": scen, "system": system, "label": label, "loadavg": load_}
    rec["tool"] = "qmsbench x%d (combined)" % len(rs)
    rec["combined"] = {"processes": len(rs), "results": len(ok), "window_s": win["window_s"],
                       "server_cpu_s": win["server_cpu_s"], "pids": win["pids"],
                       "go_wait_s_max": max([g(r, "sync.go_wait_s") for r in ok] or [0])}
    if not ok:
        rec["missing_results"] = len(rs)
        with open(path, "a") as f:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        return
    first = ok[0]

    def total(key):
        return sum(g(r, key) for r in ok)

    def most(key):
        return max(g(r, key) for r in ok)

    rec["proto"] = first.get("proto")
    rec["mode"] = first.get("mode")
    rec["config"] = dict(first.get("config", {}))
    rec["config"].update({"clients": total("config.clients"), "rate": total("config.rate"),
                          "source_addrs": total("config.source_addrs")})
    rec["connections"] = {k: total("connections." + k) for k in ("ok", "failed", "not_started", "held_at_end")}
    rec["login"] = {k: total("login." + k) for k in ("ok", "failed", "registered", "existing", "retries")}
    rec["login"]["seconds"] = most("login.seconds")
    rec["login"]["per_s"] = rec["login"]["ok"] / rec["login"]["seconds"] if rec["login"]["seconds"] else 0
    rec["ready"] = {"ready": total("ready.ready"), "missing": total("ready.missing"),
                    "started": all(g(r, "ready.started", False) for r in ok)}
    if "messages" in first:
        m = {k: total("messages." + k) for k in (
            "sent", "delivered", "lost", "rejected", "silently_lost", "duplicated", "late", "out_of_order",
            "misrouted", "foreign", "sender_mismatch", "window_stalls", "presumed_lost_on_stall", "senders")}
        m["drained"] = all(g(r, "messages.drained", False) for r in ok)
        m["per_sender_delivered_min"] = min(g(r, "messages.per_sender_delivered_min") for r in ok)
        m["per_sender_delivered_max"] = most("messages.per_sender_delivered_max")
        rec["messages"] = m
        rec["throughput"] = {"delivered_per_s": total("throughput.delivered_per_s"),
                             "interval_s": most("throughput.interval_s"),
                             "sent_per_s": total("throughput.sent_per_s"),
                             "send_interval_s": most("throughput.send_interval_s")}
        rec["latency_ms"] = hist_quantiles([r.get("latency_hist", {}) for r in ok])
        rec["latency_ms"]["merged_from"] = "histograms of %d processes" % len(ok)
    rec["server"] = {"pids": win["pids"], "sampled": len(ok) == len(rs) and all(g(r, "server.sampled", False) for r in ok),
                     "cpu_s": win["server_cpu_s"], "cpu_s_read_by": "scripts/bench, over the window",
                     "rss_kib": most("server.rss_kib"),
                     "connect_phase_cpu_s": most("server.connect_phase_cpu_s")}
    rec["bench"] = {"cpu_s": total("bench.cpu_s"), "run_s": win["window_s"],
                    "connect_phase_s": most("bench.connect_phase_s"),
                    "connect_phase_cpu_s": total("bench.connect_phase_cpu_s"),
                    "bytes_in": total("bench.bytes_in"), "bytes_out": total("bench.bytes_out")}
    rec["server_errors_total"] = total("server_errors_total")
    rec["errors"] = [e for r in ok for e in r.get("errors", [])]
    rec["timed_out"] = any(r.get("timed_out") for r in ok)
    rec["interrupted"] = any(r.get("interrupted") for r in ok)
    if len(ok) < len(rs):
        rec["missing_results"] = len(rs) - len(ok)
    with open(path, "a") as f:
        f.write(json.dumps(rec, separators=(",", ":")) + "\n")


def load(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def problems(r):
    """What went wrong in one run (empty: nothing)."""
    p = []
    if "tool" not in r:
        return ["no RESULT"]
    if r.get("missing_results"):
        p.append("%d bench processes gave no RESULT" % r["missing_results"])
    n = g(r, "config.clients")
    if g(r, "connections.failed"):
        p.append("%d connections failed" % g(r, "connections.failed"))
    if g(r, "login.failed"):
        p.append("%d logins failed" % g(r, "login.failed"))
    if g(r, "ready.missing"):
        p.append("%d clients not ready" % g(r, "ready.missing"))
    if g(r, "connections.held_at_end") < n and r.get("mode") != "expect-stored":
        p.append("%d of %d connections held at the end" % (g(r, "connections.held_at_end"), n))
    if "messages" in r:
        m = r["messages"]
        if not m.get("sent"):
            p.append("nothing sent")
        for k in ("lost", "duplicated", "misrouted", "foreign", "sender_mismatch"):
            if m.get(k):
                p.append("%s %d" % (k, m[k]))
    if g(r, "acks.rejected"):
        p.append("%d acks rejected" % g(r, "acks.rejected"))
    if "resume" in r and (g(r, "resume.failed") or g(r, "resume.ok") < g(r, "resume.sessions")):
        p.append("resumed %d of %d" % (g(r, "resume.ok"), g(r, "resume.sessions")))
    if "stored_drain" in r and g(r, "stored_drain.received") < g(r, "stored_drain.expected"):
        p.append("drained %d of %d" % (g(r, "stored_drain.received"), g(r, "stored_drain.expected")))
    if r.get("timed_out"):
        p.append("timed out")
    if r.get("server_errors_total"):
        p.append("%d server errors: %s" % (r["server_errors_total"], r.get("errors")))
    return p


def check(path):
    recs = [r for r in load(path) if r.get("scenario") == "quick"]
    passed = failed = 0
    for r in recs:
        p = problems(r)
        print("%-10s %s %s" % (r["label"], "FAIL" if p else "ok  ", "; ".join(p) if p else digest(r)))
        if p:
            failed += 1
        else:
            passed += 1
    if not recs:
        failed = 1
    print("bench quick: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


# --- the report --------------------------------------------------------------

def f0(x):
    return "{:,.0f}".format(x)


def f1(x):
    return "{:,.1f}".format(x)


def f2(x):
    return "{:,.2f}".format(x)


def f3(x):
    return "{:,.3f}".format(x)


def load1(r):
    la = r.get("loadavg", "")
    if isinstance(la, list):
        la = " ".join(la)
    return la.split(" ")[0] if la else "?"


def cpu_pct(r, who):
    run = g(r, "bench.run_s")
    return 100.0 * g(r, who + ".cpu_s") / run if run else 0.0


def ratio(a, b):
    return "%.2f" % (a / b) if b else "-"


class Report:
    def __init__(self, recs):
        self.recs = recs
        self.lines = []

    def w(self, s=""):
        self.lines.append(s)

    def runs(self, scen, system, label):
        return [r for r in self.recs if r.get("scenario") == scen and r.get("system") == system
                and r.get("label") == label and "tool" in r]

    def best(self, scen, system, label, key, low=False):
        rs = self.runs(scen, system, label)
        if not rs:
            return None
        return sorted(rs, key=lambda r: g(r, key), reverse=not low)[0]

    def notes(self, scen, label):
        return [r for r in self.recs if r.get("scenario") == scen and r.get("label") == label and "tool" not in r]


def render(recs, docdir, results_name):
    R = Report(recs)
    w = R.w
    metas = [r for r in recs if r.get("scenario") == "meta"]
    meta = metas[-1] if metas else {}
    targets = []   # (target, figure, met, note)

    w(BEGIN)
    w()
    w("## Machine and versions")
    w()
    w("| | |")
    w("|---|---|")
    w("| date | %s |" % meta.get("date", "?"))
    w("| CPU | %s × `nproc` = %s |" % (meta.get("cpu", "?"), meta.get("nproc", "?")))
    w("| kernel | %s |" % meta.get("kernel", "?"))
    w("| load at start | `%s` |" % meta.get("uptime", "?"))
    w("| our server | commit %s (%s files changed in the work tree), Release (-O2), %s, libwebsockets %s, CZMQ %s, libzmq %s |"
      % (meta.get("commit", "?"), meta.get("dirty", "?"), meta.get("gcc", "?"), meta.get("lws", "?"),
         meta.get("czmq", "?"), meta.get("zmq", "?")))
    w("| NATS | %s (Debian package), WebSocket listener, no TLS |" % meta.get("nats", "?"))
    w("| descriptors per process | %s |" % meta.get("fdmax", "?"))
    w()
    if len(metas) > 1 or (meta and meta.get("scenarios")):
        w("Runs of `scripts/bench` whose figures are below (a later `--only` run replaces its scenarios):")
        w()
        for m in metas:
            w("- %s: scenarios %s, commit %s (%s files changed), load at start `%s`" % (
                m.get("date", "?"), m.get("scenarios", "all"), m.get("commit", "?"), m.get("dirty", "?"),
                m.get("uptime", "?").split("load average: ")[-1]))
        w()
    w("`free -h`:")
    w()
    w("```")
    w(meta.get("free", "?"))
    w("```")
    w()
    w("Raw RESULT lines of this run: [`bench/%s`](bench/%s) (one JSON object per run, with the "
      "scenario, the exact command and the load average when it started)." % (results_name, results_name))
    w()

    # (a) throughput
    if R.runs("a", "ours", "1000 clients") or R.runs("a", "ours", "100 clients"):
        w("## (a) Throughput: as fast as the windows allow (window 16, 64-byte messages, 10 s)")
        w()
        w("Best of two runs each, alternating ours/NATS. *Delivered* counts each message once, at the receiver.")
        w()
        w("| clients | ours msg/s | NATS msg/s | ours/NATS | lost (ours/NATS) | p99 ms (ours/NATS) | server CPU % (ours/NATS) | bench CPU % | load1 |")
        w("|---|---|---|---|---|---|---|---|---|")
        for n in (1000, 100):
            o = R.best("a", "ours", "%d clients" % n, "throughput.delivered_per_s")
            t = R.best("a", "nats", "%d clients" % n, "throughput.delivered_per_s")
            if not o:
                continue
            od, td = g(o, "throughput.delivered_per_s"), g(t, "throughput.delivered_per_s") if t else 0
            w("| %d | %s | %s | %s | %d / %s | %s / %s | %.0f / %s | %.0f / %s | %s / %s |" % (
                n, f0(od), f0(td) if t else "-", ratio(od, td), g(o, "messages.lost"),
                g(t, "messages.lost") if t else "-", f2(g(o, "latency_ms.p99")), f2(g(t, "latency_ms.p99")) if t else "-",
                cpu_pct(o, "server"), "%.0f" % cpu_pct(t, "server") if t else "-",
                cpu_pct(o, "bench"), "%.0f" % cpu_pct(t, "bench") if t else "-", load1(o), load1(t) if t else "-"))
            lost_any = sum(g(r, "messages.lost") for r in R.runs("a", "ours", "%d clients" % n))
            if n == 1000:
                targets.append(("(a) ≥ 100,000 delivered msg/s with no loss (1,000 clients)", f0(od) + " msg/s, lost %d" % lost_any,
                                od >= 100000 and lost_any == 0, "%+.0f%%" % (100 * (od / 100000 - 1))))
            if t:
                targets.append(("(a) ours ≥ NATS at %d clients" % n, "%s vs %s msg/s" % (f0(od), f0(td)),
                                od >= td, "ours/NATS = %s" % ratio(od, td)))
        w()
        w("All runs:")
        w()
        w("| clients | system | delivered msg/s | lost | p50 / p99 ms | server CPU % | bench CPU % | load1 | connect phase s | MB to the bench |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for lab in ("1000 clients", "100 clients", "1000 clients, presence full"):
            for s in ("ours", "nats"):
                for r in R.runs("a", s, lab):
                    w("| %s | %s | %s | %d | %s / %s | %.0f | %.0f | %s | %s | %s |" % (
                        lab.replace(" clients", ""), s, f0(g(r, "throughput.delivered_per_s")), g(r, "messages.lost"),
                        f2(g(r, "latency_ms.p50")), f2(g(r, "latency_ms.p99")), cpu_pct(r, "server"),
                        cpu_pct(r, "bench"), load1(r), f1(g(r, "bench.connect_phase_s")),
                        f0(g(r, "bench.bytes_in") / 1e6)))
        w()
        w("The connect phase of ours includes registering or logging in with Argon2id (defaults); NATS has no "
          "login. *MB to the bench*: bytes the server sent over the whole run (a MessageEvent carries the "
          "sender's id, a message id and a timestamp: about 200 bytes for a 64-byte message; NATS's MSG about 90).")
        w()

    # (b) latency
    rates = (10000, 20000, 50000)
    if any(R.runs("b", "ours", "%d msg/s" % x) for x in rates):
        w("## (b) Latency at fixed offered load (1,000 clients)")
        w()
        w("One-way latency (sender's clock to receiver's, same process, CLOCK_MONOTONIC). "
          "Best of two = the run with the lower p99. Chart: [`bench/latency.png`](bench/latency.png).")
        w()
        w("| offered msg/s | system | achieved msg/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | lost | server CPU % | load1 |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        dat = []
        for x in rates:
            row = [x / 1000.0]
            for s in ("ours", "nats"):
                r = R.best("b", s, "%d msg/s" % x, "latency_ms.p99", low=True)
                if not r:
                    row += [float("nan")] * 4
                    continue
                w("| %s | %s | %s | %s | %s | %s | %s | %s | %d | %.0f | %s |" % (
                    f0(x), s, f0(g(r, "throughput.delivered_per_s")), f3(g(r, "latency_ms.p50")),
                    f3(g(r, "latency_ms.p90")), f3(g(r, "latency_ms.p99")), f3(g(r, "latency_ms.p999")),
                    f2(g(r, "latency_ms.max")), g(r, "messages.lost"), cpu_pct(r, "server"), load1(r)))
                row += [g(r, "latency_ms.p50"), g(r, "latency_ms.p90"), g(r, "latency_ms.p99"), g(r, "latency_ms.p999")]
            dat.append(row)
        o = R.best("b", "ours", "20000 msg/s", "latency_ms.p99", low=True)
        t = R.best("b", "nats", "20000 msg/s", "latency_ms.p99", low=True)
        if o:
            p99 = g(o, "latency_ms.p99")
            targets.append(("(b) p99 ≤ 5 ms at 20k msg/s", "%s ms (NATS %s ms)" % (f3(p99), f3(g(t, "latency_ms.p99")) if t else "-"),
                            p99 <= 5.0, "%.1fx the bound" % (p99 / 5.0)))
        w()
        chart(dat, docdir)

    # (c) capacity
    cap = [r for r in recs if r.get("scenario") == "c" and "tool" not in r and "rss_kib" in r]
    if cap:
        w("## (c) Capacity: idle logged-in connections")
        w()
        w("Connections counted with `ss` (established, server side) while every bench process held its share; "
          "RSS summed over the server processes named. The capacity runs use `--argon2-memory 256 "
          "--argon2-iterations 1` (benchmark-only) so that 100,000 registrations take minutes, not hours. "
          "RSS counts the pages of the shared libraries in every process that maps them, so over several "
          "processes of one program it counts them several times; *PSS* (`/proc/PID/smaps_rollup`) shares "
          "each page among the processes that map it, and is what the machine spends.")
        w()
        w("| system | connections | server RSS | KiB per connection | all server processes, KiB per connection "
          "| PSS KiB per connection (processes named; all) | load1 | waited s |")
        w("|---|---|---|---|---|---|---|---|")
        best = {}
        for r in cap:
            n = r.get("connections_established", 0)
            per = r["rss_kib"] / n if n else 0
            per_all = r.get("rss_all_server_kib", 0) / n if n else 0
            pss = ("%s; %s" % (f2(r["pss_kib"] / n), f2(r.get("pss_all_server_kib", 0) / n))
                   if n and "pss_kib" in r else "-")
            best[r["label"]] = (n, per, per_all)
            w("| %s %s | %s | %s MiB | %s | %s | %s | %s | %s |" % (
                r["system"], r["label"], f0(n), f1(r["rss_kib"] / 1024.0), f2(per), f2(per_all), pss, load1(r),
                r.get("load_wait_s", "?")))
        w()
        w("Per bench process (its own view; RSS of the process it was given):")
        w()
        w("| system | run | held | logins/s | login p99 ms | failed | server RSS KiB/conn | growth KiB/conn |")
        w("|---|---|---|---|---|---|---|---|")
        for r in [r for r in recs if r.get("scenario") == "c" and "tool" in r]:
            w("| %s | %s | %s | %s | %s | %d | %s | %s |" % (
                r["system"], r["label"], f0(g(r, "connections.held_at_end")), f0(g(r, "login.per_s")),
                f0(g(r, "login.latency_p99_ms")), g(r, "connections.failed") + g(r, "login.failed"),
                f2(g(r, "server.rss_per_connection_kib")), f2(g(r, "server.rss_growth_per_connection_kib"))))
        w()
        cl = [v for k, v in best.items() if k.startswith("cluster")]
        one = [v for k, v in best.items() if k.startswith("all-in-one")]
        nat = [v for k, v in best.items() if k.startswith("one process")]
        if cl:
            n, per, per_all = cl[0]
            targets.append(("(c) 100,000 connections at ≤ 8 KiB server RSS each", "%s connections, %s KiB each (gateways; %s with router/store/auth)"
                            % (f0(n), f2(per), f2(per_all)), n >= 100000 and per_all <= 8.0,
                            "%.0f%% of the connections, %.1fx the memory bound" % (100.0 * n / 100000, per_all / 8.0)))
        if one and nat:
            targets.append(("(c) ≤ 0.5× NATS's RSS per connection (one process each, same count)",
                            "%s vs %s KiB" % (f2(one[0][1]), f2(nat[0][1])), one[0][1] <= 0.5 * nat[0][1],
                            "ours/NATS = %s" % ratio(one[0][1], nat[0][1])))

    # (d) logins and resume
    if R.runs("d", "ours", "login 1000 (Argon2id defaults)") or R.runs("d", "ours", "resume 10000"):
        w("## (d) Logins (Argon2id defaults) and session resume")
        w()
        w("Register and login hash the password with Argon2id (19 MiB, 2 passes: about 18 ms per hash per core), "
          "on the auth actor's 2 worker threads, so on 2 cores logins are KDF-bound near 100/s: "
          "that is the design, not a fault. A resume (`AuthorizeRequest` with the session token, on a new "
          "connection: TCP, WebSocket upgrade, Authorize) hashes nothing.")
        w()
        w("| what | ok | failed | seconds | per s | latency p50 / p99 ms | retries | load1 |")
        w("|---|---|---|---|---|---|---|---|")
        for lab in ("register 1000 (Argon2id defaults)", "login 1000 (Argon2id defaults)",
                    "register 10000 (Argon2id defaults)", "login 10000 (Argon2id defaults)"):
            for r in R.runs("d", "ours", lab):
                w("| ours: %s | %s | %d | %s | %s | %s / %s | %d | %s |" % (
                    lab, f0(g(r, "login.ok")), g(r, "login.failed") + g(r, "connections.failed"), f2(g(r, "login.seconds")),
                    f1(g(r, "login.per_s")), f0(g(r, "login.latency_p50_ms")), f0(g(r, "login.latency_p99_ms")),
                    g(r, "login.retries"), load1(r)))
        for r in R.runs("d", "ours", "resume 10000"):
            w("| ours: resume 10000 (reconnect + Authorize) | %s | %d | %s | %s | %s / %s | - | %s |" % (
                f0(g(r, "resume.ok")), g(r, "resume.failed"), f3(g(r, "resume.seconds")), f0(g(r, "resume.per_s")),
                f1(g(r, "resume.latency_p50_ms")), f1(g(r, "resume.latency_p99_ms")), load1(r)))
        for r in R.runs("d", "nats", "connect 10000"):
            w("| NATS: connect 10000 (CONNECT, SUB, PING/PONG) | %s | %d | %s | %s | %s / %s | - | %s |" % (
                f0(g(r, "login.ok")), g(r, "login.failed") + g(r, "connections.failed"), f3(g(r, "login.seconds")),
                f0(g(r, "login.per_s")), f1(g(r, "login.latency_p50_ms")), f1(g(r, "login.latency_p99_ms")), load1(r)))
        w()
        rb = R.best("d", "ours", "resume 10000", "resume.per_s")
        if rb:
            x = g(rb, "resume.per_s")
            targets.append(("(d) ≥ 10,000 authorizations/s", f0(x) + "/s (10,000 sessions)", x >= 10000,
                            "%.0f%% of the target" % (100 * x / 10000)))
        lb = R.best("d", "ours", "login 1000 (Argon2id defaults)", "login.per_s")
        rg = R.best("d", "ours", "register 1000 (Argon2id defaults)", "login.per_s")
        if lb:
            worst = max(g(lb, "login.seconds"), g(rg, "login.seconds") if rg else 0)
            targets.append(("(d) 1,000 clients logged in within 30 s, Argon2id defaults",
                            "login %s s, register %s s" % (f1(g(lb, "login.seconds")), f1(g(rg, "login.seconds")) if rg else "-"),
                            worst <= 30 and not g(lb, "login.failed"), "%.0f%% of the budget" % (100 * worst / 30)))

    # (e) cluster
    if R.runs("e", "ours", "1 gateway"):
        w("## (e) Cluster: throughput vs gateways (1,000 clients, window 16)")
        w()
        w("`scripts/local-cluster`: store, auth, router and N gateway processes on loopback. With 2 gateways "
          "client *i* connects to gateway *i % 2*, so every message crosses from one gateway to the other "
          "through the router. Server CPU is summed over the gateways, router, store and auth.")
        w()
        w("| gateways | delivered msg/s | lost | p50 / p99 ms | server CPU % | bench CPU % | load1 |")
        w("|---|---|---|---|---|---|---|")
        for lab in ("1 gateway", "2 gateways"):
            r = R.best("e", "ours", lab, "throughput.delivered_per_s")
            if r:
                w("| %s | %s | %d | %s / %s | %.0f | %.0f | %s |" % (
                    lab, f0(g(r, "throughput.delivered_per_s")), g(r, "messages.lost"), f2(g(r, "latency_ms.p50")),
                    f2(g(r, "latency_ms.p99")), cpu_pct(r, "server"), cpu_pct(r, "bench"), load1(r)))
        a = R.best("a", "ours", "1000 clients", "throughput.delivered_per_s")
        if a:
            w("| all-in-one (a) | %s | %d | %s / %s | %.0f | %.0f | %s |" % (
                f0(g(a, "throughput.delivered_per_s")), g(a, "messages.lost"), f2(g(a, "latency_ms.p50")),
                f2(g(a, "latency_ms.p99")), cpu_pct(a, "server"), cpu_pct(a, "bench"), load1(a)))
        w()

    # (f) ping-pong
    if R.runs("f", "ours", "ping-pong"):
        w("## (f) Ping-pong: 100 clients, one message in flight each")
        w()
        w("| system | delivered msg/s | one-way p50 ms | p90 | p99 | p99.9 | max | server CPU % | load1 |")
        w("|---|---|---|---|---|---|---|---|---|")
        o = R.best("f", "ours", "ping-pong", "latency_ms.p99", low=True)
        t = R.best("f", "nats", "ping-pong", "latency_ms.p99", low=True)
        for s, r in (("ours", o), ("nats", t)):
            if r:
                w("| %s | %s | %s | %s | %s | %s | %s | %.0f | %s |" % (
                    s, f0(g(r, "throughput.delivered_per_s")), f3(g(r, "latency_ms.p50")), f3(g(r, "latency_ms.p90")),
                    f3(g(r, "latency_ms.p99")), f3(g(r, "latency_ms.p999")), f2(g(r, "latency_ms.max")),
                    cpu_pct(r, "server"), load1(r)))
        w()
        if o:
            p99 = g(o, "latency_ms.p99")
            targets.append(("(f) ping-pong one-way p99 ≤ 2 ms", "%s ms (NATS %s ms)" % (f3(p99), f3(g(t, "latency_ms.p99")) if t else "-"),
                            p99 <= 2.0, "%.1fx the bound" % (p99 / 2.0)))
            if t:
                od = max(g(r, "throughput.delivered_per_s") for r in R.runs("f", "ours", "ping-pong"))
                td = max(g(r, "throughput.delivered_per_s") for r in R.runs("f", "nats", "ping-pong"))
                targets.append(("(f) ping-pong rate: ours ≥ NATS", "%s vs %s msg/s" % (f0(od), f0(td)), od >= td,
                                "ours/NATS = %s" % ratio(od, td)))

    # (g) store-and-forward
    if R.runs("g", "ours", "store 100x1000"):
        w("## (g) Store-and-forward (ours only: NATS core has no store)")
        w()
        w("Messages with ids to registered users who are offline: each is committed to SQLite (fsynced) before "
          "its `stored` ack; the sender's window (16) is credited by the acks, latency = send → ack. Then the "
          "recipients log in and the stored messages follow the login answer.")
        w()
        w("| step | messages | seconds | msg/s | latency p50 / p99 ms | problems | load1 |")
        w("|---|---|---|---|---|---|---|")
        for run in ("1", "2"):
            for lab in ("store 100x1000", "drain 100x1000", "store 1x10000", "drain 1x10000"):
                rs = [r for r in R.recs if r.get("scenario") == "g" and r.get("label") == lab and "tool" in r
                      and (r.get("config", {}).get("to_prefix", "") .startswith("g" + run)
                           or str(r.get("command", "")).find("--prefix g%s" % run) >= 0)]
                for r in rs:
                    p = "; ".join(problems(r)) or "none"
                    if lab.startswith("store"):
                        w("| run %s: %s (acks: %d stored) | %s | %s | %s | %s / %s | %s | %s |" % (
                            run, lab, g(r, "acks.stored"), f0(g(r, "messages.sent")),
                            f2(g(r, "throughput.interval_s")), f0(g(r, "throughput.delivered_per_s")),
                            f1(g(r, "latency_ms.p50")), f1(g(r, "latency_ms.p99")), p, load1(r)))
                    else:
                        w("| run %s: %s (login to last message; per client p50/p99) | %s | %s | %s | %s / %s | %s | %s |" % (
                            run, lab, f0(g(r, "stored_drain.received")),
                            f2(g(r, "stored_drain.seconds_from_first_connect")),
                            f0(g(r, "stored_drain.per_s_while_arriving")), f0(g(r, "stored_drain.per_client_p50_ms")),
                            f0(g(r, "stored_drain.per_client_p99_ms")), p, load1(r)))
        w()

    # (h) everyone sees everyone
    hruns = [r for r in R.recs if r.get("scenario") == "h" and "tool" in r]
    if hruns:
        w("## (h) Everyone sees everyone: the original protocol's whole user lists (ours only)")
        w()
        w("Clients of the original protocol (no `presence` field) log in and hold for 60 s; the server sends "
          "each the whole user list on every change, encoded once per push and shared by every connection, "
          "at most one list in flight per connection (docs/ROBUSTNESS.md). Peak RSS is the server's VmHWM "
          "over the run; the target is 64 MiB + 16 KiB per client.")
        w()
        w("| clients | logged in and held | last list names everyone | peak RSS | target | met? | list bytes read by the clients | connect phase s | load1 |")
        w("|---|---|---|---|---|---|---|---|---|")
        for r in hruns:
            n = g(r, "config.clients")
            peak = [x for x in R.recs if x.get("scenario") == "h" and x.get("clients") == n and "rss_peak_kib" in x]
            peak_kib = peak[-1]["rss_peak_kib"] if peak else 0
            target_kib = 64 * 1024 + 16 * n
            complete = g(r, "user_lists.clients_with_complete_last_list")
            met = peak_kib and peak_kib <= target_kib and complete == n and g(r, "connections.held_at_end") == n
            w("| %s | %s | %s | %s MiB | %s MiB | %s | %s GB | %s | %s |" % (
                f0(n), f0(g(r, "connections.held_at_end")), f0(complete), f1(peak_kib / 1024.0),
                f1(target_kib / 1024.0), "**met**" if met else "**missed**",
                f1(g(r, "bench.bytes_in") / 1e9), f1(g(r, "bench.connect_phase_s")), load1(r)))
            if n == 5000:
                targets.append(("(h) 5,000 original-protocol clients: peak RSS ≤ 64 MiB + 16 KiB each, every last list complete",
                                "%s MiB, %d of %d complete" % (f1(peak_kib / 1024.0), complete, n), bool(met),
                                "%.2fx the bound" % (peak_kib / target_kib if target_kib else 0)))
        w()

    # (i) many connections, modest rates
    iruns = [r for r in R.recs if r.get("scenario") == "i" and "tool" in r and r.get("mode") in ("idle", "duration")
             and not r.get("label", "").endswith(", register")]
    # (j): the same at 100,000 connections over several processes; the
    # records that add up the bench processes of one run (summary.py combine)
    jruns = [r for r in R.recs if r.get("scenario") == "j" and "tool" in r and "combined" in r
             and r.get("mode") in ("idle", "duration") and not r.get("label", "").endswith(", register")]
    if iruns or jruns:
        counts = sorted({int(g(r, "config.clients")) for r in iruns})
        jcounts = sorted({int(g(r, "config.clients")) for r in jruns})
        irates = sorted({int(round(g(r, "config.rate"))) for r in iruns + jruns if r.get("mode") != "idle"})
        secs = max(g(r, "config.duration_s") for r in iruns + jruns)
        w("## (i) Many connections, modest rates: server CPU per message")
        w()
        w("N clients log in, then send for %s s at a fixed total rate (client *i* to *i+1*, 64 bytes, window 16), "
          "or hold the same logins idle for as long. *CPU/msg* = (the server's CPU in the message phase − the idle "
          "run's, at its rate, over as long) / delivered messages: the message phase runs from the moment every "
          "client is ready to the last delivery (at most 2 s after sending stops), so logins and closes are not "
          "in it. *Run CPU %%* is the message phase's server CPU, *idle CPU %%* the idle run's, in %% of one core. "
          "Ours pings a connection after 30 s of silence (`--ping-interval`), NATS every 2 minutes "
          "(`ping_interval`): the idle runs are shorter, so they measure holding the connections. Ours with "
          "`--argon2-memory 256 --argon2-iterations 1` (benchmark-only; the users registered in a run before); "
          "at most 900 connections per source address. One run each, alternating ours/NATS, each server kept "
          "across the runs of one count." % f0(secs))
        w()
        if jruns:
            jp = max(g(r, "combined.processes") for r in jruns)
            w("The rows *over %d processes* are scenario (j): one process may hold %s descriptors here, so those "
              "connections are held by the %d gateways of a local cluster (with one router, store and auth) and by a "
              "cluster of %d nats-servers (each routed to all the others), and made by %d qmsbench processes, each "
              "given every server's port: client *k* of a process uses the (k %% %d)-th and sends to client *k+1*, "
              "on the next server, so every message crosses servers. The processes measure one window: each says "
              "when its clients are logged in, the run starts when all have (`--ready-file`, `--go-file`), and "
              "each holds its connections after its run until all are measured (`--done-file`). *CPU/msg* is the "
              "CPU of every server process (ours: %d gateways + router + store + auth; NATS: %d nats-servers) over "
              "that window, read by scripts/bench, minus the idle run's, over the messages all processes "
              "delivered; the percentiles are exact over all processes (their histograms merged)."
              % (jp, meta.get("fdmax", "?"), jp, jp, jp, jp, jp, jp))
            w()
        w("| connections | msg/s | ours CPU/msg µs | NATS CPU/msg µs | ours p50 / p99 / p99.9 ms | NATS p50 / p99 / p99.9 ms "
          "| ours run CPU % | NATS run CPU % | ours idle CPU % | NATS idle CPU % | lost (ours / NATS) | load1 (ours / NATS) |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")

        def last(system, label, scen="i"):
            rs = R.runs(scen, system, label)
            return rs[-1] if rs else None

        def per_msg(r, idle):
            """Server CPU per delivered message in µs above idle, or None."""
            if not r or not idle or not g(r, "server.sampled") or not g(idle, "server.sampled"):
                return None
            run, irun, n = g(r, "bench.run_s"), g(idle, "bench.run_s"), g(r, "messages.delivered")
            if not run or not irun or not n:
                return None
            return 1e6 * (g(r, "server.cpu_s") - g(idle, "server.cpu_s") * run / irun) / n

        def opt(r, fmt):
            return fmt(r) if r else "-"

        def lat(r):
            return "%s / %s / %s" % (f3(g(r, "latency_ms.p50")), f3(g(r, "latency_ms.p99")), f3(g(r, "latency_ms.p999")))

        fewest = 0
        rows = [(n, "i", f0(n)) for n in counts]
        for n in jcounts:
            procs = max(g(r, "combined.processes") for r in jruns if g(r, "config.clients") == n)
            rows.append((n, "j", "%s over %d processes" % (f0(n), procs)))
        for n, scen, nlab in rows:
            oi, ti = last("ours", "%d clients, idle" % n, scen), last("nats", "%d clients, idle" % n, scen)
            for x in irates:
                lab = "%d clients, %d msg/s" % (n, x)
                o, t = last("ours", lab, scen), last("nats", lab, scen)
                if not o and not t:
                    continue
                om, tm = per_msg(o, oi), per_msg(t, ti)
                w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s |" % (
                    nlab, f0(x), f1(om) if om is not None else "-", f1(tm) if tm is not None else "-",
                    opt(o, lat), opt(t, lat), opt(o, lambda r: f1(cpu_pct(r, "server"))),
                    opt(t, lambda r: f1(cpu_pct(r, "server"))), opt(oi, lambda r: f1(cpu_pct(r, "server"))),
                    opt(ti, lambda r: f1(cpu_pct(r, "server"))), opt(o, lambda r: "%d" % g(r, "messages.lost")),
                    opt(t, lambda r: "%d" % g(r, "messages.lost")), opt(o, load1), opt(t, load1)))
                for r in (o, t):
                    if r and g(r, "messages.delivered") and (not fewest or g(r, "messages.delivered") < fewest):
                        fewest = g(r, "messages.delivered")
        w()
        if fewest:
            tick = 1.0 / os.sysconf("SC_CLK_TCK")
            w("Server CPU is read from /proc in clock ticks (%s ms): at the fewest messages of a run here (%s), one "
              "tick is %s µs per message." % (f0(tick * 1000), f0(fewest), f1(1e6 * tick / fewest)))
            w()
        w("All runs (the message phase includes the drain after sending stops):")
        w()
        w("| connections | traffic | system | delivered | delivered msg/s | message phase s | server CPU s | "
          "connect phase s (server CPU s) | bench CPU % | problems | load1 |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for n, scen, nlab in rows:
            for what in ["idle"] + ["%d msg/s" % x for x in irates]:
                for s in ("ours", "nats"):
                    for r in R.runs(scen, s, "%d clients, %s" % (n, what)):
                        w("| %s | %s | %s | %s | %s | %s | %s | %s (%s) | %.0f | %s | %s |" % (
                            nlab, what, s, f0(g(r, "messages.delivered")) if what != "idle" else "-",
                            f0(g(r, "throughput.delivered_per_s")) if what != "idle" else "-",
                            f2(g(r, "bench.run_s")), f2(g(r, "server.cpu_s")), f1(g(r, "bench.connect_phase_s")),
                            f2(g(r, "server.connect_phase_cpu_s")), cpu_pct(r, "bench"),
                            "; ".join(problems(r)) or "none", load1(r)))
        w()
        if jruns:
            w("Scenario (j), each bench process (the CPU here is every server process's over that process's own "
              "run, a check of the window above; *bench CPU %* in the table above is the processes' sum; the "
              "connect phase includes the wait for the other processes):")
            w()
            w("| run | system | process | delivered | lost | p50 / p99 / p99.9 ms | server CPU s | message phase s | "
              "connect phase s | waited for the others s | problems |")
            w("|---|---|---|---|---|---|---|---|---|---|---|")
            for n in jcounts:
                for what in ["idle"] + ["%d msg/s" % x for x in irates]:
                    for s in ("ours", "nats"):
                        base = "%d clients, %s" % (n, what)
                        for r in [x for x in R.recs if x.get("scenario") == "j" and x.get("system") == s
                                  and x.get("label", "").startswith(base + " (bench process ") and "tool" in x]:
                            k = r["label"][len(base) + len(" (bench process "):-1]
                            w("| %s, %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                                f0(n), what, s, k, f0(g(r, "messages.delivered")) if what != "idle" else "-",
                                "%d" % g(r, "messages.lost") if what != "idle" else "-",
                                lat(r) if what != "idle" else "-", f2(g(r, "server.cpu_s")), f2(g(r, "bench.run_s")),
                                f1(g(r, "bench.connect_phase_s")), f1(g(r, "sync.go_wait_s")),
                                "; ".join(problems(r)) or "none"))
            w()

    # (k) groups: fan-out
    kruns = [r for r in R.recs if r.get("scenario") == "k" and "tool" in r]
    if kruns:
        w("## (k) Groups: fan-out to groups of 10, 100 and 1,000 members")
        w()
        w("1,000 clients in groups of *N* consecutive clients (for *N* = 10, 100, 1,000: 100, 10 and 1 groups); ours: "
          "the first member creates the group with the others (GroupCreateRequest) and the run starts when every "
          "member has its GroupEvent; NATS: a subject per group that its *N* members subscribe to (CONNECT with "
          "echo off). Each message goes to the *N*−1 other members: *deliveries/s* counts every copy received, "
          "the latency is per delivery (sender's clock to the member's, same process), *lost* = deliveries "
          "expected but not seen by the end of the 2 s drain. *Fixed rate*: every member sends, 50,000 "
          "deliveries/s offered in all (50,000 / (*N*−1) messages/s). *Window*: one sender per group, 16 messages "
          "in flight, a message being in flight until all its *N*−1 deliveries came (14,400-16,000 deliveries in "
          "flight for every *N*). 64-byte messages, 10 s, two runs each alternating ours/NATS, one server of each for "
          "the whole scenario; best of two: the lower p99 at the fixed rate, the more deliveries/s with the window. "
          "*CPU/delivery*: the server's CPU over the run (and drain) per delivery.")
        w()
        w("| group size | load | ours deliveries/s | NATS deliveries/s | ours msg/s sent | NATS msg/s sent | ours p50 / p99 / p99.9 ms | NATS p50 / p99 / p99.9 ms | ours / NATS CPU/delivery µs | lost (ours / NATS) | load1 (ours / NATS) |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")

        def klat(r):
            return "%s / %s / %s" % (f3(g(r, "latency_ms.p50")), f3(g(r, "latency_ms.p99")), f3(g(r, "latency_ms.p999")))

        def kcpu(r):
            d = g(r, "messages.delivered")
            return f1(1e6 * g(r, "server.cpu_s") / d) if d else "-"

        sizes = sorted({g(r, "config.group_size") for r in kruns})
        for n in sizes:
            for kind, lab, key, low in (("fixed rate", "groups of %d, 50000 deliveries/s" % n, "latency_ms.p99", True),
                                        ("window 16, 1 sender per group", "groups of %d, window 16, 1 sender per group" % n,
                                         "throughput.delivered_per_s", False)):
                o = R.best("k", "ours", lab, key, low)
                t = R.best("k", "nats", lab, key, low)
                if not o and not t:
                    continue
                w("| %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s / %s |" % (
                    f0(n), kind, f0(g(o, "throughput.delivered_per_s")) if o else "-",
                    f0(g(t, "throughput.delivered_per_s")) if t else "-",
                    f0(g(o, "throughput.sent_per_s")) if o else "-", f0(g(t, "throughput.sent_per_s")) if t else "-",
                    klat(o) if o else "-", klat(t) if t else "-", kcpu(o) if o else "-", kcpu(t) if t else "-",
                    g(o, "messages.lost") if o else "-", g(t, "messages.lost") if t else "-",
                    load1(o) if o else "-", load1(t) if t else "-"))
        w()
        w("All runs:")
        w()
        w("| run | system | sent | delivered | deliveries/s | p50 / p99 / p99.9 ms | lost | server CPU % | bench CPU % | connect phase s | problems | load1 |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in kruns:
            p = problems(r)
            w("| %s | %s | %s | %s | %s | %s | %d | %.0f | %.0f | %s | %s | %s |" % (
                r.get("label", "?"), r.get("system", "?"), f0(g(r, "messages.sent")), f0(g(r, "messages.delivered")),
                f0(g(r, "throughput.delivered_per_s")), klat(r), g(r, "messages.lost"), cpu_pct(r, "server"),
                cpu_pct(r, "bench"), f1(g(r, "bench.connect_phase_s")), "; ".join(p) if p else "none", load1(r)))
        w()

    # targets
    if targets:
        w("## Targets")
        w()
        w("| target | measured | met? | by how much |")
        w("|---|---|---|---|")
        for name, fig, met, how in targets:
            w("| %s | %s | %s | %s |" % (name, fig, "**met**" if met else "**missed**", how))
        w()

    # commands
    w("## Commands, exactly as run")
    w()
    w("Servers (fresh data folder in a temporary directory for each):")
    w()
    w("```")
    seen = set()
    for r in recs:
        if ("tool" not in r and r.get("command") and r["command"] not in seen
                and not r["command"].startswith("qmsbench")):
            seen.add(r["command"])
            w(r["command"])
    w("```")
    w()
    w("Load (one line per run, in order):")
    w()
    w("```")
    for r in recs:
        if r.get("command") and r["command"].startswith("qmsbench"):
            w("(%s) %s" % (r.get("scenario"), r["command"]))
    w("```")
    w()
    w(END)
    return "\n".join(R.lines) + "\n"


def chart(dat, docdir):
    if not dat:
        return
    path = os.path.join(docdir, "latency.dat")
    with open(path, "w") as f:
        f.write("# offered_kmsg_s ours_p50 ours_p90 ours_p99 ours_p999 nats_p50 nats_p90 nats_p99 nats_p999\n")
        for row in dat:
            f.write(" ".join("%g" % v for v in row) + "\n")
    png = os.path.join(docdir, "latency.png")
    script = """
set terminal pngcairo size 900,560 font "sans,10"
set output '%s'
set title "One-way latency vs offered load, 1,000 clients (ours: solid, NATS: dashed)"
set xlabel "offered load (thousand msg/s)"
set ylabel "latency (ms, log scale)"
set logscale y
set grid
set key outside right
set xtics (10, 20, 50)
plot '%s' u 1:2 w lp lw 2 lc 1 pt 7 t 'ours p50', \\
     '' u 1:3 w lp lw 2 lc 2 pt 7 t 'ours p90', \\
     '' u 1:4 w lp lw 2 lc 3 pt 7 t 'ours p99', \\
     '' u 1:5 w lp lw 2 lc 4 pt 7 t 'ours p99.9', \\
     '' u 1:6 w lp lw 2 dt 2 lc 1 pt 6 t 'NATS p50', \\
     '' u 1:7 w lp lw 2 dt 2 lc 2 pt 6 t 'NATS p90', \\
     '' u 1:8 w lp lw 2 dt 2 lc 3 pt 6 t 'NATS p99', \\
     '' u 1:9 w lp lw 2 dt 2 lc 4 pt 6 t 'NATS p99.9'
""" % (png, path)
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print("summary: gnuplot failed: %s" % e, file=sys.stderr)
    finally:
        os.unlink(path)


def report(path, out, docdir):
    recs = load(path)
    gen = render(recs, docdir, os.path.basename(path))
    head, tail = "# Benchmarks\n\nWritten by `scripts/bench`; the analysis outside the generated part is by hand.\n\n", ""
    if os.path.exists(out):
        text = open(out).read()
        if BEGIN in text and END in text:
            head = text[:text.index(BEGIN)]
            tail = text[text.index(END) + len(END) + 1:]
        else:
            head = text.rstrip("\n") + "\n\n"
    with open(out, "w") as f:
        f.write(head + gen + tail)


def profile(tag, pids, roles, rate, stat, bythread, bysymbol, tasks):
    pids = pids.split(",")
    role = dict(zip(pids, roles.split(",")))
    owner = {}
    with open(tasks) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                owner[parts[1]] = parts[0]
    counts = {}
    with open(stat) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[0] and parts[0][0].isdigit():
                counts[parts[2]] = float(parts[0])
    secs = 7.0
    rate = float(rate)
    system = tag.rsplit("-", 1)[1]
    scenario = tag.split("-")[1] if tag.count("-") >= 2 else "?"       # perf-<scenario>-...
    out = ["# scenario (%s) %s: %s, %s" % (scenario, tag, system, "idle" if rate == 0 else "%g msg/s in total" % rate),
           "# perf record -q -e cpu-clock -F 499 -g -p <every server process> -- sleep 7"
           "   (from 1 s into the message window; software clock: this VM has no hardware counters)",
           "# perf stat -x, -e raw_syscalls:sys_enter,context-switches,task-clock -p <the same> -- sleep 7"]
    sc, cs, ms = (counts.get("raw_syscalls:sys_enter", 0), counts.get("context-switches", 0),
                  counts.get("task-clock", 0))
    out.append("# every server process together, per second: %.0f system calls, %.0f context switches, %.1f%% of a core"
               % (sc / secs, cs / secs, ms / secs / 10))
    if rate:
        out.append("#   per message (at %g msg/s): %.1f system calls, %.2f context switches, %.1f us of CPU"
                   % (rate, sc / secs / rate, cs / secs / rate, ms * 1000 / secs / rate))
    threads = []
    with open(bythread) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[0].endswith("%") and ":" in parts[1]:
                tid, comm = parts[1].split(":", 1)
                threads.append((float(parts[0][:-1]), tid, comm))
    procs = {}
    for pct, tid, comm in threads:
        p = owner.get(tid, tid)
        procs.setdefault(p, []).append((pct, tid, comm))
    out.append("#")
    out.append("# samples per process, then its threads (perf report --sort pid; % of all samples):")
    for p, ts in sorted(procs.items(), key=lambda kv: -sum(t[0] for t in kv[1])):
        out.append("#   %-14s %6.2f%%   %s" % (role.get(p, "pid " + p), sum(t[0] for t in ts),
                   ", ".join("%s/%s %.2f%%" % (c, t, pct) for pct, t, c in sorted(ts, reverse=True)[:4])))
    out.append("#")
    out.append("# perf report --no-children --sort dso,sym --stdio -g none   (top 45 lines)")
    with open(bysymbol) as f:
        lines = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]
    out.extend(lines[:45])
    print("\n".join(out))


def main(argv):
    if len(argv) >= 2 and argv[1] == "append" and len(argv) == 9:
        append(*argv[2:9])
        return 0
    if len(argv) == 4 and argv[1] == "drop":
        keep = [r for r in load(argv[2]) if r.get("scenario") not in argv[3].split(",")]
        with open(argv[2], "w") as f:
            for r in keep:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")
        return 0
    if len(argv) == 3 and argv[1] == "line":
        try:
            print(digest(json.loads(argv[2])))
        except ValueError:
            print("unparsable RESULT")
        return 0
    if len(argv) >= 9 and argv[1] == "combine":
        combine(argv[2], argv[3], argv[4], argv[5], argv[6], argv[7], argv[8:])
        return 0
    if len(argv) == 3 and argv[1] == "check":
        return check(argv[2])
    if len(argv) == 10 and argv[1] == "profile":
        profile(*argv[2:10])
        return 0
    if len(argv) == 5 and argv[1] == "report":
        report(argv[2], argv[3], argv[4])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
