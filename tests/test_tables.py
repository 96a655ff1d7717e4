"""Tests of grouping.tables: Standley text tables, CSV tables, TAG JSON, budget lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from grouping.selection import subsets_by_size
from grouping.tables import (
    TableError,
    parse_budgets,
    parse_network_label,
    read_affinity,
    read_loss_csv,
    read_loss_table,
    read_standley_table,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"  # the papers' released tables


def fixture(*parts: str) -> Path:
    path = FIXTURES.joinpath(*parts)
    assert path.exists(), f"{path} is missing: the papers' tables ship in the repository (fixtures/)"
    return path


def standley_text(tasks=("a", "b", "c"), drop=None, swap=None, value=lambda t, s: f"0.{len(s)}{ord(t) % 10}") -> str:
    """A well-formed Standley table for ``tasks``; optionally drop or swap full-size rows."""
    lines = ["\t".join(value(t, (t,)) for t in tasks)]
    rows = []
    for subset in subsets_by_size(tasks):
        rows.append("\t".join(value(t, subset) if t in subset else "" for t in tasks))
    if swap:
        i, j = swap
        rows[i], rows[j] = rows[j], rows[i]
    if drop is not None:
        del rows[drop]
    return "\n".join(lines + rows) + "\n"


def write(tmp_path: Path, text: str, name: str = "table.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------
# Standley text format
# --------------------------------------------------------------------------


def test_reads_all_fixture_tables():
    folder = fixture("standley2020")
    for path in sorted(folder.glob("*.txt")):
        if path.name == "results_alt_20.txt":
            continue
        table = read_standley_table(path)
        assert table.tasks == ("s", "d", "n", "k", "t")
        assert len(table.networks) == 36 and table.missing == ()
    table = read_standley_table(folder / "results.txt")
    half_s, full_s, all_tasks = table.networks[0], table.networks[5], table.networks[-1]
    assert (half_s.label, half_s.cost, half_s.losses) == ("half:s", 0.5, {"s": 0.08021})
    assert (full_s.label, full_s.cost, full_s.losses) == ("s", 1.0, {"s": 0.08039})
    assert all_tasks.label == "s+d+n+k+t" and all_tasks.losses["t"] == 0.04453
    assert [nw.tasks for nw in table.networks[5:]] == subsets_by_size(table.tasks)


def test_short_table_is_an_error_unless_allowed():
    path = fixture("standley2020", "results_alt_20.txt")
    with pytest.raises(TableError, match=r"results_alt_20.txt:11: expected network 'd\+n'.*lacks 'd\+n'"):
        read_standley_table(path)
    table = read_standley_table(path, allow_missing=True)
    assert table.missing == ("d+n",) and len(table.networks) == 35
    assert "d+n" not in {nw.label for nw in table.networks}


def test_task_names_and_widths(tmp_path):
    path = write(tmp_path, standley_text(("a", "b", "c")))
    with pytest.raises(TableError, match=":1: 3 columns; pass the task names"):
        read_standley_table(path)
    table = read_standley_table(path, ["x", "y", "z"])
    assert table.tasks == ("x", "y", "z") and len(table.networks) == 3 + 7
    with pytest.raises(TableError, match=":1: 3 cells, expected 2"):
        read_standley_table(path, ["x", "y"])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda lines: lines.__setitem__(2, "\tabc\t"), r":3: 'abc' is not a number \(network 'b', task 'b'\)"),
        (lambda lines: lines.__setitem__(0, "0.1\t1e\t0.3"), r":1: '1e' is not a number \(network 'half:b', task 'b'\)"),
        (lambda lines: lines.__setitem__(2, "\tnan\t"), r":3: network 'b' has loss nan for task 'b'"),
        (lambda lines: lines.__setitem__(3, "\t\t-0.5"), r":4: network 'c' has loss -0.5 for task 'c'"),
        (lambda lines: lines.__setitem__(1, "0.1\t\t\t0.2"), r":2: 4 cells, expected 3"),
        (lambda lines: lines.__setitem__(4, "\t\t"), r":5: empty row"),
        (lambda lines: lines.__setitem__(4, "0.1\t\t"), r":5: network 'a' was already given on line 2"),
        (lambda lines: lines.insert(3, ""), r":4: empty row"),
    ],
)
def test_bad_rows(tmp_path, mutate, message):
    lines = standley_text(("a", "b", "c")).splitlines()
    mutate(lines)
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(TableError, match=message):
        read_standley_table(path, ["a", "b", "c"])


def test_out_of_order_and_truncated(tmp_path):
    swapped = write(tmp_path, standley_text(swap=(3, 4)), "swapped.txt")  # pairs a+b, a+c, b+c -> b+c before a+c
    with pytest.raises(TableError, match=r"swapped.txt:\d+: .*'a\+c'"):
        read_standley_table(swapped, ["a", "b", "c"])
    short = write(tmp_path, standley_text(drop=6), "short.txt")  # no all-task network
    with pytest.raises(TableError, match=r"short.txt:7: table ends early; it lacks 'a\+b\+c'"):
        read_standley_table(short, ["a", "b", "c"])
    assert read_standley_table(short, ["a", "b", "c"], allow_missing=True).missing == ("a+b+c",)
    with pytest.raises(TableError, match=":1: empty table"):
        read_standley_table(write(tmp_path, "\n\n", "empty.txt"), ["a"])


def test_crlf_and_trailing_blank_lines(tmp_path):
    text = standley_text().replace("\n", "\r\n") + "\r\n\r\n"
    assert len(read_standley_table(write(tmp_path, text), ["a", "b", "c"]).networks) == 10


# --------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------

GOOD_CSV = """network,task,loss,cost
half:seg,seg,0.30,
seg,seg,0.25,
depth,depth,0.5,1
seg+depth,seg,0.2,1.4
seg+depth,depth,0.45,1.4
"""


def test_csv(tmp_path):
    table = read_loss_table(write(tmp_path, GOOD_CSV, "t.csv"))
    assert table.tasks == ("seg", "depth")
    by_label = {nw.label: nw for nw in table.networks}
    assert by_label["half:seg"].cost == 0.5 and by_label["seg"].cost == 1.0
    assert by_label["seg+depth"].cost == 1.4 and by_label["seg+depth"].losses == {"seg": 0.2, "depth": 0.45}
    no_cost = read_loss_csv(write(tmp_path, "task,network,loss\nx,x,1\n", "n.csv"))
    assert no_cost.networks[0].cost == 1.0
    assert read_loss_table(tmp_path / "t.csv", ["depth"]).tasks == ("depth",)
    with pytest.raises(TableError, match="task 'pose' is not done by any network"):
        read_loss_table(tmp_path / "t.csv", ["seg", "pose"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("net,task,loss\n", ":1: the header must name"),
        ("network,task,loss,extra\n", ":1: the header must name"),
        ("network,task,loss\na,a\n", ":2: 2 fields, expected 3"),
        ("network,task,loss\na,a,x\n", r":2: 'x' is not a number \(network 'a', task 'a'\)"),
        ("network,task,loss\na,a,nan\n", ":2: network 'a' has loss nan for task 'a'"),
        ("network,task,loss\na,a,-1\n", ":2: network 'a' has loss -1 for task 'a'"),
        ("network,task,loss\na+b,c,1\n", ":2: task 'c' is not one of the tasks of network 'a\\+b'"),
        ("network,task,loss\na+b,a,1\n", ":2: network 'a\\+b' has no loss for task 'b'"),
        ("network,task,loss\na,a,1\na,a,2\n", ":3: network 'a' already has a loss for task 'a' \\(line 2\\)"),
        ("network,task,loss\na++b,a,1\n", ":2: bad network name"),
        ("network,task,loss\na+b,a,1\na+b,b,1\nb+a,a,1\n", ":4: network 'b\\+a' does the same tasks as 'a\\+b'"),
        ("network,task,loss,cost\na+b,a,1,1\na+b,b,1,2\n", ":3: cost 2 of network 'a\\+b' differs from 1 on line 2"),
        ("network,task,loss,cost\na,a,1,0\n", ":2: cost 0 of network 'a' must be finite and > 0"),
        ("network,task,loss\n", ": no networks"),
    ],
)
def test_bad_csv(tmp_path, text, message):
    with pytest.raises(TableError, match=message):
        read_loss_csv(write(tmp_path, text, "bad.csv"))


def test_network_labels():
    assert parse_network_label("a+b") == (("a", "b"), False)
    assert parse_network_label("half:seg") == (("seg",), True)
    for bad in ("", "half:", "a+", "a+a"):
        with pytest.raises(ValueError):
            parse_network_label(bad)


# --------------------------------------------------------------------------
# TAG JSON and budgets
# --------------------------------------------------------------------------


def test_affinity_json(tmp_path):
    path = fixture("tag2021", "affinities.json")
    celeba = read_affinity(f"{path}#celeba/tag")
    assert len(celeba) == 9 and celeba["Goatee"]["Mustache"] == pytest.approx(-65.42735927466887)
    with pytest.raises(TableError, match="no key 'nope'"):
        read_affinity(f"{path}#celeba/nope")
    bad = write(tmp_path, '{"a": {"b": 1},\n "b": {"a": }}', "bad.json")
    with pytest.raises(TableError, match="bad.json:2: invalid JSON"):
        read_affinity(bad)
    missing = write(tmp_path, '{"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "b": 2}}', "m.json")
    with pytest.raises(TableError, match="affinity of 'a' with 'c' is missing"):
        read_affinity(missing)
    with pytest.raises(TableError, match="not a number"):
        read_affinity(write(tmp_path, '{"a": {"b": "x"}, "b": {"a": 1}}', "s.json"))


def test_parse_budgets():
    assert parse_budgets("2") == [2.0]
    assert parse_budgets("1,2.5,3") == [1.0, 2.5, 3.0]
    assert parse_budgets("1:5:0.5") == [1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5]
    assert parse_budgets("0.1:0.3:0.1") == [0.1, 0.2, 0.3]
    assert parse_budgets("1:2:0.4") == [1.0, 1.4, 1.8]
    for bad in ("", "a", "1:2", "3:1:1", "1:2:0", "1,,2", "nan", "inf", "1,inf"):
        with pytest.raises(TableError):
            parse_budgets(bad)
