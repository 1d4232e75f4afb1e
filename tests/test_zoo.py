"""The model zoo: tiny torch variants exported to ONNX and checked against torch in onnxruntime,
determinism, reuse, ALBERT weight sharing, user weights, and the no-torch path."""

from __future__ import annotations

import collections
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from servelab.errors import ModelError, RuntimeNotAvailableError, UnknownModelError
from servelab.models import zoo
from servelab.models.onnx_info import inspect_model

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

TINY_TORCH = ["mobilenetv2-tiny", "vgg-tiny", "albert-tiny"]
HELPER = ["noop", "tiny-mlp", "tiny-cnn"]
SLOW = pytest.mark.skipif(os.environ.get("SERVELAB_SLOW_TESTS") != "1",
                          reason="builds full-size VGG16/ALBERT (~30 s, 600 MB); set SERVELAB_SLOW_TESTS=1")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tracing on this shared 2-core machine is 4-6x faster single-threaded (no OpenMP spinning
    against the neighbours); the files are byte-identical either way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny model, built once with seed 0."""
    out = tmp_path_factory.mktemp("zoo")
    return {name: zoo.build(name, out) for name in [*TINY_TORCH, *HELPER]}


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _torch_outputs(module: torch.nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return module(*(torch.from_numpy(v) for v in inputs.values())).numpy()


def _inputs(name: str, batch: int = 3) -> dict[str, np.ndarray]:
    """Batch 3 (the export traced batch 2: this checks the batch axis is dynamic); for ALBERT,
    sequences padded to different lengths so the attention mask matters."""
    x = zoo.sample_inputs(name, batch, seed=11)
    if "attention_mask" in x:
        seq = x["attention_mask"].shape[1]
        for row, real in enumerate([seq, seq // 2, 3][:batch]):
            x["attention_mask"][row, real:] = 0
    return x


@pytest.mark.parametrize("name", TINY_TORCH)
def test_tiny_variant_in_onnxruntime_matches_its_torch_module(built: dict[str, Path], name: str) -> None:
    x = _inputs(name)
    got = _session(built[name]).run(["logits"], x)[0]
    want = _torch_outputs(zoo.torch_module(name), x)
    assert got.shape == want.shape == (3, 10 if "albert" not in name else 2)
    assert want.std() > 1e-3, "seeded model computes on realistic magnitudes, not ~0"
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_albert_attention_mask_changes_the_output(built: dict[str, Path]) -> None:
    x = zoo.sample_inputs("albert-tiny", 1)
    full = _session(built["albert-tiny"]).run(None, x)[0]
    x["attention_mask"][0, 4:] = 0
    padded = _session(built["albert-tiny"]).run(None, x)[0]
    assert np.abs(full - padded).max() > 1e-4


@pytest.mark.parametrize("name", [*TINY_TORCH, *HELPER])
def test_built_file_has_the_inputs_its_zoo_entry_declares(built: dict[str, Path], name: str) -> None:
    info = inspect_model(built[name])
    assert info.inputs == zoo.ZOO[name].inputs
    assert info.opset == 17
    assert info.metadata == {
        "servelab.zoo.name": name, "servelab.zoo.seed": "0",
        "servelab.zoo.builder_version": zoo.BUILDER_VERSION, "servelab.zoo.weights": "seeded",
    }
    out = _session(built[name]).run(None, zoo.sample_inputs(name, 2))[0]
    assert out.shape[0] == 2 and np.isfinite(out).all()


def test_same_name_and_seed_give_byte_identical_files(built: dict[str, Path], tmp_path: Path) -> None:
    again = zoo.build("mobilenetv2-tiny", tmp_path / "again", seed=0)
    assert again.read_bytes() == built["mobilenetv2-tiny"].read_bytes()
    other_seed = zoo.build("vgg-tiny", tmp_path / "other", seed=1)
    assert other_seed.read_bytes() != built["vgg-tiny"].read_bytes()


def test_build_reuses_a_file_with_the_same_seed_and_rebuilds_otherwise(tmp_path: Path) -> None:
    first = zoo.build("tiny-mlp", tmp_path)
    inode = first.stat().st_ino  # an atomic rename gives a rebuilt file a new inode
    assert zoo.build("tiny-mlp", tmp_path) == first and first.stat().st_ino == inode
    assert zoo.cached_path("tiny-mlp", tmp_path) == first
    assert zoo.cached_path("tiny-mlp", tmp_path, seed=1) is None
    zoo.build("tiny-mlp", tmp_path, seed=1)
    assert first.stat().st_ino != inode
    assert inspect_model(first).metadata["servelab.zoo.seed"] == "1"
    inode = first.stat().st_ino
    zoo.build("tiny-mlp", tmp_path, seed=1, force=True)
    assert first.stat().st_ino != inode
    assert not [p for p in tmp_path.iterdir() if p.name != "tiny-mlp.onnx"], "no temp files left behind"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(first.stat().st_mode) == 0o666 & ~umask, "the usual mode, not a temp file's 0600"


def test_a_corrupt_file_is_rebuilt_not_reused(tmp_path: Path) -> None:
    path = zoo.build("tiny-cnn", tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    assert zoo.read_zoo_metadata(path) == {}
    zoo.build("tiny-cnn", tmp_path)
    assert inspect_model(path).parameter_count > 0


def test_albert_shared_layer_weights_are_stored_once(built: dict[str, Path]) -> None:
    model = onnx.load(str(built["albert-tiny"]))
    layers, hidden, ffn = (zoo.ALBERT_TINY[k]
                           for k in ("num_hidden_layers", "hidden_size", "intermediate_size"))
    consumers = collections.Counter(name for node in model.graph.node for name in node.input)
    ffn_weights = [i.name for i in model.graph.initializer if list(i.dims) in ([hidden, ffn], [ffn, hidden])]
    assert len(ffn_weights) == 2, "one FFN in and one FFN out matrix for all layers"
    assert all(consumers[w] == layers for w in ffn_weights), "each used by every layer"
    torch_params = sum(p.numel() for p in zoo.torch_module("albert-tiny").parameters())
    assert inspect_model(built["albert-tiny"]).parameter_count <= torch_params


def test_reference_architectures_have_the_published_parameter_counts() -> None:
    from servelab.models.architectures import ARCHITECTURES

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        mobilenet = ARCHITECTURES["mobilenetv2"]()
        vgg = ARCHITECTURES["vgg"]()
        albert = ARCHITECTURES["albert"](**zoo.ALBERT_BASE)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(mobilenet) == 3_504_872
    assert count(vgg) == 138_357_544
    assert 11_600_000 < count(albert) < 11_800_000
    assert albert.hf_model.config.hidden_size == 768 and albert.hf_model.config.num_hidden_layers == 12


def test_full_mobilenetv2_builds_at_reference_size(tmp_path: Path) -> None:
    info = inspect_model(zoo.build("mobilenetv2", tmp_path))
    assert 3_400_000 < info.parameter_count < 3_520_000  # BatchNorm folds into the convs
    assert 13e6 < info.file_size_bytes < 15e6
    x = zoo.sample_inputs("mobilenetv2", 1)
    assert _session(info.path).run(None, x)[0].shape == (1, 1000)


# ------------------------------------------------------------------------------------------ weights


def _trained_like_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Weights that differ from seed 0's, with non-trivial BatchNorm statistics."""
    sd = zoo.torch_module(name, seed=7).state_dict()
    gen = torch.Generator().manual_seed(1)
    for key, value in sd.items():
        if key.endswith("running_var"):
            sd[key] = torch.rand(value.shape, generator=gen) + 0.5
        elif key.endswith("running_mean"):
            sd[key] = torch.randn(value.shape, generator=gen) * 0.1
    return sd


