"""Benchmark of the network-selection solvers (grouping.selection).

Run from the repository root:

    python benchmarks/selection.py                  # everything, a few minutes
    python benchmarks/selection.py --largest-limit 0  # skip part (d)

Prints one summary line per item and writes benchmarks/results/selection.json
(with machine information).  It measures, it does not assert; targets are
quoted for comparison.

(a) Standley's four settings × 9 budgets (1..5 step 0.5) × 3 methods
    (optimal, HOA, ESA), selected on one table and scored on the test table
    (target: < 0.2 s for all 12 curves).  Settings 1 and 2 are compared with
    the published curves; settings 3 and 4 are reported.
(b) TAG's grouping of the 9 CelebA attributes for k = 2..5 (target < 1 s
    each), plus Taskonomy k = 2, 3 and a plain-Python exhaustive search for
    the 5 Taskonomy tasks (the released notebook's approach; for 9 tasks it
    takes about a minute at k = 3 and is infeasible at k = 4, per
    shared/REFERENCES.md, so it is not rerun here).
(c) A random 12-task instance (4095 full-size + 12 half-size candidates) at
    budget 3 (target < 10 s), with both exact solvers.
(d) The largest number of tasks solved exactly within a per-instance limit
    (default 60 s), n = 12, 13, ..., each solver in a child process.
(e) Many tasks: the synthetic released-style table of the tests (27 tasks,
    every single and pair and 3,000 random networks of 2-20 tasks, random
    losses and costs): budget 25 exactly, against the tests' independent
    assignment MIP (scipy's milp), and the tight budget 12 under a 5 s
    limit (best found and its gap).
(f) Arbitrary real costs: the 12-task instance of (c) with measured FLOPs
    as costs (encoder plus one decoder per task, XLA's counts for the scenes
    tasks at 64x64; synthetic task i has the decoder of scenes task i mod 5)
    and with random costs (nominal x U(0.8, 1.25)), budget 5 full-size
    single-task networks (the cheapest cover under FLOPs costs 3.76), under a 10 s time limit; target: exact in < 10 s.
    "auto" runs the subset DP's per-budget pass with Lagrangian bounds here; "mip" is HiGHS for comparison.

    python benchmarks/selection.py --parts e --out benchmarks/results/selection_many_tasks.json
    python benchmarks/selection.py --parts f --out benchmarks/results/selection_real_costs.json
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grouping.selection import (  # noqa: E402
    Network,
    hoa_candidates,
    score,
    select_networks,
)
from grouping.selection_tag import select_groups_tag, tag_candidates  # noqa: E402
from grouping.tables import read_affinity, read_standley_table  # noqa: E402

FIXTURES = REPO / "fixtures"  # the papers' released tables (fixtures/README.md)
RESULTS = REPO / "benchmarks" / "results" / "selection.json"
BUDGETS = [1 + 0.5 * i for i in range(9)]
SETTINGS = {  # selection table, test table, early-stopped (ESA) table, column names
    "setting1": ("results.txt", "results_test.txt", "results_20.txt", ("s", "d", "n", "k", "t")),
    "setting2": ("results_large.txt", "results_large_test.txt", "results_large_20.txt", ("s", "d", "n", "k", "t")),
    "setting3": ("results_small_data.txt", "results_small_data_test.txt", "results_small_data_at4.txt", ("s", "d", "n", "k", "t")),
    # Task set 2; its column order is not documented, so neutral names.
    "setting4": ("results_alt.txt", "results_alt_test.txt", "results_alt_20.txt", ("c1", "c2", "c3", "c4", "c5")),
}


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "highspy": metadata.version("highspy"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def timed(fn, repeat: int = 1):
    """(min seconds, median seconds, last result) over ``repeat`` runs."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), result


# --------------------------------------------------------------------------
# (a) Standley et al.
# --------------------------------------------------------------------------


