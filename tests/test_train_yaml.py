"""Job and net YAML validation: every error names the layer (or key) at fault and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from servelab.errors import ConfigError
from servelab.train.job import cluster_workers, load_job
from servelab.train.net import NetConfig, build_net

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "train"


def _build(layers: str) -> None:
    build_net(NetConfig.from_yaml("layers:\n" + layers))


def _error(layers: str) -> str:
    with pytest.raises(ConfigError) as e:
        _build(layers)
    return str(e.value)


DATA = "  - {name: data, type: input, shape: [4]}\n"


def test_unknown_layer_type_names_the_layer_and_lists_known_types() -> None:
    msg = _error(DATA + "  - {name: fc1, type: fully_connected, srclayers: data, num_output: 3}\n")
    assert "layer 'fc1'" in msg and "'fully_connected'" in msg
    for known in ("inner_product", "convolution", "rnn", "softmax_loss"):
        assert known in msg


def test_missing_source_layer_names_the_layer_and_the_missing_source() -> None:
    msg = _error(DATA + "  - {name: fc1, type: inner_product, srclayers: dta, num_output: 3}\n")
    assert "layer 'fc1'" in msg and "'dta' does not exist" in msg and "data" in msg


def test_a_cycle_is_reported_with_its_layers() -> None:
    msg = _error(DATA + "  - {name: a, type: concat, srclayers: [data, c]}\n"
                        "  - {name: b, type: relu, srclayers: a}\n"
                        "  - {name: c, type: relu, srclayers: b}\n")
    assert "cycle" in msg and "a -> b -> c -> a" in msg


def test_a_self_loop_is_a_cycle() -> None:
    assert "itself" in _error(DATA + "  - {name: a, type: add, srclayers: [data, a]}\n")


def test_shape_mismatch_names_the_layer_and_its_input_shapes() -> None:
    msg = _error(DATA + "  - {name: other, type: input, shape: [5]}\n"
                        "  - {name: sum, type: add, srclayers: [data, other]}\n")
    assert "layer 'sum' (add)" in msg and "(2, 4)" in msg and "(2, 5)" in msg


def test_convolution_on_a_vector_is_a_shape_error_naming_the_layer() -> None:
    msg = _error(DATA + "  - {name: conv1, type: convolution, srclayers: data, num_filters: 3}\n")
    assert "layer 'conv1'" in msg and "(batch, channels, height, width)" in msg


def test_scores_and_labels_that_do_not_line_up_are_named() -> None:
    msg = _error(DATA + "  - {name: label, type: input, shape: [3], dtype: int64}\n"
                        "  - {name: loss, type: softmax_loss, srclayers: [data, label]}\n")
    assert "layer 'loss'" in msg and "do not match labels" in msg


def test_float_labels_are_refused_with_the_fix() -> None:
    msg = _error(DATA + "  - {name: label, type: input, shape: []}\n"
                        "  - {name: loss, type: softmax_loss, srclayers: [data, label]}\n")
    assert "int64" in msg and "layer 'loss'" in msg


def test_unknown_and_missing_options_name_the_layer() -> None:
    msg = _error(DATA + "  - {name: fc1, type: inner_product, srclayers: data, num_outputs: 3}\n")
    assert "layer 'fc1' (inner_product)" in msg and "num_output" in msg and "num_outputs" in msg


def test_wrong_number_of_sources_is_named() -> None:
    msg = _error(DATA + "  - {name: fc1, type: inner_product, srclayers: [data, data], num_output: 3}\n")
    assert "layer 'fc1'" in msg and "exactly 1" in msg


def test_a_multi_output_source_must_be_indexed() -> None:
    msg = _error(DATA + "  - {name: sl, type: slice, srclayers: data, num_slices: 2}\n"
                        "  - {name: r, type: relu, srclayers: sl}\n")
    assert "sl:0" in msg and "layer 'r'" in msg
    assert "does not exist" in _error(DATA + "  - {name: sl, type: slice, srclayers: data, num_slices: 2}\n"
                                             "  - {name: r, type: relu, srclayers: 'sl:2'}\n")


def test_duplicate_and_invalid_names_are_refused() -> None:
    assert "unique" in _error(DATA + DATA)
    assert "reserved" in _error(DATA + "  - {name: forward, type: relu, srclayers: data}\n")
    assert "layer name" in _error(DATA + "  - {name: 'a.b', type: relu, srclayers: data}\n")


def test_reserved_loss_and_accuracy_names() -> None:
    assert "reserved" in _error(DATA + "  - {name: loss, type: relu, srclayers: data}\n")
    assert "reserved" in _error(DATA + "  - {name: accuracy, type: relu, srclayers: data}\n")


def test_an_unsupported_input_dtype_lists_the_allowed_ones() -> None:
    msg = _error("  - {name: a, type: input, shape: [1], dtype: float64}\n")
    assert "layer 'a' (input)" in msg and "float32" in msg and "int64" in msg


def test_job_errors_name_the_key(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("neuralnet: {layers: [{name: data, type: input, shape: [2]}]}\n"
                   "updater: {type: sgdd}\ntrain_step: 10\n")
    with pytest.raises(ConfigError) as e:
        load_job(job)
    assert "updater.type" in str(e.value) and "train_step" in str(e.value)


def test_job_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    job = tmp_path / "bad.yaml"
    job.write_text("neuralnet: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_job(job)


def test_relative_data_paths_resolve_against_the_job_file(tmp_path: Path) -> None:
    job = tmp_path / "j.yaml"
    job.write_text("neuralnet: {layers: [{name: data, type: input, shape: [2]}]}\n"
                   "data: {type: csv, train: d/train.csv}\n")
    assert load_job(job).data.train == tmp_path / "d" / "train.csv"


def test_linear_and_cosine_schedules_default_to_train_steps(tmp_path: Path) -> None:
    job = tmp_path / "j.yaml"
    job.write_text("neuralnet: {layers: [{name: data, type: input, shape: [2]}]}\ntrain_steps: 77\n"
                   "updater: {learning_rate: {type: cosine, base: 0.1}}\n")
    assert load_job(job).updater.learning_rate.total_steps == 77


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_jobs_validate_and_build(example: str) -> None:
    job = load_job(EXAMPLES / example)
    net = build_net(job.neuralnet)
    assert net.input_names and net.loss_sources


def test_cluster_workers_counts_groups_times_workers() -> None:
    assert cluster_workers({}) == 1
    assert cluster_workers({"nworker_groups": 2, "nworkers_per_group": 3}) == 6
    with pytest.raises(ConfigError):
        cluster_workers({"nworker_groups": "many"})