def test_safetensors_weights_round_trip_into_the_onnx_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    name = "mobilenetv2-tiny"
    weights = tmp_path / "w.safetensors"
    save_file(_trained_like_state_dict(name), str(weights))
    path = zoo.build(name, tmp_path / "out", weights=weights)
    x = _inputs(name)
    got = _session(path).run(None, x)[0]
    np.testing.assert_allclose(got, _torch_outputs(zoo.torch_module(name, weights=weights), x),
                               rtol=1e-4, atol=1e-4)
    seeded = _torch_outputs(zoo.torch_module(name), x)
    assert np.abs(got - seeded).max() > 1e-2, "the file's weights, not the seeded ones"
    assert inspect_model(path).metadata["servelab.zoo.weights"].startswith("sha256:")
    assert zoo.cached_path(name, tmp_path / "out", weights=weights) == path
    assert zoo.cached_path(name, tmp_path / "out") is None


def test_albert_weights_use_hugging_face_keys(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    weights = tmp_path / "albert.safetensors"
    save_file(zoo.torch_module("albert-tiny", seed=3).hf_model.state_dict(), str(weights))
    path = zoo.build("albert-tiny", tmp_path / "out", weights=weights)
    x = _inputs("albert-tiny")
    want = _torch_outputs(zoo.torch_module("albert-tiny", seed=3), x)
    np.testing.assert_allclose(_session(path).run(None, x)[0], want, rtol=1e-4, atol=1e-4)


def test_pt_weights_load_without_unpickling_code(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    sd = _trained_like_state_dict("mobilenetv2-tiny")
    torch.save(sd, plain)
    loaded = zoo.torch_module("mobilenetv2-tiny", weights=plain).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"features.0.0.weight": _Touch(marker)}, protocol=2))
    with pytest.raises(ModelError, match=r"could not be read as \.pt tensors"):
        zoo.build("mobilenetv2-tiny", tmp_path / "evil-out", weights=evil)
    assert not marker.exists(), "a pickle's code must never run"


