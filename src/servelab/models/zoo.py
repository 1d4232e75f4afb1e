"""The model zoo: the study's models (MobileNetV2, VGG16, ALBERT-base), their tiny test variants,
and the onnx.helper test models, each built from code into ``<out_dir>/<name>.onnx``.

Nothing is downloaded. Weights are drawn from a seeded generator (or loaded from a user's state
dict), so one name, seed and weights file always give byte-identical ONNX. Every file carries
``metadata_props`` saying how it was built (``servelab.zoo.name``, ``.seed``, ``.builder_version``,
``.weights``); :func:`build` reuses an existing file only when all of them match.

Torch and transformers are imported only when a torch model is built, so serving machines with
only the ``serve`` extra can import this module, list the zoo and build the onnx.helper models.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from servelab.errors import ModelError, RuntimeNotAvailableError, UnknownModelError
from servelab.models.tiny import TINY_BUILDERS
from servelab.tensors import TensorSpec

if TYPE_CHECKING:
    from torch import nn

# Bump when an architecture or the export changes, so files built by an older servelab are rebuilt.
BUILDER_VERSION = "1"
OPSET = 17
META_PREFIX = "servelab.zoo."
TORCH_EXTRA_HINT = "pip install 'servelab[torch]'"
WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth")
CALIBRATION_BATCH = 4  # images whose statistics set seeded models' BatchNorm running stats

ModelFamily = Literal["mobilenetv2", "vgg", "albert", "onnx-helper"]


@dataclass(frozen=True)
class ZooEntry:
    """One model the zoo can build: what it is and what it takes as input."""

    name: str
    description: str
    needs_torch: bool
    family: ModelFamily
    inputs: tuple[TensorSpec, ...]

    @property
    def input_summary(self) -> str:
        """``input float32 [batch,3,224,224]``, one clause per input."""
        return "; ".join(f"{s.name} {s.dtype} [{','.join(str(d) for d in s.shape)}]" for s in self.inputs)


@dataclass(frozen=True)
class _TorchRecipe:
    """How to construct a torch model: an ``architectures.ARCHITECTURES`` key and its arguments."""

    arch: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    vocab_size: int = 0  # token-id inputs are drawn from [0, vocab_size)


def _image(size: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec("input", ("batch", 3, size, size), "float32"),)


def _tokens(seq_len: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec("input_ids", ("batch", seq_len), "int64"),
            TensorSpec("attention_mask", ("batch", seq_len), "int64"))


# ALBERT-base (v2). Every value is spelled out: AlbertConfig() alone is ALBERT-xxlarge.
ALBERT_BASE = {
    "vocab_size": 30000, "embedding_size": 128, "hidden_size": 768, "num_hidden_layers": 12,
    "num_hidden_groups": 1, "num_attention_heads": 12, "intermediate_size": 3072,
    "hidden_act": "gelu_new", "max_position_embeddings": 512, "type_vocab_size": 2, "num_labels": 2,
}
ALBERT_TINY = {**ALBERT_BASE, "vocab_size": 1000, "embedding_size": 32, "hidden_size": 64,
               "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256,
               "max_position_embeddings": 64}

_RECIPES: dict[str, _TorchRecipe] = {
    "mobilenetv2": _TorchRecipe("mobilenetv2"),
    "vgg16": _TorchRecipe("vgg"),
    "albert-base": _TorchRecipe("albert", ALBERT_BASE, vocab_size=30000),
    "mobilenetv2-tiny": _TorchRecipe("mobilenetv2", {"width_mult": 0.25, "num_classes": 10}),
    "vgg-tiny": _TorchRecipe("vgg", {"width_div": 8, "hidden": 256, "num_classes": 10}),
    "albert-tiny": _TorchRecipe("albert", ALBERT_TINY, vocab_size=1000),
}

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("mobilenetv2", "MobileNetV2 (width 1.0), 1000 ImageNet classes, ~3.5 M parameters",
                 True, "mobilenetv2", _image(224)),
        ZooEntry("vgg16", "VGG16 (configuration D), 1000 ImageNet classes, ~138 M parameters",
                 True, "vgg", _image(224)),
        ZooEntry("albert-base", "ALBERT-base v2 sequence classifier (2 labels, 128 tokens), ~11.7 M "
                 "parameters", True, "albert", _tokens(128)),
        ZooEntry("mobilenetv2-tiny", "MobileNetV2 at width 0.25, 64x64 input, 10 classes (tests)",
                 True, "mobilenetv2", _image(64)),
        ZooEntry("vgg-tiny", "VGG16 layers at 1/8 width, classifier 256 wide, 10 classes (tests)",
                 True, "vgg", _image(224)),
        ZooEntry("albert-tiny", "ALBERT with hidden 64, 2 shared layers, 16 tokens, vocab 1000 (tests)",
                 True, "albert", _tokens(16)),
        ZooEntry("noop", "Identity on float32 [batch,4]: measures everything but inference",
                 False, "onnx-helper", (TensorSpec("input", ("batch", 4), "float32"),)),
        ZooEntry("tiny-mlp", "Two dense layers, [batch,16] -> [batch,4]",
                 False, "onnx-helper", (TensorSpec("input", ("batch", 16), "float32"),)),
        ZooEntry("tiny-cnn", "Conv-ReLU-pool-dense, [batch,3,32,32] -> [batch,10]",
                 False, "onnx-helper", _image(32)),
    )
}


def list_models() -> list[ZooEntry]:
    """Every zoo entry: the study's models first, then the test models."""
    return list(ZOO.values())