def standley(repeat: int) -> dict:
    folder = FIXTURES / "standley2020"
    expected = json.loads((folder / "expected_curves.json").read_text())["settings"]

    def read_all():
        tables = {}
        for name, (sel, test, esa, tasks) in SETTINGS.items():
            esa_table = read_standley_table(folder / esa, tasks, allow_missing=True)
            tables[name] = {
                "optimal": read_standley_table(folder / sel, tasks).networks,
                "test": read_standley_table(folder / test, tasks).networks,
                "esa": esa_table.networks,
                "esa_missing": esa_table.missing,
            }
        return tables

    read_s, _, tables = timed(read_all, repeat)

    def all_curves(solver: str = "auto"):
        curves = {}
        for name, t in tables.items():
            curves[name] = {}
            for method, candidates in (("optimal", t["optimal"]), ("hoa", hoa_candidates(t["optimal"])), ("esa", t["esa"])):
                selections = select_networks(candidates, BUDGETS, solver=solver)
                curves[name][method] = {
                    "test_total": [score(s.networks, t["test"]) for s in selections],
                    "selection_total": [s.total for s in selections],
                    "networks": [[nw.label for nw in s.networks] for s in selections],
                }
        return curves

    best, median, curves = timed(all_curves, repeat)
    mip_best, _, mip_curves = timed(lambda: all_curves("mip"), 1)
    out = {"budgets": BUDGETS, "seconds_all_12_curves": {"min": best, "median": median, "repeats": repeat},
           "seconds_read_tables": read_s, "seconds_all_12_curves_mip": mip_best, "settings": {}}
    for name, by_method in curves.items():
        entry = {m: {"test_total": [round(x, 6) for x in c["test_total"]],
                     "selection_total": [round(x, 6) for x in c["selection_total"]],
                     "networks": c["networks"]} for m, c in by_method.items()}
        entry["esa_table_missing"] = list(tables[name]["esa_missing"])
        entry["mip_same_selection_totals"] = all(
            np.allclose(mip_curves[name][m]["selection_total"], c["selection_total"], rtol=1e-9) for m, c in by_method.items())
        if name in expected:
            entry["max_abs_diff_vs_published"] = {
                m: max(abs(a - b) for a, b in zip(by_method[m]["test_total"], expected[name][m])) for m in by_method}
        out["settings"][name] = entry
    return out


# --------------------------------------------------------------------------
# (b) TAG
# --------------------------------------------------------------------------


def plain_exhaustive_tag(affinity: dict, k: int) -> tuple[float, list]:
    """The notebook's approach: every combination of at most k groups, in plain Python."""
    groups = [(nw.tasks, nw.losses) for nw in tag_candidates(affinity)]
    tasks = list(affinity)
    best, best_groups = -math.inf, None
    for r in range(1, k + 1):
        for combo in itertools.combinations(groups, r):
            scores = {}
            for members, losses in combo:
                for t in members:
                    scores[t] = max(scores.get(t, -math.inf), losses[t])
            if len(scores) == len(tasks):
                value = sum(scores.values()) / len(tasks)
                if value > best:
                    best, best_groups = value, [list(m) for m, _ in combo]
    return best, best_groups


def tag(repeat: int) -> dict:
    path = FIXTURES / "tag2021" / "affinities.json"
    expected = json.loads(path.read_text())["tag_selection"]["expected"]
    out = {}
    for dataset, ks in (("celeba", (2, 3, 4, 5)), ("taskonomy", (2, 3))):
        affinity = read_affinity(f"{path}#{dataset}/tag")
        out[dataset] = {}
        for k in ks:
            best, median, (sel,) = timed(lambda: select_groups_tag(affinity, k), repeat)
            entry = {"seconds": best, "seconds_median": median, "mean_score": sel.total,
                     "groups": [list(nw.tasks) for nw in sel.networks]}
            ref = expected.get(f"{dataset}_tag_k{k}")
            if ref:
                entry["matches_published"] = (abs(sel.total - ref["value"]) < 1e-6 and
                                              {frozenset(g) for g in entry["groups"]} == {frozenset(g) for g in ref["groups"]})
            out[dataset][f"k{k}"] = entry
    taskonomy = read_affinity(f"{path}#taskonomy/tag")
    out["plain_exhaustive_taskonomy"] = {}
    for k in (2, 3):
        seconds, _, (value, _) = timed(lambda: plain_exhaustive_tag(taskonomy, k), 1)
        out["plain_exhaustive_taskonomy"][f"k{k}"] = {"seconds": seconds, "mean_score": value}
    out["notebook_reference"] = "released notebook, exhaustive: about a minute for 9 tasks at k=3, infeasible at k=4 (shared/REFERENCES.md)"
    return out


