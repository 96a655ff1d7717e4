"""The ground-truth evaluation against brute force, its tables, and one stored network re-trained."""

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest

from grouping import groundtruth as G
from grouping.selection import network_label, subsets_by_size
from grouping.tables import read_standley_table, write_standley_table

NAMES = ("a", "b", "c")
BUDGETS = (1.0, 1.5, 2.0, 2.5, 3.0)
REPO = Path(__file__).resolve().parents[1]


def random_record(seed, names=NAMES):
    """One seed's record as collect writes it, with random losses in [0.1, 1) and affinities in [-1, 1)."""
    rng = random.Random(seed)
    labels = [network_label((t,), True) for t in names] + [network_label(s) for s in subsets_by_size(names)]
    tasks_of = {network_label((t,), True): (t,) for t in names} | {network_label(s): s for s in subsets_by_size(names)}
    rec = {key: {lbl: {t: rng.uniform(0.1, 1.0) for t in tasks_of[lbl]} for lbl in labels}
           for key in ("validation", "test", "early_validation")}
    n = len(names)
    rec["tag"] = [[0.0 if i == j else rng.uniform(-1, 1) for j in range(n)] for i in range(n)]
    rec["cs"] = [[0.0 if i == j else rng.uniform(-1, 1) for j in range(n)] for i in range(n)]
    everything = network_label(names)
    rec["affinity_run"] = {split: dict(rec[split][everything]) for split in ("validation", "test")}
    return rec, tasks_of


def weights(losses, relative):
    """Per-task factor of the objective, by hand: 1 (loss) or 1 / (n L(t|{t})) (relative)."""
    return {t: 1 / (len(NAMES) * losses[t][t]) if relative else 1.0 for t in NAMES}


def brute_force(losses, test, tasks_of, budget, relative=False):
    """Best-valued cover by `losses`, scored on test: every subset of the 10 candidates."""
    labels = list(losses)
    cost = {lbl: 0.5 if lbl.startswith("half:") else 1.0 for lbl in labels}
    w, w_test = weights(losses, relative), weights(test, relative)
    best = None
    for r in range(1, len(labels) + 1):
        for chosen in itertools.combinations(labels, r):
            if sum(cost[c] for c in chosen) > budget + 1e-9:
                continue
            if not all(any(t in tasks_of[c] for c in chosen) for t in NAMES):
                continue
            value = sum(w[t] * min(losses[c][t] for c in chosen if t in tasks_of[c]) for t in NAMES)
            if best is None or value < best[0] - 1e-12:
                best = (value, chosen)
    value, chosen = best
    return sum(w_test[t] * min(test[c][t] for c in chosen if t in tasks_of[c]) for t in NAMES)


@pytest.mark.parametrize("objective", ["relative", "loss"])
@pytest.mark.parametrize("seed", range(5))
def test_optimal_and_esa_equal_brute_force(seed, objective):
    rec, tasks_of = random_record(seed)
    ev = G.evaluate_seed(rec, NAMES, BUDGETS, objective)
    relative = objective == "relative"
    for i, b in enumerate(BUDGETS):
        assert ev["totals"]["optimal"][i] == pytest.approx(
            brute_force(rec["validation"], rec["test"], tasks_of, b, relative))
        assert ev["totals"]["esa"][i] == pytest.approx(
            brute_force(rec["early_validation"], rec["test"], tasks_of, b, relative))


@pytest.mark.parametrize("seed", range(3))
def test_baselines_are_hand_checked(seed):
    rec, tasks_of = random_record(seed)
    ev = G.evaluate_seed(rec, NAMES, BUDGETS, "loss")
    test = rec["test"]
    abc = sum(test["a+b+c"].values())
    assert ev["totals"]["all_in_one"] == [pytest.approx(abc)] * len(BUDGETS)
    # Independent: half singles from 1.5 (= 3 x 0.5), full singles from 3.
    half = sum(test[f"half:{t}"][t] for t in NAMES)
    full = sum(test[t][t] for t in NAMES)
    assert ev["totals"]["independent"] == [None, pytest.approx(half), pytest.approx(half), pytest.approx(half),
                                           pytest.approx(full)]
    # Random groupings into <= 2 blocks: abc, a|bc, b|ac, c|ab.
    two = [abc,
           test["a"]["a"] + test["b+c"]["b"] + test["b+c"]["c"],
           test["b"]["b"] + test["a+c"]["a"] + test["a+c"]["c"],
           test["c"]["c"] + test["a+b"]["a"] + test["a+b"]["b"]]
    i2 = BUDGETS.index(2.0)
    assert ev["totals"]["random_mean"][i2] == pytest.approx(sum(two) / 4)
    assert ev["totals"]["random_worst"][i2] == pytest.approx(max(two))
    assert ev["totals"]["random_mean"][0] == pytest.approx(abc)  # one block only
    for m in G.METHODS:
        for i in range(len(BUDGETS)):
            expected = 100 * (ev["totals"][m][i] / ev["totals"]["optimal"][i] - 1)
            assert ev["regret_percent"][m][i] == pytest.approx(expected)