def get_entry(name: str) -> ZooEntry:
    """The entry called ``name``, or :class:`UnknownModelError` listing the known names."""
    try:
        return ZOO[name]
    except KeyError:
        raise UnknownModelError(f"no model {name!r} in the zoo; known models: {', '.join(ZOO)}") from None


def sample_inputs(name: str, batch: int = 1, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid inputs for ``name``: images in [0, 1), token ids below the vocabulary size, and an
    all-ones attention mask (every token real). Benchmarks should send these, not arbitrary ints.
    """
    entry = get_entry(name)
    rng = np.random.default_rng(seed)
    vocab = _RECIPES[name].vocab_size if name in _RECIPES else 0
    out: dict[str, np.ndarray] = {}
    for spec in entry.inputs:
        shape = spec.concrete_shape(batch)
        if spec.name == "input_ids":
            out[spec.name] = rng.integers(0, vocab, size=shape, dtype=np.int64)
        elif spec.name == "attention_mask":
            out[spec.name] = np.ones(shape, dtype=np.int64)
        else:
            out[spec.name] = rng.random(shape, dtype=np.float32)
    return out


# ------------------------------------------------------------------------------------------- build


def build(
    name: str, out_dir: Path, *, seed: int = 0, weights: Path | None = None, force: bool = False
) -> Path:
    """Write ``out_dir/<name>.onnx`` and return its path.

    An existing file built with the same name, seed, weights and builder version is reused
    unless ``force``. ``weights`` (torch models only) is a ``.safetensors`` or ``.pt``/``.pth``
    state dict that replaces the seeded weights. The file appears atomically: a reader never
    sees half of it, and a failed build leaves the previous file in place.
    """
    entry = get_entry(name)
    if weights is not None and not entry.needs_torch:
        raise ModelError(f"{name!r} is built with onnx.helper and takes no weights file; "
                         "weights apply to the torch models only")
    out = Path(out_dir) / f"{name}.onnx"
    meta = _metadata(entry, seed, weights)
    if not force and read_zoo_metadata(out) == meta:
        return out
    model = _export_torch(name, seed, weights) if entry.needs_torch else _build_helper(name, seed)
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    _save_atomic(model, out)
    return out


def cached_path(name: str, out_dir: Path, *, seed: int = 0, weights: Path | None = None) -> Path | None:
    """The path :func:`build` would reuse without building, or None if it would build."""
    out = Path(out_dir) / f"{name}.onnx"
    return out if read_zoo_metadata(out) == _metadata(get_entry(name), seed, weights) else None


def read_zoo_metadata(path: Path) -> dict[str, str]:
    """The ``servelab.zoo.*`` metadata of an ONNX file; empty if absent, unreadable or not ONNX.

    Why not ``onnx.load``: it parses every weight (1.2 s and 550 MB of memory for VGG16) to read
    a few strings. This walks the top-level protobuf fields of ``ModelProto`` and seeks past the
    graph, so checking whether a build can be reused costs milliseconds at any model size.
    """
    try:
        with Path(path).open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            props: dict[str, str] = {}
            while f.tell() < size:
                key = _read_varint(f)
                number, wire_type = key >> 3, key & 7
                if wire_type == 0:
                    _read_varint(f)
                elif wire_type in (1, 5):
                    f.seek(8 if wire_type == 1 else 4, os.SEEK_CUR)
                elif wire_type == 2:
                    length = _read_varint(f)
                    if f.tell() + length > size:
                        return {}  # truncated
                    if number == _METADATA_PROPS_FIELD:
                        entry = onnx.StringStringEntryProto.FromString(f.read(length))
                        props[entry.key] = entry.value
                    else:
                        f.seek(length, os.SEEK_CUR)
                else:
                    return {}  # groups are not used by ONNX: this is not an ONNX file
    except (OSError, ValueError, DecodeError):
        return {}
    return {k: v for k, v in props.items() if k.startswith(META_PREFIX)}


_METADATA_PROPS_FIELD = onnx.ModelProto.DESCRIPTOR.fields_by_name["metadata_props"].number  # 14


def _read_varint(f: io.BufferedReader) -> int:
    result, shift = 0, 0
    while True:
        byte = f.read(1)
        if not byte or shift > 63:
            raise ValueError("bad varint")
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return result
        shift += 7


def _metadata(entry: ZooEntry, seed: int, weights: Path | None) -> dict[str, str]:
    return {
        f"{META_PREFIX}name": entry.name,
        f"{META_PREFIX}seed": str(int(seed)),
        f"{META_PREFIX}builder_version": BUILDER_VERSION,
        f"{META_PREFIX}weights": "seeded" if weights is None else f"sha256:{_sha256(Path(weights))}",
    }


def _sha256(path: Path) -> str:
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _save_atomic(model: onnx.ModelProto, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would survive the rename; a random name keeps builds apart.
    tmp = out.parent / f".{out.name}.{secrets.token_hex(6)}.tmp"
    try:
        onnx.save(model, tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _build_helper(name: str, seed: int) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory(prefix="servelab-zoo-") as d:
        path = TINY_BUILDERS[name](Path(d) / f"{name}.onnx", seed)
        return onnx.load(str(path))


# ------------------------------------------------------------------------------------------- torch


def _require_torch(name: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise RuntimeNotAvailableError(
            f"building {name!r} needs torch, which is not installed: {TORCH_EXTRA_HINT}") from e
    if _RECIPES[name].arch == "albert":
        try:
            from transformers import AlbertConfig, AlbertForSequenceClassification  # noqa: F401
        except ImportError as e:
            raise RuntimeNotAvailableError(
                f"building {name!r} needs transformers with ALBERT, which failed to import ({e}): "
                f"{TORCH_EXTRA_HINT}") from e


def torch_module(name: str, *, seed: int = 0, weights: Path | None = None) -> nn.Module:
    """The torch module the zoo exports for ``name``, in eval mode, seeded or with ``weights``.

    Use it to compare outputs with the ONNX file or to see which state-dict keys a weights file
    needs: ``torch_module("mobilenetv2").state_dict()`` (for ALBERT, ``.hf_model.state_dict()``).
    """
    entry = get_entry(name)
    if not entry.needs_torch:
        raise ModelError(f"{name!r} is an onnx.helper model; it has no torch module")
    _require_torch(name)
    import torch

    from servelab.models.architectures import ARCHITECTURES, calibrate_batchnorm, state_dict_owner

    recipe = _RECIPES[name]
    with torch.random.fork_rng(devices=[]):  # seed without disturbing the caller's RNG
        torch.manual_seed(seed)
        module = ARCHITECTURES[recipe.arch](**recipe.kwargs)
        if weights is None:
            calibration = sample_inputs(name, CALIBRATION_BATCH, seed=seed)
            calibrate_batchnorm(module, *(torch.from_numpy(v) for v in calibration.values()))
    if weights is not None:
        _load_weights(state_dict_owner(module), Path(weights), name)
    return module.eval()


def _export_torch(name: str, seed: int, weights: Path | None) -> onnx.ModelProto:
    module = torch_module(name, seed=seed, weights=weights)
    import torch

    entry = ZOO[name]
    example = _export_example(name)
    in_names = [s.name for s in entry.inputs]
    buf = io.BytesIO()
    # The TorchScript exporter is deprecated in favour of dynamo, which cannot yet export these
    # models without onnxscript; its warnings (and transformers' tracer warnings) are noise here.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            # torch's stubs say a path; the exporter writes to any file object (the bytes are hashed here)
            module, tuple(torch.from_numpy(example[n]) for n in in_names), buf,  # type: ignore[arg-type]
            dynamo=False, opset_version=OPSET, input_names=in_names, output_names=["logits"],
            dynamic_axes={n: {0: "batch"} for n in [*in_names, "logits"]},
        )
    return onnx.load_from_string(buf.getvalue())


def _export_example(name: str) -> dict[str, np.ndarray]:
    """Batch-2 example inputs to trace with; the second sequence is padded so the traced graph
    must carry the attention mask (a tracer fed only all-ones masks could drop it)."""
    example = sample_inputs(name, batch=2)
    if "attention_mask" in example:
        example["attention_mask"][1, example["attention_mask"].shape[1] // 2:] = 0
    return example


def _read_state_dict(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in WEIGHTS_SUFFIXES:
        raise ModelError(f"weights file {path}: unsupported type {suffix!r}; "
                         f"use one of {', '.join(WEIGHTS_SUFFIXES)}")
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        import torch

        # weights_only=True: tensors and plain containers only; never run a pickle's code.
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"weights file {path} could not be read as {suffix} tensors "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "save a plain state dict with torch.save(model.state_dict(), path) or "
                         "safetensors.torch.save_file") from None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]  # checkpoints that wrap the state dict (e.g. Lightning)
    if not isinstance(loaded, Mapping):
        raise ModelError(f"weights file {path} holds a {type(loaded).__name__}, not a state dict")
    return dict(loaded)


def _load_weights(owner: nn.Module, path: Path, name: str, shown: int = 5) -> None:
    """Load ``path`` into ``owner`` strictly, or raise one ModelError that lists what is wrong."""
    import torch

    given = _read_state_dict(path)
    expected = owner.state_dict()
    # BatchNorm's step counter is unused in eval; files written by other tools often lack it.
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in expected]
    not_tensor = [k for k in given if k in expected and not isinstance(given[k], torch.Tensor)]
    bad_shape = [f"{k} (file {tuple(given[k].shape)}, model {tuple(expected[k].shape)})"
                 for k in expected if k in given and k not in not_tensor
                 and tuple(given[k].shape) != tuple(expected[k].shape)]
    problems = [
        (f"{len(keys)} {what}: " + ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else ""))
        for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                           ("values that are not tensors", not_tensor), ("shape mismatches", bad_shape))
        if keys
    ]
    if problems:
        raise ModelError(
            f"weights file {path} does not fit {name!r}: " + "; ".join(problems)
            + f". The expected keys are those of servelab.models.zoo.torch_module({name!r})"
            + (".hf_model" if _RECIPES[name].arch == "albert" else "") + ".state_dict()")
    with torch.no_grad():
        owner.load_state_dict({k: v for k, v in given.items() if k in expected}, strict=False)