# --------------------------------------------------------------------------
# (c), (d) random instances
# --------------------------------------------------------------------------


def random_instance(n: int, seed: int = 0) -> list[Network]:
    """Standley-like candidates: every subset at cost 1 plus half-size singles at 0.5.

    L(t|S) = b_t · exp(mean_{u∈S\\{t}} a_tu + ε), b_t ~ U(0.05, 0.5), a ~ N(0, 0.08²),
    ε ~ N(0, 0.02²); a half-size single has L = 1.08 · b_t · exp(ε).
    """
    rng = np.random.default_rng(seed)
    tasks = [f"t{i}" for i in range(n)]
    base = rng.uniform(0.05, 0.5, n)
    affinity = rng.normal(0, 0.08, (n, n))
    np.fill_diagonal(affinity, 0.0)
    masks = np.arange(1, 1 << n)
    bits = ((masks[:, None] >> np.arange(n)) & 1).astype(bool)
    others = np.maximum(bits.sum(1, keepdims=True) - 1, 1)
    loss = base * np.exp(bits @ affinity.T / others + rng.normal(0, 0.02, bits.shape))
    half = 1.08 * base * np.exp(rng.normal(0, 0.02, n))
    order = np.lexsort((masks, bits.sum(1)))  # by size, like Standley's tables
    out = [Network((t,), 0.5, {t: float(half[i])}, f"half:{t}") for i, t in enumerate(tasks)]
    for row in order:
        idx = np.flatnonzero(bits[row])
        out.append(Network(tuple(tasks[i] for i in idx), 1.0, {tasks[i]: float(loss[row, i]) for i in idx}))
    return out


def solve_random(n: int, budget: float, solver: str, time_limit: float | None) -> dict:
    candidates = random_instance(n)
    start = time.perf_counter()
    (sel,) = select_networks(candidates, budget, solver=solver, time_limit=time_limit)
    return {"n": n, "candidates": len(candidates), "solver": solver, "seconds": time.perf_counter() - start,
            "total": sel.total, "optimal": sel.optimal, "gap": sel.gap, "networks": [nw.label for nw in sel.networks]}


def _child(queue, *args):
    queue.put(solve_random(*args))


def solve_in_child(n: int, budget: float, solver: str, limit: float) -> dict:
    """solve_random in a child process, killed after ``limit`` s (+ set-up slack); the MIP also gets time_limit."""
    ctx = multiprocessing.get_context("spawn")  # not fork: HiGHS's worker threads do not survive a fork
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, n, budget, solver, limit if solver == "mip" else None))
    start = time.perf_counter()
    proc.start()
    proc.join(limit + 30)  # generous slack for building the instance
    if proc.is_alive():
        proc.kill()
        proc.join()
        return {"n": n, "solver": solver, "seconds": None, "optimal": False,
                "note": f"killed after {time.perf_counter() - start:.0f} s wall time"}
    return queue.get() if not queue.empty() else {"n": n, "solver": solver, "seconds": None, "optimal": False, "note": "child failed"}


def largest_n(limit: float, budget: float = 3.0) -> dict:
    out = {"budget": budget, "limit_seconds": limit, "runs": [], "largest_exact": {}}
    for solver in ("dp", "mip"):
        for n in itertools.count(12):
            run = solve_in_child(n, budget, solver, limit)
            out["runs"].append(run)
            line = f"    n={n} {solver}: " + (f"{run['seconds']:.2f} s, optimal={run['optimal']}, gap={run.get('gap', 0):.2g}"
                                               if run["seconds"] is not None else run["note"])
            print(line, flush=True)
            if run["seconds"] is None or not run["optimal"] or run["seconds"] > limit:
                break
            out["largest_exact"][solver] = n
    return out


# --------------------------------------------------------------------------
# (e) many tasks, (f) arbitrary real costs
# --------------------------------------------------------------------------