def test_tag_choice_follows_the_affinities():
    rec, _ = random_record(0)
    # Z[source][target]: a and b help each other (0.9), b helps c (0.6), a hurts c.
    # Two groups: {a,b} + {b,c} scores (0.9 + 0.9 + 0.6) / 3; {a,b} + {a,c} gives c -0.5;
    # {a,b,c} gives a (0.9 - 0.5) / 2. TAG discourages singletons, so {c} alone loses too.
    rec["tag"] = [[0, 0.9, -0.5], [0.9, 0, 0.6], [-0.5, 0.1, 0]]
    chosen = G.choices(rec, NAMES, (2.0,))["tag"][0]
    assert sorted(chosen.labels) == ["a+b", "b+c"]


def test_seeds_are_aggregated_and_noise_is_flagged():
    runs = {}
    for s in range(3):
        rec, _ = random_record(100 + s)
        runs[str(s)] = rec
    gt = {"tasks": list(NAMES), "runs": runs}
    ev = G.evaluate(gt, BUDGETS, {"tag": 1.1}, seconds={"tag": 12.34})
    per = [G.evaluate_seed(runs[str(s)], NAMES, BUDGETS) for s in range(3)]
    for i in range(len(BUDGETS)):
        values = [p["totals"]["hoa"][i] for p in per]
        assert ev["test_total"]["hoa"][i]["mean"] == pytest.approx(np.mean(values))
        assert ev["test_total"]["hoa"][i]["std"] == pytest.approx(np.std(values, ddof=1))
    avg = ev["average_regret_percent"]["tag"]
    per_seed = [np.mean(p["regret_percent"]["tag"]) for p in per]
    assert avg["mean"] == pytest.approx(np.mean(per_seed))
    assert avg["within_seed_noise"] == (abs(np.mean(per_seed)) <= np.std(per_seed, ddof=1))
    assert ev["cost_all_task_runs"] == {"tag": 1.1}
    text = G.markdown(ev)
    assert "| TAG |" in text and "Targets:" in text
    # The last column: how far TAG's losses read off its matrix missed; this record has no summed learning
    # rate to read them with, so it is empty, while hoa, which predicts losses, has one.
    assert any(row.startswith("| TAG | ") and row.endswith("| 1.10 | 12.3 |  |") for row in text.splitlines())
    hoa = ev["relative_prediction_error"]["errors"]["hoa"]
    assert any(row.startswith("| HOA | ") and row.endswith(f"| {100 * hoa['mean']:.2f} ± {100 * hoa['std']:.2f} |")
               for row in text.splitlines())
    assert "Predicting no effect of sharing (r = 1): " in text


def test_standley_tables_round_trip(tmp_path):
    rec, _ = random_record(3)
    path = write_standley_table(tmp_path / "t.txt", NAMES, rec["test"])
    table = read_standley_table(path, NAMES)
    assert {nw.label: dict(nw.losses) for nw in table.networks} == rec["test"]
    del rec["test"]["a+c"]
    with pytest.raises(ValueError, match="no a loss for network 'a\\+c'"):
        write_standley_table(tmp_path / "u.txt", NAMES, rec["test"])