class _Touch:
    """Unpickling this creates a file: what a malicious checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_mismatched_weights_name_the_bad_keys(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    sd = zoo.torch_module("mobilenetv2-tiny").state_dict()
    sd["classifier.1.weight"] = torch.zeros(5, sd["classifier.1.weight"].shape[1])
    del sd["features.0.0.weight"]
    sd["head.extra"] = torch.zeros(1)
    weights = tmp_path / "bad.safetensors"
    save_file(sd, str(weights))
    with pytest.raises(ModelError) as err:
        zoo.build("mobilenetv2-tiny", tmp_path, weights=weights)
    msg = str(err.value)
    assert "1 missing keys: features.0.0.weight" in msg
    assert "1 unexpected keys: head.extra" in msg
    assert "classifier.1.weight (file (5, 1280), model (10, 1280))" in msg
    assert not (tmp_path / "mobilenetv2-tiny.onnx").exists()


def test_weights_of_another_model_are_rejected_with_the_first_few_keys(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    weights = tmp_path / "vgg.safetensors"
    save_file(zoo.torch_module("vgg-tiny").state_dict(), str(weights))
    with pytest.raises(ModelError, match=r"missing keys: features\.0\.0\.weight, .*, \.\.\."):
        zoo.build("mobilenetv2-tiny", tmp_path, weights=weights)


@pytest.mark.parametrize(("name", "file", "message"), [
    ("mobilenetv2-tiny", "w.npz", "unsupported type '.npz'"),
    ("mobilenetv2-tiny", "absent.safetensors", "does not exist"),
    ("tiny-mlp", "w.safetensors", "takes no weights"),
])
def test_unusable_weights_arguments_say_what_to_do(
    tmp_path: Path, name: str, file: str, message: str
) -> None:
    weights = tmp_path / file
    if not file.startswith("absent"):
        weights.write_bytes(b"\0" * 16)
    with pytest.raises(ModelError, match=message):
        zoo.build(name, tmp_path, weights=weights)


# ------------------------------------------------------------------------------------- registry


def test_unknown_model_name_lists_the_known_names(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match="known models: mobilenetv2, vgg16, albert-base") as err:
        zoo.build("resnet50", tmp_path)
    assert "'resnet50'" in str(err.value)
    assert not list(tmp_path.iterdir())


def test_zoo_lists_the_study_models_and_the_helper_models() -> None:
    names = [e.name for e in zoo.list_models()]
    assert names[:3] == ["mobilenetv2", "vgg16", "albert-base"]
    assert set(HELPER) <= set(names) and set(TINY_TORCH) <= set(names)
    assert [e.name for e in zoo.list_models() if not e.needs_torch] == HELPER
    assert zoo.ZOO["albert-base"].input_summary == (
        "input_ids int64 [batch,128]; attention_mask int64 [batch,128]")


def test_sample_token_ids_stay_inside_the_vocabulary() -> None:
    x = zoo.sample_inputs("albert-base", 4)
    assert x["input_ids"].dtype == np.int64 and x["input_ids"].shape == (4, 128)
    assert x["input_ids"].max() < zoo.ALBERT_BASE["vocab_size"] and x["input_ids"].max() > 1000
    assert (x["attention_mask"] == 1).all()


# ------------------------------------------------------------------------------------- no torch


def test_without_torch_helper_models_build_and_torch_models_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert inspect_model(zoo.build("tiny-cnn", tmp_path)).parameter_count > 0
    with pytest.raises(RuntimeNotAvailableError, match=r"pip install 'servelab\[torch\]'"):
        zoo.build("mobilenetv2-tiny", tmp_path)


def test_importing_the_zoo_does_not_import_torch() -> None:
    code = "import sys, servelab.models.zoo; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------- full size


@SLOW
@pytest.mark.slow
@pytest.mark.parametrize(("name", "params", "size_mb"), [
    ("vgg16", (138_000_000, 138_400_000), (550, 556)),
    ("albert-base", (11_500_000, 11_800_000), (45, 49)),
])
def test_full_size_model_builds_and_matches_torch(
    tmp_path: Path, name: str, params: tuple[int, int], size_mb: tuple[int, int]
) -> None:
    info = inspect_model(zoo.build(name, tmp_path))
    assert params[0] < info.parameter_count < params[1], "ALBERT's shared layer stored once"
    assert size_mb[0] < info.file_size_bytes / 1e6 < size_mb[1]
    x = _inputs(name, batch=2)
    got = _session(info.path).run(None, x)[0]
    np.testing.assert_allclose(got, _torch_outputs(zoo.torch_module(name), x), rtol=1e-3, atol=1e-4)
