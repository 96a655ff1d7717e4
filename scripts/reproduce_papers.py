#!/usr/bin/env python
"""Reproduce the papers' curves and groupings from their released tables (fixtures/).

    python scripts/reproduce_papers.py

Standley et al. (ICML 2020), settings 1 and 2: for each budget 1, 1.5, ..., 5
the total test loss of the networks chosen on the validation table (optimal),
on its higher-order approximation from pairs (hoa) and on the early-stopped
table (esa), beside the published curves (fixtures/standley2020/
expected_curves.json). Fifty et al. (TAG, NeurIPS 2021): the groups TAG's rule
picks from the notebooks' Taskonomy and CelebA affinities for 2 and 3 groups,
beside the groupings fixtures/tag2021/affinities.json lists for them (the
released notebooks have no saved outputs). Exit status 0 when every number agrees
(to 1e-5) and every grouping is the same, 1 otherwise. Solvers:
grouping/selection.py; table readers: grouping/tables.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl.options import HelpFormatter  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TOLERANCE = 1e-5
METHODS = ("optimal", "hoa", "esa")


def standley_curves(folder: Path, setting: str) -> dict:
    """{"budgets", "computed": {method: [test totals]}, "published": {method: [...]}, "tables": {...}}."""
    from grouping.selection import hoa_candidates, score, select_networks
    from grouping.tables import read_standley_table

    spec = json.loads((folder / "expected_curves.json").read_text())
    budgets, published = spec["budgets"], spec["settings"][setting]
    val = read_standley_table(folder / published["selection_table"]).networks
    test = read_standley_table(folder / published["test_table"]).networks
    esa = read_standley_table(folder / published["esa_table"]).networks
    tables = {"optimal": val, "hoa": hoa_candidates(val), "esa": esa}
    computed = {m: [score(s.networks, test) for s in select_networks(tables[m], budgets)] for m in METHODS}
    return {"budgets": budgets, "computed": computed, "published": {m: published[m] for m in METHODS},
            "tables": {k: published[k] for k in ("selection_table", "test_table", "esa_table")}}


def tag_groupings(path: Path) -> list[dict]:
    """TAG's rule on each matrix the fixture lists groupings for, beside those groupings."""
    from grouping.selection_tag import select_groups_tag
    from grouping.tables import read_affinity

    expected = json.loads(path.read_text())["tag_selection"]["expected"]
    out = []
    for name, spec in expected.items():
        dataset, _, k = name.split("_")
        sel = select_groups_tag(read_affinity(f"{path}#{dataset}/tag"), int(k[1:]))[0]
        out.append({"dataset": dataset, "groups": int(k[1:]), "computed": [list(nw.tasks) for nw in sel.networks],
                    "score": sel.total, "published": spec["groups"], "published_score": spec["value"]})
    return out


def same_groups(a, b) -> bool:
    return {frozenset(g) for g in a} == {frozenset(g) for g in b}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--fixtures", default=str(FIXTURES), help="folder holding standley2020/ and tag2021/")
    args = p.parse_args(argv)
    root = Path(args.fixtures)
    ok = True
    for setting in ("setting1", "setting2"):
        c = standley_curves(root / "standley2020", setting)
        t = c["tables"]
        print(f"Standley et al. 2020, {setting}: total test loss ({t['test_table']}) of the networks chosen on "
              f"{t['selection_table']} (optimal), on its pairs (hoa), on {t['esa_table']} (esa); published in ()")
        print(f"{'budget':>6}" + "".join(f"{m:>22}" for m in METHODS))
        worst = 0.0
        for i, b in enumerate(c["budgets"]):
            cells = ""
            for m in METHODS:
                got, want = c["computed"][m][i], c["published"][m][i]
                worst = max(worst, abs(got - want))
                cells += f"{got:>12.5f} ({want:.5f})"
            print(f"{b:>6g}{cells}")
        agree = worst <= TOLERANCE
        ok &= agree
        print(f"largest difference from the published curves: {worst:.1e} "
              f"({'reproduced' if agree else 'NOT reproduced'}, tolerance {TOLERANCE:g})\n")
    print("Fifty et al. 2021 (TAG): groups by TAG's rule from the notebooks' lookahead affinities")
    for g in tag_groupings(root / "tag2021" / "affinities.json"):
        agree = same_groups(g["computed"], g["published"]) and abs(g["score"] - g["published_score"]) <= TOLERANCE
        ok &= agree
        groups = "  ".join("{" + ", ".join(x) + "}" for x in g["computed"])
        print(f"  {g['dataset']}, {g['groups']} groups: {groups}  score {g['score']:.5f} "
              f"({'as listed' if agree else 'listed: ' + str(g['published'])})")
    print("\nall reproduced" if ok else "\nsome numbers differ from the papers'")
    return 0 if ok else 1


if __name__ == "__main__":
    from mtl import cli

    cli.run(main)
