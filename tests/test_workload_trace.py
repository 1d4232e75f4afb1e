"""Replay of Azure Functions 2019 invocation-count CSVs, on small files written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servelab.errors import WorkloadError
from servelab.workload import TraceSpec, generate, load_spec
from servelab.workload import trace as trace_mod

HEADER = "HashOwner,HashApp,HashFunction,Trigger,1,2,3,4,5"
ROWS = [
    "o1,a1,fa11ce,http,3,0,5,1,2",  # total 11
    "o1,a1,fb0b,timer,10,20,30,40,50",  # total 150: the busiest
    "o2,a2,fc0ffee,queue,0,0,0,7,0",  # total 7
    "o2,a3,fd00d,http,1,1,1,1,1",  # total 5
]
COUNTS = {
    "fa11ce": [3, 0, 5, 1, 2],
    "fb0b": [10, 20, 30, 40, 50],
    "fc0ffee": [0, 0, 0, 7, 0],
    "fd00d": [1, 1, 1, 1, 1],
}


@pytest.fixture
def azure_csv(tmp_path: Path) -> Path:
    path = tmp_path / "invocations_per_function_md.anon.d01.csv"
    path.write_text("\n".join([HEADER, *ROWS]) + "\n")
    return path


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def per_minute(times: np.ndarray, minutes: int, minute_s: float = 60.0) -> list[int]:
    return np.histogram(times, bins=np.arange(minutes + 1) * minute_s)[0].tolist()


@pytest.mark.parametrize("spread", ["uniform", "even"])
def test_replay_preserves_each_minutes_count_exactly(azure_csv, spread):
    spec = TraceSpec(path=str(azure_csv), function="fa11ce", spread=spread)
    assert spec.duration_s == 300.0  # five minutes, from the header
    a = generate(spec, seed=4)
    assert per_minute(a.times_s, 5) == COUNTS["fa11ce"]
    assert np.all(np.diff(a.times_s) >= 0)


def test_even_spread_spaces_arrivals_equally_within_the_minute(azure_csv):
    a = generate(TraceSpec(path=str(azure_csv), function="fb0b", spread="even"), seed=0)
    first_minute = a.times_s[:10]
    np.testing.assert_allclose(first_minute, (np.arange(10) + 0.5) * 6.0)


def test_uniform_spread_differs_by_seed_but_not_by_count(azure_csv):
    spec = TraceSpec(path=str(azure_csv), function="fb0b")
    a, b = generate(spec, seed=1), generate(spec, seed=2)
    assert per_minute(a.times_s, 5) == per_minute(b.times_s, 5) == COUNTS["fb0b"]
    assert not np.array_equal(a.times_s, b.times_s)


def test_time_compression_keeps_counts_per_compressed_minute(azure_csv):
    spec = TraceSpec(path=str(azure_csv), function="fb0b", minute_s=6.0)
    assert spec.duration_s == 30.0
    a = generate(spec, seed=0)
    assert per_minute(a.times_s, 5, minute_s=6.0) == COUNTS["fb0b"]
    assert spec.peak_rate_rps == pytest.approx(50 / 6.0)
    assert spec.mean_rate_rps == pytest.approx(150 / 30.0)


def test_integer_count_scale_multiplies_exactly(azure_csv):
    spec = TraceSpec(path=str(azure_csv), function="fa11ce").scaled(3.0)
    assert spec.count_scale == 3.0
    assert per_minute(generate(spec, seed=0).times_s, 5) == [3 * c for c in COUNTS["fa11ce"]]


def test_fractional_count_scale_rounds_each_minute_up_or_down(azure_csv):
    spec = TraceSpec(path=str(azure_csv), function="fb0b", count_scale=0.25)
    got = np.array(per_minute(generate(spec, seed=None).times_s, 5))
    exact = np.array(COUNTS["fb0b"]) * 0.25
    assert np.all((got == np.floor(exact)) | (got == np.ceil(exact)))


def test_fractional_scaling_keeps_the_expected_total(tmp_path):
    n = 1440
    path = tmp_path / "day.csv"
    path.write_text(
        "HashOwner,HashApp,HashFunction,Trigger," + ",".join(map(str, range(1, n + 1))) + "\n"
        "o,a,f,http," + ",".join(["3"] * n) + "\n"
    )
    spec = TraceSpec(path=str(path), count_scale=0.5, minute_s=1.0)
    got = len(generate(spec))
    # each minute: 1 + Bernoulli(0.5)
    assert abs(got - 1.5 * n) < 6 * np.sqrt(0.25 * n)


def test_selection_by_row_prefix_and_top_n(azure_csv):
    def counts(**kw) -> list[int]:
        return per_minute(generate(TraceSpec(path=str(azure_csv), **kw), seed=0).times_s, 5)

    assert counts(row=2) == COUNTS["fc0ffee"]
    assert counts(function="fc0f") == COUNTS["fc0ffee"]  # a unique prefix is enough
    assert counts() == COUNTS["fb0b"]  # default: the busiest function
    assert counts(top=2) == [a + b for a, b in zip(COUNTS["fb0b"], COUNTS["fa11ce"], strict=True)]
    assert counts(top=99) == np.sum(list(COUNTS.values()), axis=0).tolist()


def test_top_n_does_not_depend_on_how_the_file_is_split_into_blocks(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    mat = rng.integers(0, 50, size=(400, 12))
    path = tmp_path / "many.csv"
    lines = ["HashOwner,HashApp,HashFunction,Trigger," + ",".join(map(str, range(1, 13)))]
    lines += [f"o{i},a{i},f{i:04d},http," + ",".join(map(str, r)) for i, r in enumerate(mat)]
    path.write_text("\n".join(lines) + "\n")
    order = np.lexsort((np.arange(400), -mat.sum(axis=1)))  # busiest first, ties by row
    expected = mat[order[:25]].sum(axis=0)
    monkeypatch.setattr(trace_mod, "BLOCK_BYTES", 1 << 10)  # ~20 rows per block
    trace_mod._select_cached.cache_clear()
    sel = trace_mod.select_counts(path, top=25)
    np.testing.assert_array_equal(sel.counts, expected)
    assert sel.n_functions == 400
    assert sel.lines == tuple(int(i) + 2 for i in order[:25])


def test_window_of_minutes(azure_csv):
    spec = TraceSpec(path=str(azure_csv), function="fb0b", start_minute=1, minutes=3)
    assert spec.duration_s == 180.0
    assert per_minute(generate(spec, seed=0).times_s, 3) == [20, 30, 40]


def test_a_shorter_duration_cuts_the_replay(azure_csv):
    spec = TraceSpec(path=str(azure_csv), function="fb0b")
    a = generate(spec, duration_s=90.0, seed=0)
    assert a.times_s.max() < 90.0
    assert np.count_nonzero(a.times_s < 60.0) == 10


def test_inline_and_yaml_specs_with_relative_trace_path(azure_csv):
    spec = load_spec(f"trace:path={azure_csv};function=fa11ce;minute_s=6;scale=2")
    assert spec.count_scale == 2.0 and spec.duration_s == 30.0
    yaml_file = azure_csv.parent / "replay.yaml"
    yaml_file.write_text(f"kind: trace\npath: {azure_csv.name}\nrow: 1\n")
    from_file = load_spec(str(yaml_file))
    assert Path(from_file.path) == azure_csv
    assert from_file.counts.tolist() == COUNTS["fb0b"]


# --- malformed files and bad selections: errors name the line and column ------------------


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        (
            ["HashOwner,HashApp,Function,Trigger,1,2", "o,a,f,http,1,2"],
            "line 1, column 3: expected 'HashFunction'",
        ),
        (
            ["HashOwner,HashApp,HashFunction,Trigger,1,3", "o,a,f,http,1,2"],
            "line 1, column 6: expected minute '2'",
        ),
        (["HashOwner,HashApp,HashFunction,Trigger"], "line 1 has no minute columns"),
        (
            [HEADER, ROWS[0], "o,a,f,http,1,x,3,4,5"],
            r"line 3, column 6 \(minute 2\): 'x' is not a whole number",
        ),
        ([HEADER, ROWS[0], ROWS[1], "o,a,f,http,1,2,3,4"], "line 4 has 8 fields, expected 9"),
        ([HEADER, "o,a,f,http,1,2,3,-4,5"], r"line 2, column 8 \(minute 4\): count -4 is negative"),
        ([HEADER, ROWS[0], "o,a,f,http,1,2,,4,5"], r"line 3, column 7 \(minute 3\): empty count"),
        ([HEADER, "o,a,f,http,1,2.5,3,4,5"], r"line 2, column 6 \(minute 2\): '2.5' is not a whole number"),
    ],
)
def test_malformed_csv_errors_name_line_and_column(tmp_path, lines, fragment):
    path = write(tmp_path, *lines)
    with pytest.raises(WorkloadError, match=fragment):
        TraceSpec(path=str(path), top=1).counts  # noqa: B018


def test_empty_and_missing_files_are_reported(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(WorkloadError, match="the file is empty"):
        TraceSpec(path=str(empty))
    with pytest.raises(WorkloadError, match="does not exist"):
        TraceSpec(path=str(tmp_path / "nope.csv"))


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"function": "zzz"}, "no function whose HashFunction is or starts with 'zzz'"),
        ({"function": "f"}, r"4 functions match 'f' \(lines 2, 3, 4, 5\)"),
        ({"row": 4}, r"row 4 is out of range; the file has 4 data rows \(0..3\)"),
        ({"start_minute": 9, "duration_s": 60}, "start_minute 9 is past the end of the trace"),
    ],
)
def test_bad_selection_is_explained(azure_csv, kw, fragment):
    with pytest.raises(WorkloadError, match=fragment):
        generate(TraceSpec(path=str(azure_csv), **kw))


def test_only_one_way_of_choosing_functions(azure_csv):
    with pytest.raises(WorkloadError, match="choose one of function, row or top; got function and row"):
        load_spec(f"trace:path={azure_csv};function=fb0b;row=1")