def test_a_committed_network_retrains_to_its_stored_losses(tmp_path, monkeypatch):
    """Re-train the cheapest stored network (seed 0, half-size seg) from the recorded settings."""
    path = REPO / "benchmarks" / "results" / "ground_truth" / "ground_truth.json"
    if not path.is_file():
        pytest.skip("no committed ground truth yet (python scripts/ground_truth.py)")
    import dataclasses

    from grouping.dataspec import DataSpec
    from mtl.train import TrainConfig, train_and_evaluate
    from tasks.registry import resolve_tasks

    gt = json.loads(path.read_text())
    settings = gt["settings"]
    train = dict(settings["train"])
    cfg = dataclasses.replace(TrainConfig(**train), size=0.5, seed=0)
    data = settings["data"]
    from tasks.scene_data import same_rendering

    assert same_rendering(data["renderer"]), \
        "the renderer changed since the ground truth was recorded: rerun scripts/ground_truth.py"
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    spec = DataSpec("scenes", data["resolution"], data["seed"], tuple(data["counts"]), labels=data.get("labels"))
    tasks = resolve_tasks(gt["tasks"][0])
    report = train_and_evaluate(tasks, spec.load(tasks), cfg, progress=False)
    stored = gt["runs"]["0"]
    name = gt["tasks"][0]
    for split in ("validation", "test"):
        # CPU float nondeterminism (ensemble vs alone, thread scheduling) stays far below 2%.
        assert report[split][name]["loss"] == pytest.approx(stored[split][f"half:{name}"][name], rel=0.02)


def test_select_networks_runs_on_the_committed_tables_and_agrees_with_the_evaluation():
    out = REPO / "benchmarks" / "results" / "ground_truth"
    if not (out / "evaluation.json").is_file():
        pytest.skip("no committed ground truth yet (python scripts/ground_truth.py)")
    import subprocess
    import sys

    ev = json.loads((out / "evaluation.json").read_text())
    for seed in map(str, ev["seeds"]):
        for method, key in (("optimal", "optimal"), ("hoa", "hoa")):
            proc = subprocess.run(
                [sys.executable, str(REPO / "scripts" / "select_networks.py"), "--table", str(out / f"seed{seed}" / "results.txt"),
                 "--test-table", str(out / f"seed{seed}" / "results_test.txt"), "--budgets", "1:5:0.5",
                 "--method", method, "--objective", ev.get("objective", "loss"), "--json"],
                capture_output=True, text=True, check=True)
            totals = [r["test_total"] for r in json.loads(proc.stdout)["results"]]
            assert totals == pytest.approx(ev["per_seed"][seed]["totals"][key], rel=1e-4), (seed, method)


@pytest.mark.parametrize("objective", ["relative", "loss"])
def test_the_evaluation_chooses_what_find_groups_chooses(objective, tmp_path, monkeypatch):
    """Every method's choice and the baselines, from find_groups on a store filled with a record's
    numbers and from the evaluation of that record: the same. The record's test losses are its
    validation losses, so find_groups' predicted totals (exhaustive) must equal the evaluation's."""
    import grouping.affinity
    import mtl.ensemble
    import mtl.train
    from grouping.find_groups import Options, find_groups, setup
    from grouping.dataspec import DataSpec
    from grouping.runner import candidate_specs
    from grouping.store import ResultsStore

    names = ("seg", "depth", "normals")
    rec, _ = random_record(11, names)
    rec["test"] = rec["validation"]
    rec["affinity_run"]["test"] = rec["affinity_run"]["validation"]
    ev = G.evaluate_seed(rec, names, BUDGETS, objective)

    monkeypatch.setattr(mtl.train, "train_and_evaluate", lambda *a, **k: pytest.fail("a network was trained"))
    monkeypatch.setattr(mtl.ensemble, "train_ensemble_and_evaluate", lambda *a, **k: pytest.fail("a network was trained"))
    monkeypatch.setattr(DataSpec, "load", lambda self, tasks, **kw: {})
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(grouping.affinity, "train_with_affinity", lambda tasks, splits, cfg, **kw: {
        "tag": np.array(rec["tag"]), "cs": np.array(rec["cs"]), "train_seconds": 1.0,
        **{split: {t: {"loss": v} for t, v in rec["affinity_run"][split].items()} for split in ("validation", "test")}})

    def options(method):
        return Options(cost="nominal", tasks=",".join(names), budgets=list(BUDGETS), method=method, objective=objective,
                       data=DataSpec("scenes", 32, 0, (16, 8, 8)), steps=40, out=tmp_path / "run", progress=False,
                       overwrite=True)  # one run directory for every method: each report replaces the last

    s = setup(options("exhaustive"))
    with ResultsStore(tmp_path / "run" / "store.sqlite") as store:
        runner = s.runner(options("exhaustive"), store)
        for spec in candidate_specs(names):
            for key, steps in (("validation", None), ("early_validation", 8)):  # esa: 0.2 x 40 steps
                losses = {t: {"loss": v} for t, v in rec[key][spec.label].items()}
                store.put(runner.settings_for(spec, steps), {"validation": losses, "test": losses, "train_seconds": 0.1})
    for method, key in (("exhaustive", "optimal"), ("esa", "esa"), ("hoa", "hoa"), ("tag", "tag"), ("cs", "cs")):
        report = find_groups(options(method), echo=lambda line: None)
        chosen = [[nw["label"] for nw in sel["networks"]] for sel in report["selections"]]
        assert chosen == ev["choices"][key], method
    # exhaustive's report: its predicted totals are the evaluation's totals on the same losses.
    report = find_groups(options("exhaustive"), echo=lambda line: None)
    for i, sel in enumerate(report["selections"]):
        base = sel["baselines"]
        assert sel["predicted_total"] == pytest.approx(ev["totals"]["optimal"][i])
        assert base["all_in_one"]["predicted_total"] == pytest.approx(ev["totals"]["all_in_one"][i])
        if base["one_per_task"] is None:
            assert ev["totals"]["independent"][i] is None
        else:
            assert base["one_per_task"]["predicted_total"] == pytest.approx(ev["totals"]["independent"][i])
        assert base["random"]["predicted_total"] == pytest.approx(ev["totals"]["random_mean"][i])


