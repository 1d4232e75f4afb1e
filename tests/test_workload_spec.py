"""Workload specs: parsing (inline, YAML, JSON, presets), validation messages, scaling, presets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import BaseModel

from servelab.errors import ServelabError, WorkloadError
from servelab.workload import (
    ARRIVALS,
    PRESETS,
    ConstantSpec,
    MMPPSpec,
    OnOffSpec,
    PoissonSpec,
    RampSpec,
    StepSpec,
    WorkloadSpec,
    load_spec,
    parse_spec,
)

INLINE = {
    "poisson:rate=50": PoissonSpec(rate_rps=50.0),
    "constant:rate_rps=2.5;duration=10": ConstantSpec(rate_rps=2.5, duration_s=10.0),
    "mmpp:rates=5,50;sojourn=10,2": MMPPSpec(rates_rps=(5.0, 50.0), sojourn_s=(10.0, 2.0)),
    "mmpp:rates=1,2;q=-0.1,0.1/0.5,-0.5": MMPPSpec(rates_rps=(1.0, 2.0), q_per_s=((-0.1, 0.1), (0.5, -0.5))),
    "mmpp:rates=1,2,3;sojourn=1,1,1;jump=0,1,0/0.5,0,0.5/0,1,0": MMPPSpec(
        rates_rps=(1, 2, 3), sojourn_s=(1, 1, 1), jump=((0, 1, 0), (0.5, 0, 0.5), (0, 1, 0))
    ),
    "step:rates=10,50,100;steps=30": StepSpec(rates_rps=(10, 50, 100), steps_s=(30,)),
    "ramp:start=0;end=100;ramp_s=30": RampSpec(start_rps=0, end_rps=100, ramp_s=30),
    "onoff:on_rate=100;on=2;off=8": OnOffSpec(on_rate_rps=100, on_s=2, off_s=8),
    " poisson : rate = 5 ; duration_s = 9 ": PoissonSpec(rate_rps=5, duration_s=9),
}


@pytest.mark.parametrize("text", INLINE)
def test_inline_specs_parse_to_the_expected_model(text):
    assert load_spec(text) == INLINE[text]


@pytest.mark.parametrize("spec", [*INLINE.values(), *PRESETS.values()], ids=lambda s: s.to_inline())
def test_to_inline_round_trips(spec):
    assert load_spec(spec.to_inline()) == spec


def test_registry_covers_every_kind_and_specs_are_frozen():
    assert set(ARRIVALS) == {"poisson", "constant", "mmpp", "step", "ramp", "onoff", "trace"}
    assert all(cls.model_fields["kind"].default == kind for kind, cls in ARRIVALS.items())
    spec = PoissonSpec(rate_rps=1.0)
    with pytest.raises(Exception, match="frozen"):
        spec.rate_rps = 2.0  # type: ignore[misc]


def test_yaml_and_json_files(tmp_path):
    y = tmp_path / "w.yaml"
    y.write_text("kind: mmpp\nrates_rps: [5, 50]\nsojourn_s: [10, 2]\nduration_s: 120\n")
    j = tmp_path / "w.json"
    j.write_text(json.dumps({"kind": "mmpp", "rates": [5, 50], "sojourn": [10, 2], "duration": 120}))
    expected = MMPPSpec(rates_rps=(5, 50), sojourn_s=(10, 2), duration_s=120)
    assert load_spec(str(y)) == load_spec(str(j)) == expected


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("kind: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "a workload spec is a mapping with a 'kind' key; got list"),
        ("rate_rps: 5\n", "has no 'kind'; allowed kinds: poisson, constant, mmpp, step, ramp, onoff, trace"),
        ("kind: gamma\n", "unknown kind 'gamma'"),
    ],
)
def test_bad_spec_files_are_explained(tmp_path, content, fragment):
    path = tmp_path / "w.yaml"
    path.write_text(content)
    with pytest.raises(WorkloadError, match=fragment.replace("[", r"\[")):
        load_spec(str(path))


def test_missing_spec_file_is_reported(tmp_path):
    with pytest.raises(WorkloadError, match="does not exist"):
        load_spec(str(tmp_path / "none.yaml"))


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("gamma:shape=2", ["'gamma' is not a kind", "poisson, constant, mmpp", "low, medium, high, bursty"]),
        ("poisson:rat=5", ["unknown key 'rat'", "missing key 'rate_rps'", "rate_rps (or rate)"]),
        ("poisson", ["missing key 'rate_rps'", "duration_s (or duration)=60"]),
        ("poisson:rate=fast", ["rate: Input should be a valid number", "'fast'"]),
        ("poisson:rate=-1", ["rate: Input should be greater than 0"]),
        ("poisson:rate", ["expected key=value, got 'rate'"]),
        ("mmpp:rates=5,50", ["exactly one of q_per_s", "or transition", "got none"]),
        ("mmpp:rates=5,50;sojourn=1,2;q=-1,1/1,-1", ["got q_per_s and sojourn_s"]),
        ("mmpp:rates=5,50,7;sojourn=1,2", ["sojourn_s has 2 entries but rates_rps has 3"]),
        ("mmpp:rates=5,50;q=-1,1,0/1,-2,1/0,1,-1", ["q_per_s is 3 x 3 but rates_rps has 2"]),
        ("mmpp:rates=5,50;q=-1,-1/1,-1", ["Q[0][1] = -1.0 is negative"]),
        ("mmpp:rates=5,50;q=-1,1/1,-2", ["Q row 1 sums to -1, not 0", "set Q[1][1] = -1"]),
        ("mmpp:rates=5,50,7;q=-1,1,0/1,-1,0/0,0,0", ["more than one stationary distribution"]),
        ("mmpp:rates=5,-50;sojourn=1,2", ["rates.1: Input should be greater than or equal to 0"]),
        ("mmpp:rates=5,50;q=-1,1/1,-1;jump=0,1/1,0", ["jump probabilities go with sojourn_s"]),
        ("mmpp:rates=5;sojourn=3", ["one-state MMPP never leaves its state"]),
        ("mmpp:rates=5,50;sojourn=1,2;initial_state=2", ["initial_state 2 is out of range; states are 0..1"]),
        ("step:rates=1,2;steps=1,2,3", ["steps_s has 3 entries but rates_rps has 2"]),
        ("ramp:start=0;end=0", ["a ramp from 0 to 0 rps has no arrivals"]),
    ],
)
def test_invalid_specs_name_the_key_and_what_is_allowed(text, fragments):
    with pytest.raises(WorkloadError) as info:
        load_spec(text)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert isinstance(info.value, ServelabError)


def test_constructing_a_bad_spec_in_code_raises_workload_error():
    with pytest.raises(WorkloadError, match="Q row 0 sums"):
        MMPPSpec(rates_rps=(1.0, 2.0), q_per_s=((-1.0, 2.0), (1.0, -1.0)))


def test_scaled_multiplies_rates_and_keeps_time_structure():
    spec = PRESETS["bursty"]
    double = spec.scaled(2.0)
    assert isinstance(double, MMPPSpec)
    assert double.rates_rps == tuple(2 * r for r in spec.rates_rps)
    assert double.sojourn_s == spec.sojourn_s and double.duration_s == spec.duration_s
    assert double.mean_rate_rps == pytest.approx(2 * spec.mean_rate_rps)
    for s in INLINE.values():
        assert s.scaled(0.5).mean_rate_rps == pytest.approx(0.5 * s.mean_rate_rps)
        assert s.scaled(0.5).peak_rate_rps == pytest.approx(0.5 * s.peak_rate_rps)


@pytest.mark.parametrize("factor", [0.0, -1.0, float("nan")])
def test_scaled_rejects_non_positive_factors(factor):
    with pytest.raises(WorkloadError, match="scale factor must be a finite number > 0"):
        PoissonSpec(rate_rps=1.0).scaled(factor)


def test_mean_rates():
    assert MMPPSpec(rates_rps=(5.0, 50.0), sojourn_s=(10.0, 2.0)).mean_rate_rps == pytest.approx(12.5)
    assert RampSpec(start_rps=10.0, end_rps=30.0).mean_rate_rps == pytest.approx(20.0)
    assert RampSpec(
        start_rps=0.0, end_rps=100.0, ramp_s=50.0, duration_s=100.0
    ).mean_rate_rps == pytest.approx(75.0)
    assert OnOffSpec(
        on_rate_rps=100.0, off_rate_rps=10.0, on_s=1.0, off_s=9.0
    ).mean_rate_rps == pytest.approx(19.0)
    step = StepSpec(rates_rps=(10.0, 40.0), steps_s=(30.0, 10.0))
    assert step.duration_s == 40.0 and step.mean_rate_rps == pytest.approx(17.5)


def test_presets_are_valid_mmpp_loads_in_increasing_order():
    assert set(PRESETS) == {"low", "medium", "high", "bursty"}
    for name, spec in PRESETS.items():
        assert isinstance(spec, MMPPSpec), name
        assert np.allclose(spec.generator.sum(axis=1), 0.0)
        assert load_spec(name) is spec
    means = [PRESETS[n].mean_rate_rps for n in ("low", "medium", "high")]
    assert means == sorted(means) and means[0] < 5 < 100 < means[2]
    bursty = PRESETS["bursty"]
    assert bursty.peak_rate_rps / bursty.mean_rate_rps > 5  # bursts well above the average


def test_spec_embeds_in_other_pydantic_models_as_a_discriminated_union():
    class Experiment(BaseModel):
        workload: WorkloadSpec

    exp = Experiment.model_validate({"workload": {"kind": "onoff", "on_rate": 5, "on": 1, "off": 2}})
    assert isinstance(exp.workload, OnOffSpec)
    assert Experiment.model_validate_json(exp.model_dump_json()) == exp


def test_parse_spec_prefixes_the_source():
    with pytest.raises(WorkloadError, match=r"^experiment.yaml: missing key"):
        parse_spec({"kind": "poisson"}, source="experiment.yaml")


def test_to_inline_keeps_an_explicit_duration_that_differs_from_the_derived_one():
    step = StepSpec(rates_rps=(1.0, 2.0), steps_s=(10.0,), duration_s=60.0)  # derived would be 20
    assert load_spec(step.to_inline()).duration_s == 60.0