def _tests_module():
    """tests/test_selection.py: the many-task instance and the independent MIP are defined once, there."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("test_selection", REPO / "tests" / "test_selection.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def many_tasks(time_limit: float = 60.0) -> dict:
    """(e): a loose budget (25; the cheapest cover costs about 8.6) solved exactly, checked against the tests'
    scipy assignment MIP; a tight one (12) under a 5 s limit, answered with its gap."""
    t = _tests_module()
    tasks, candidates = t.many_task_instance()
    out = {"tasks": len(tasks), "candidates": len(candidates), "budgets": []}
    for budget, limit, reference in ((25.0, time_limit, True), (12.0, 5.0, False)):
        seconds, _, (sel,) = timed(lambda: select_networks(candidates, budget, tasks=tasks, time_limit=limit))
        row = {"budget": budget, "time_limit": limit, "seconds": seconds, "total": sel.total, "optimal": sel.optimal,
               "gap": sel.gap, "cost": sel.cost, "networks": [nw.label for nw in sel.networks]}
        if reference:
            ref_s, _, (ref, _) = timed(lambda: t.assignment_milp(candidates, tasks, budget))
            row.update(reference_total=ref, reference_seconds=ref_s, matches_reference=abs(sel.total - ref) <= 1e-7 * abs(ref))
        out["budgets"].append(row)
    return out


def flops_costs() -> dict:
    """Measured forward FLOPs per 64x64 image (`grouping.costs.flops`) of the 5 scenes tasks' parts: the
    full-size encoder, each task's decoder, and each task's half-size single-task network."""
    from grouping.costs import flops

    names = ("seg", "depth", "normals", "keypoints", "edges")
    encoder = flops([names[0]], 1.0, 64) - (flops(names[:2], 1.0, 64) - flops(names[1:2], 1.0, 64))
    return {"encoder": encoder, "decoders": {name: flops([name], 1.0, 64) - encoder for name in names},
            "half_singles": {name: flops([name], 0.5, 64) for name in names}}


def real_costs(n: int = 12, budget: float = 5.0) -> dict:
    """(f): the instance of (c) priced by measured FLOPs, and by random real costs; budgets in full-size singles."""
    parts = flops_costs()
    decoders, halves = list(parts["decoders"].values()), list(parts["half_singles"].values())
    candidates = random_instance(n)
    index = {f"t{i}": i for i in range(n)}
    rng = np.random.default_rng(1)

    def flops_of(nw: Network) -> float:  # synthetic task i has the parts of scenes task i mod 5
        if nw.label.startswith("half:"):
            return halves[index[nw.tasks[0]] % len(halves)]
        return parts["encoder"] + math.fsum(decoders[index[t] % len(decoders)] for t in nw.tasks)

    pricing = {"flops": flops_of, "random": lambda nw: nw.cost * float(rng.uniform(0.8, 1.25))}
    out = {"n": n, "budget_in_full_size_singles": budget, "flops_parts": parts}
    for name, price in pricing.items():
        raw = [price(nw) for nw in candidates]
        unit = statistics.mean(c for nw, c in zip(candidates, raw) if len(nw.tasks) == 1 and not nw.label.startswith("half:"))
        priced = [Network(nw.tasks, c / unit, nw.losses, nw.label) for nw, c in zip(candidates, raw)]
        out[name] = {"distinct_costs": len({round(nw.cost, 12) for nw in priced})}
        for solver in ("auto", "mip"):  # under the 10 s target as a time limit: exact or the gap left
            seconds, _, (sel,) = timed(lambda: select_networks(priced, budget, solver=solver, time_limit=10.0))
            out[name][solver] = {"seconds": seconds, "total": sel.total, "optimal": sel.optimal, "gap": sel.gap,
                                 "cost": sel.cost, "networks": [nw.label for nw in sel.networks]}
    return out


def part_a(args, report: dict) -> None:
    a = standley(args.repeat)
    report["standley"] = a
    diffs = {s: max(v.values()) for s, v in ((s, e.get("max_abs_diff_vs_published")) for s, e in a["settings"].items()) if v}
    print(f"(a) Standley 4 settings x 9 budgets x 3 methods: {a['seconds_all_12_curves']['min']:.3f} s "
          f"(median {a['seconds_all_12_curves']['median']:.3f} s; target < 0.2 s); MIP solver: "
          f"{a['seconds_all_12_curves_mip']:.2f} s; reading 12 tables {a['seconds_read_tables']:.3f} s; "
          f"max |diff| vs published: {', '.join(f'{s} {d:.1e}' for s, d in diffs.items())}")
    for name in ("setting3", "setting4"):
        s = a["settings"][name]
        print(f"    {name}: optimal {s['optimal']['test_total']}")
        print(f"    {name}: hoa     {s['hoa']['test_total']}")
        print(f"    {name}: esa     {s['esa']['test_total']}" + (f" (ESA table lacks {s['esa_table_missing']})" if s["esa_table_missing"] else ""))


def part_b(args, report: dict) -> None:
    b = tag(args.repeat)
    report["tag"] = b
    for k, e in b["celeba"].items():
        print(f"(b) TAG CelebA {k}: {e['seconds'] * 1000:.1f} ms (target < 1 s), mean score {e['mean_score']:.7f}"
              + (f", matches published: {e['matches_published']}" if "matches_published" in e else ""))
    for k, e in b["taskonomy"].items():
        ex = b["plain_exhaustive_taskonomy"][k]
        print(f"    TAG Taskonomy {k}: {e['seconds'] * 1000:.1f} ms, mean score {e['mean_score']:.7f}, "
              f"matches published: {e.get('matches_published')}; plain exhaustive {ex['seconds'] * 1000:.0f} ms")


def part_c(report: dict) -> None:
    c = {solver: solve_random(12, 3.0, solver, None) for solver in ("auto", "mip")}
    report["random12_budget3"] = c
    print(f"(c) 12 tasks ({c['auto']['candidates']} candidates), budget 3: auto (DP) {c['auto']['seconds']:.2f} s, "
          f"MIP {c['mip']['seconds']:.2f} s (target < 10 s); totals {c['auto']['total']:.6f} / {c['mip']['total']:.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repeats for the fast items (min and median reported)")
    parser.add_argument("--largest-limit", type=float, default=60.0, help="per-instance seconds for (d); 0 skips it")
    parser.add_argument("--parts", default="a,b,c,d,e,f", help="which items to run, comma-separated (default all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON written (default {RESULTS.relative_to(REPO)})")
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - set("abcdef"):
        parser.error(f"--parts takes letters among a,b,c,d,e,f, got {args.parts!r}")
    report = {"machine": machine_info(), "command": "python benchmarks/selection.py " + " ".join(sys.argv[1:])}
    if "a" in parts:
        part_a(args, report)
    if "b" in parts:
        part_b(args, report)
    if "c" in parts:
        part_c(report)
    if "d" in parts and args.largest_limit > 0:
        print(f"(d) largest n solved exactly within {args.largest_limit:g} s (budget 3, Standley-like random instances):")
        d = largest_n(args.largest_limit)
        report["largest_n"] = d
        print(f"    largest exact: {d['largest_exact']}")
    if "e" in parts:
        e = many_tasks()
        report["many_tasks"] = e
        print(f"(e) {e['tasks']} tasks, {e['candidates']} networks:")
        for row in e["budgets"]:
            print(f"    budget {row['budget']:g} (limit {row['time_limit']:g} s): {row['seconds']:.2f} s, optimal={row['optimal']}, "
                  f"gap {row['gap']:.2g}, total {row['total']:.6f}" + (
                      f"; scipy milp {row['reference_total']:.6f} in {row['reference_seconds']:.2f} s" if "reference_total" in row else ""))
    if "f" in parts:
        f = real_costs()
        report["real_costs_12"] = f
        for name in ("flops", "random"):
            r = f[name]
            print(f"(f) 12 tasks, {name} costs ({r['distinct_costs']} distinct), budget 5: auto {r['auto']['seconds']:.2f} s "
                  f"(optimal={r['auto']['optimal']}, gap {r['auto']['gap']:.2g}), MIP {r['mip']['seconds']:.2f} s "
                  f"(optimal={r['mip']['optimal']}, gap {r['mip']['gap']:.2g}); "
                  f"totals {r['auto']['total']:.6f} / {r['mip']['total']:.6f} (target < 10 s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