def without_learning_rate_sum(record: dict, steps: int = 40) -> dict:
    """`record` without its affinity run's summed learning rate, which scripts/ground_truth.py adds to a record
    from before tag's losses were read off its matrix (checked: the sum of the schedule of `steps` steps)."""
    from mtl.train import TrainConfig, learning_rate_schedule

    schedule = learning_rate_schedule(TrainConfig(steps=steps))
    assert record["affinity_run"].pop("learning_rate_sum") == pytest.approx(
        sum(float(schedule(i)) for i in range(steps)))
    return record


def test_methods_are_merged_into_a_finished_record_and_evaluated(tmp_path, monkeypatch):
    """scripts/ground_truth.py --methods surrogate,lookahead on a hand-made record: each seed's recorded
    runs are kept, the new evidence is added, nothing but the lookahead's probe run is trained, and the
    evaluation covers every method present."""
    import importlib.util
    import sys

    import grouping.lookahead
    import mtl.ensemble
    import mtl.train
    from grouping.dataspec import DataSpec

    spec = importlib.util.spec_from_file_location("ground_truth_script", REPO / "scripts" / "ground_truth.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    names = ("seg", "depth", "normals")
    out, run = tmp_path / "gt", tmp_path / "run"
    args = ["--tasks", ",".join(names), "--seeds", "0,1", "--resolution", "32", "--counts", "16,8,8", "--steps", "40",
            "--batch-size", "8", "--out", str(out), "--run-dir", str(run), "--quiet"]
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(sys, "argv", ["ground_truth.py", *args])
    gt = {"tasks": list(names), "letters": ["s", "d", "n"],
          "settings": script.record_settings(script.build_parser().parse_args(args), names),
          "runs": {str(s): random_record(20 + s, names)[0] for s in (0, 1)}}
    for s in (0, 1):
        gt["runs"][str(s)]["seconds"] = {"exhaustive": 10.0}
    out.mkdir()
    (out / "ground_truth.json").write_text(json.dumps(gt))
    before = json.loads(json.dumps(gt))

    monkeypatch.setattr(mtl.train, "train_and_evaluate", lambda *a, **k: pytest.fail("a network was trained"))
    monkeypatch.setattr(mtl.ensemble, "train_ensemble_and_evaluate", lambda *a, **k: pytest.fail("a network was trained"))
    real_load = DataSpec.load
    # No network's data are loaded (nothing trains); the setting checks' constant losses read the test split.
    monkeypatch.setattr(DataSpec, "load", lambda self, tasks, splits=None, **kw:
                        {} if splits is None else real_load(self, tasks, splits=splits, **kw))
    probes = []
    zn = np.array([[1.0, 0.5, -0.1], [0.3, 1.0, 0.2], [0.1, 0.4, 1.0]])

    def probe_run(tasks, splits, cfg, *, every, checkpoint_dir, progress=True):
        probes.append((cfg.seed, cfg.steps, every))
        seed_record = gt["runs"][str(cfg.seed)]
        return {"lookahead": 0.01 * zn, "normalised": zn, "inner": zn, "gram": zn, "measurements": 4,
                "names": list(names), "train_seconds": 1.0,
                **{split: {t: {"loss": v} for t, v in seed_record["affinity_run"][split].items()}
                   for split in ("validation", "test")}}

    monkeypatch.setattr(grouping.lookahead, "train_with_lookahead", probe_run)
    assert script.main(args + ["--methods", "surrogate,lookahead", "--surrogate-samples", "2"]) == 0
    assert probes == [(0, 40, 10), (1, 40, 10)]
    merged = json.loads((out / "ground_truth.json").read_text())
    for s in ("0", "1"):
        record, old = merged["runs"][s], before["runs"][s]
        without_learning_rate_sum(record)
        for key, value in old.items():  # every recorded run is kept as it was
            if key != "seconds":
                assert record[key] == value, key
        assert set(record["seconds"]) == {"exhaustive", "surrogate", "lookahead"}
        assert record["seconds"]["exhaustive"] == 10.0
        assert record["surrogate"]["samples"] == 2 and record["surrogate"]["seed"] == int(s)
        assert len(record["surrogate"]["sample"]) == 2  # 2 of the 3 pairs (its pool: subsets of 2 to n - 1 tasks)
        assert record["lookahead"]["normalised"] == zn.tolist()
        assert record["lookahead"]["validation"] == old["affinity_run"]["validation"]
    assert merged["settings"]["merged"][0]["methods"] == ["surrogate", "lookahead"]
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["estimators"] == ["esa", "hoa", "surrogate", "lookahead", "tag", "cs"]
    assert ev["per_seed"]["0"]["choices"]["lookahead"] == G.evaluate(merged)["per_seed"]["0"]["choices"]["lookahead"]
    assert "| surrogate |" in (out / "evaluation.md").read_text()

    # Another setting, an unrecorded seed, or no record: refused before any training.
    with pytest.raises(ValueError, match=r"train.steps 40 -> 50"):
        script.main([*args[:9], "50", *args[10:], "--methods", "surrogate"])
    with pytest.raises(ValueError, match="no run of seed"):
        script.main([*args[:3], "0,5", *args[4:], "--methods", "surrogate"])
    with pytest.raises(ValueError, match="does not exist"):
        script.main([*args, "--out", str(tmp_path / "none"), "--methods", "surrogate"])
    assert probes == [(0, 40, 10), (1, 40, 10)]


def test_a_record_grows_by_the_seeds_it_lacks_and_keeps_the_ones_it_has(tmp_path, monkeypatch):
    """scripts/ground_truth.py --seeds 0,1 on a record of seed 0 trains seed 1 only and keeps seed 0 as
    it was; a record of other settings is refused before any training."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("ground_truth_script", REPO / "scripts" / "ground_truth.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    names = ("seg", "depth", "normals")
    out = tmp_path / "gt"
    args = ["--tasks", ",".join(names), "--seeds", "0,1", "--resolution", "32", "--counts", "16,8,8", "--steps", "40",
            "--batch-size", "8", "--out", str(out), "--run-dir", str(tmp_path / "run"), "--quiet"]
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(sys, "argv", ["ground_truth.py", *args])
    gt = {"tasks": list(names), "letters": ["s", "d", "n"],
          "settings": script.record_settings(script.build_parser().parse_args(args), names),
          "runs": {"0": random_record(30, names)[0]}}
    out.mkdir()
    (out / "ground_truth.json").write_text(json.dumps(gt))
    asked = []

    def collect_seeds(args_, names_, seeds, methods=None, on_seed=None):
        asked.append(list(seeds))
        for s in seeds:
            on_seed(str(s), random_record(40 + s, names)[0])

    monkeypatch.setattr(script, "collect_seeds", collect_seeds)
    monkeypatch.setattr(script, "constant_test_losses", lambda gt: None)
    assert script.main(args) == 0
    assert asked == [[1]]
    grown = json.loads((out / "ground_truth.json").read_text())
    assert without_learning_rate_sum(grown["runs"]["0"]) == json.loads(json.dumps(gt["runs"]["0"]))
    assert without_learning_rate_sum(grown["runs"]["1"]) == json.loads(json.dumps(random_record(41, names)[0]))
    assert grown["settings"]["added"][0]["seeds"] == [1]
    assert json.loads((out / "evaluation.json").read_text())["seeds"] == [0, 1]
    assert script.main(args) == 0 and asked == [[1], []]  # nothing left to train
    with pytest.raises(ValueError, match=r"train.steps 40 -> 50"):
        script.main([*args[:9], "50", *args[10:]])
    assert asked == [[1], []]
