"""A net of named layers (SINGA's ``NeuralNet``): validated, sorted, sized by a dry run, runnable.

:func:`build_net` turns a :class:`NetConfig` (the ``neuralnet`` section of a job) into a
:class:`Net`. Building does what SINGA's ``NeuralNet::Create`` did, and reports every problem
with the name of the layer at fault:

1. each layer's type is looked up in the registry (unknown type: the known ones are listed);
2. every ``srclayers`` entry must name a layer (``NAME`` or ``NAME:i`` for multi-output layers);
3. the layers are sorted topologically (a cycle is printed as ``a -> b -> a``);
4. a dry forward pass with a batch of 2 sizes each layer from its sources' example outputs and
   turns a shape mismatch into an error that names the layer and its input shapes.

``Net.forward(batch)`` returns every layer's output by name, plus ``"loss"`` (the weighted sum
of the loss layers) and ``"accuracy"`` (the first accuracy layer) when the net has them.
Layers may be limited to a phase (``include: [train]``); the phase is the module's mode:
``net.train()`` runs the train phase, ``net.eval()`` the test phase.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn
from torch.nn.modules import module as _torch_module

from servelab.errors import ConfigError
from servelab.train.layers import Input, Layer, Phase, format_validation_error, layer_class
from servelab.train.rbm import RBM  # noqa: F401  (importing it registers the RBM layer types)

__all__ = ["LayerConfig", "Net", "NetConfig", "build_net"]

# Keys that Net.forward adds itself; a layer may only use them for what they mean.
LOSS_KEY = "loss"
ACCURACY_KEY = "accuracy"
EXAMPLE_BATCH = 2
_tracing_state = torch._C._get_tracing_state


class LayerConfig(BaseModel):
    """One entry of ``neuralnet.layers``: the fields every layer has; the rest are the type's options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    type: str
    srclayers: list[str] = Field(default_factory=list)
    partition_dim: int | None = None
    include: list[Phase] | None = None
    exclude: list[Phase] | None = None
    share_from: str | None = None
    lr_scale: float = 1.0
    wd_scale: float = 1.0

    @field_validator("srclayers", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class NetConfig(BaseModel):
    """SINGA's ``NetProto``: the layers, and the default ``partition_dim`` of those that set none."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: list[LayerConfig] = Field(min_length=1)
    partition_dim: int | None = None

    @classmethod
    def from_yaml(cls, source: str | Path) -> NetConfig:
        """Parse YAML text, or a file path, holding ``layers:`` (or a whole job's ``neuralnet:``)."""
        text = Path(source).read_text() if isinstance(source, Path) else source
        doc = yaml.safe_load(text)
        if isinstance(doc, dict) and "neuralnet" in doc:
            doc = doc["neuralnet"]
        try:
            return cls.model_validate(doc)
        except ValidationError as e:
            raise ConfigError(f"neuralnet: {format_validation_error(e)}") from None


@dataclass(frozen=True)
class _Step:
    """One layer's place in a forward plan: where its inputs come from, where its outputs go."""

    layer: Layer
    sources: tuple[str, ...]  # output keys it reads (for an input layer: the batch key)
    outputs: tuple[str, ...]  # output keys it writes
    is_input: bool

    @property
    def kind(self) -> int:
        """How :func:`_run` calls it: 0 input, 1 one source and one output, 2 several, 3 multi-output."""
        if self.is_input:
            return 0
        if len(self.outputs) > 1:
            return 3
        return 1 if len(self.sources) == 1 else 2


def _split_ref(ref: str) -> tuple[str, int | None]:
    name, sep, idx = ref.partition(":")
    if sep and not idx.isdigit():
        raise ConfigError(f"source {ref!r}: use NAME or NAME:INDEX")
    return name, (int(idx) if sep else None)


def _describe(t: torch.Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"


class Net(nn.Module):
    """A DAG of :class:`~servelab.train.layers.Layer` objects, registered by name as submodules
    (so parameters are named ``fc1.linear.weight``, as SINGA named params by layer)."""

    def __init__(self, layers: Sequence[Layer], *, partition_dim: int | None = None) -> None:
        super().__init__()
        by_name: dict[str, Layer] = {}
        for layer in layers:
            if layer.name in by_name:
                raise ConfigError(f"two layers are named {layer.name!r}; layer names must be unique")
            by_name[layer.name] = layer
            if partition_dim is not None and not layer.partition_dim_set:
                layer.partition_dim = None if partition_dim == -1 else partition_dim
        self._check_sources(by_name)
        for layer in layers:  # layers that read another layer's parameters (rbm's CD loss, decoder)
            bind = getattr(layer, "bind", None)
            if bind is not None:
                bind(by_name)
        order = _toposort(list(layers), by_name)
        self.layers: list[Layer] = order
        for layer in order:
            try:
                self.add_module(layer.name, layer)
            except KeyError:
                raise ConfigError(f"layer name {layer.name!r} is reserved (it is a Net attribute); "
                                  "rename the layer") from None
        self._by_name = by_name
        self._check_roles()
        self._dry_run()
        self._plans = {True: self._plan("train"), False: self._plan("test")}
        # The hot loop reads flat tuples: attribute lookups per layer are what a Python-level
        # net pays over hand-written code (benchmarks/bench_train_overhead.py).
        self._fast = {k: _fast_plan(v) for k, v in self._plans.items()}
        self._hooks = _hook_dicts(self.layers)
        self._losses = {k: [(s.layer.name, s.layer.options.loss_weight) for s in v  # type: ignore[attr-defined]
                            if s.layer.role == "loss"] for k, v in self._plans.items()}
        self._accuracy = {k: next((s.layer.name for s in v if s.layer.type == "accuracy"), None)
                          for k, v in self._plans.items()}
        self._metrics = {k: [s.layer.name for s in v if s.layer.role == "metric" and s.layer.type != "accuracy"]
                         for k, v in self._plans.items()}

    # -- building ------------------------------------------------------------------------------
    @staticmethod
    def _check_sources(by_name: dict[str, Layer]) -> None:
        known = ", ".join(by_name)
        for layer in by_name.values():
            for ref in layer.srclayers:
                name, idx = _split_ref(ref)
                src = by_name.get(name)
                if src is None:
                    raise ConfigError(f"layer {layer.name!r} ({layer.type}): source layer {name!r} does not exist; "
                                      f"layers are: {known}")
                if src is layer:
                    raise ConfigError(f"layer {layer.name!r} lists itself in srclayers (a cycle)")
                n = src.num_outputs
                if idx is None and n > 1:
                    raise ConfigError(f"layer {layer.name!r}: source {name!r} ({src.type}) has {n} outputs; "
                                      f"name one of {', '.join(src.output_names())}")
                if idx is not None and idx >= n:
                    raise ConfigError(f"layer {layer.name!r}: source {ref!r} does not exist; {name!r} ({src.type}) "
                                      f"has outputs {', '.join(src.output_names())}")
            if layer.share_from is not None:
                other = by_name.get(layer.share_from)
                if other is None or other is layer:
                    raise ConfigError(f"layer {layer.name!r}: share_from {layer.share_from!r} must name another "
                                      f"layer; layers are: {known}")
                if type(other) is not type(layer):
                    raise ConfigError(f"layer {layer.name!r} ({layer.type}) cannot share parameters with "
                                      f"{other.name!r} ({other.type}): types differ")

    def _check_roles(self) -> None:
        losses = [la for la in self.layers if la.role == "loss"]
        for layer in self.layers:
            if layer.name == LOSS_KEY and (layer.role != "loss" or len(losses) > 1):
                raise ConfigError(f"layer name {LOSS_KEY!r} is reserved for the net's total loss: only the single "
                                  "loss layer of a net may use it; rename the layer")
            if layer.name == ACCURACY_KEY and layer.type != "accuracy":
                raise ConfigError(f"layer name {ACCURACY_KEY!r} is reserved for an accuracy layer; rename the layer")
        if not any(la.role == "input" for la in self.layers):
            raise ConfigError("the net has no input layer: add one of type 'input' with its per-sample shape")

    def _dry_run(self) -> None:
        """SINGA's Setup pass: size each layer from its sources' example outputs (batch of 2)."""
        outputs: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for layer in self.layers:
                ins = [outputs[ref] for ref in layer.srclayers]
                try:
                    if isinstance(layer, Input):
                        ys: Any = layer.example(EXAMPLE_BATCH)
                    else:
                        layer.setup(ins)
                        if layer.share_from is not None:
                            _tie_params(layer, self._by_name[layer.share_from])
                        layer.eval()  # no batch-norm statistics from the example zeros
                        ys = layer(*ins)
                        layer.train()
                except ConfigError as e:
                    raise ConfigError(f"{e} (inputs: {self._shapes(layer, ins)})") from None
                except Exception as e:
                    raise ConfigError(f"layer {layer.name!r} ({layer.type}) cannot take its inputs "
                                      f"({self._shapes(layer, ins)}): {type(e).__name__}: {e}") from None
                ys = ys if isinstance(ys, tuple) else (ys,)
                if len(ys) != layer.num_outputs:
                    raise ConfigError(f"layer {layer.name!r} ({layer.type}) returned {len(ys)} outputs, "
                                      f"declared {layer.num_outputs}")
                layer.out_shapes = [tuple(y.shape[1:]) for y in ys]
                if layer.role == "loss" and ys[0].dim() != 0:
                    raise ConfigError(f"loss layer {layer.name!r} ({layer.type}) must return a scalar, "
                                      f"returned shape {tuple(ys[0].shape)}")
                outputs.update(zip(layer.output_names(), ys, strict=True))

    @staticmethod
    def _shapes(layer: Layer, ins: list[torch.Tensor]) -> str:
        return ", ".join(f"{ref}: {_describe(t)}" for ref, t in zip(layer.srclayers, ins, strict=False)) or "none"

    def _plan(self, phase: Phase) -> list[_Step]:
        active: set[str] = set()
        steps = []
        for layer in self.layers:
            if phase not in layer.phases or any(_split_ref(r)[0] not in active for r in layer.srclayers):
                continue
            active.add(layer.name)
            is_input = isinstance(layer, Input)
            sources = (layer.source,) if isinstance(layer, Input) else tuple(layer.srclayers)
            steps.append(_Step(layer, sources, tuple(layer.output_names()), is_input))
        return steps

    # -- running -------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        training = self.training
        out = _run(self._fast[training], batch, direct=not _hooks_present(self._hooks))
        losses = self._losses[training]
        if losses:
            total = None
            for name, w in losses:
                term = out[name] if w == 1.0 else out[name] * w
                total = term if total is None else total + term
            out[LOSS_KEY] = total  # type: ignore[assignment]
        acc = self._accuracy[training]
        if acc is not None and ACCURACY_KEY not in out:
            out[ACCURACY_KEY] = out[acc]
        return out

    # -- introspection -------------------------------------------------------------------------
    @property
    def input_layers(self) -> list[Input]:
        return [la for la in self.layers if isinstance(la, Input)]

    @property
    def input_names(self) -> list[str]:
        """The batch keys the net reads, one per input layer."""
        return [la.source for la in self.input_layers]

    @property
    def sequence_inputs(self) -> list[str]:
        """Batch keys whose axis 1 is time (input layers with ``sequence: true``)."""
        return [la.source for la in self.input_layers if la.options.sequence]

    @property
    def metric_names(self) -> list[str]:
        """Metric layers other than accuracy active in the current phase (e.g. reconstruction_error):
        the trainer logs each under its name."""
        return self._metrics[self.training]

    @property
    def loss_sources(self) -> list[str]:
        """The first source of each loss layer: usually the scores worth serving."""
        return [la.srclayers[0] for la in self.layers if la.role == "loss"]

    def layer(self, name: str) -> Layer:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(f"no layer {name!r}; layers are: {', '.join(self._by_name)}") from None

    def summary(self) -> list[dict[str, Any]]:
        """One row per layer: name, type, sources, per-sample output shapes, own parameters."""
        seen: set[int] = set()
        rows = []
        for la in self.layers:
            n = 0
            for p in la.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    n += p.numel()
            rows.append({"name": la.name, "type": la.type, "srclayers": list(la.srclayers),
                         "output_shapes": [list(s) for s in la.out_shapes], "params": n,
                         "partition_dim": la.partition_dim, "phases": sorted(la.phases)})
        return rows

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameters grouped by their layer's ``lr_scale``/``wd_scale`` (each shared one once),
        for :func:`servelab.train.updaters.make_optimizer`."""
        groups: dict[tuple[float, float], list[nn.Parameter]] = {}
        seen: set[int] = set()
        for la in self.layers:
            for p in la.parameters():
                if id(p) in seen or not p.requires_grad:
                    continue
                seen.add(id(p))
                groups.setdefault((la.lr_scale, la.wd_scale), []).append(p)
        return [{"params": ps, "lr_scale": lr, "wd_scale": wd} for (lr, wd), ps in groups.items()]

    # -- truncated BPTT ------------------------------------------------------------------------
    def carry_state(self, enabled: bool) -> None:
        """Switch state carrying on or off (and clear the state) in every recurrent layer."""
        for la in self.layers:
            carry = getattr(la, "carry_state", None)  # any layer type may be recurrent, not only RNN
            if carry is not None:
                carry(enabled)

    def reset_state(self) -> None:
        for la in self.layers:
            reset = getattr(la, "reset_state", None)
            if reset is not None:
                reset()

    # -- serving -------------------------------------------------------------------------------
    def inference_module(self, output: str) -> InferenceNet:
        """A module taking the inputs ``output`` needs, positionally, and returning it (test phase)."""
        return InferenceNet(self, output)


class InferenceNet(nn.Module):
    """The part of a :class:`Net` that computes one output, with positional inputs (for ONNX)."""

    def __init__(self, net: Net, output: str) -> None:
        super().__init__()
        plan = net._plans[False]
        keys = {k for s in plan for k in s.outputs}
        if output not in keys:
            raise ConfigError(f"output {output!r} is not computed in the test phase; choose one of "
                              f"{', '.join(k for s in plan if not s.is_input for k in s.outputs)}")
        needed: set[str] = set()
        frontier = [output]
        producer = {k: s for s in plan for k in s.outputs}
        while frontier:
            step = producer[frontier.pop()]
            if step.layer.name in needed:
                continue
            needed.add(step.layer.name)
            if not step.is_input:
                frontier.extend(step.sources)
        self.net = net
        self.output = output
        self._plan = [s for s in plan if s.layer.name in needed]
        self.input_layers = [s.layer for s in self._plan if s.is_input]
        self.input_names = [s.sources[0] for s in self._plan if s.is_input]

        self._fast = _fast_plan(self._plan)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        batch = dict(zip(self.input_names, inputs, strict=True))
        return _run(self._fast, batch, direct=not _hooks_present(self.net._hooks))[self.output]


_FastStep = tuple[int, Any, Any, Any]


def _fast_plan(plan: Sequence[_Step]) -> list[_FastStep]:
    """(kind, layer, source key(s), output key(s)), with single keys unwrapped, for :func:`_run`."""
    fast = []
    for s in plan:
        kind = s.kind
        src = s.sources[0] if kind in (0, 1) else s.sources
        fast.append((kind, s.layer, src, s.outputs[0] if kind != 3 else s.outputs))
    return fast


_GLOBAL_HOOKS = tuple(getattr(_torch_module, name, {"missing": True}) for name in (
    "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks"))


def _hook_dicts(layers: Sequence[Layer]) -> tuple[dict, ...]:
    """Every layer's hook dicts, gathered once: torch keeps a module's hooks in dicts that live as
    long as the module (registering adds to the dict, never replaces it)."""
    return tuple(d for la in layers for d in (la._forward_hooks, la._forward_pre_hooks, la._backward_hooks,
                                              la._backward_pre_hooks))


def _hooks_present(dicts: tuple[dict, ...]) -> bool:
    """Whether calling a layer's ``forward`` directly would skip a hook (or a TorchScript trace's
    scope): ``any`` over the dicts themselves, in C, is the whole check per call."""
    return any(_GLOBAL_HOOKS) or any(dicts) or _tracing_state() is not None


def _run(plan: Sequence[_FastStep], batch: Mapping[str, torch.Tensor], *, direct: bool) -> dict[str, torch.Tensor]:
    """Run a plan. ``direct`` calls each layer's ``forward`` instead of the module: the same
    result without ``nn.Module.__call__``'s bookkeeping (about 1 us a layer, which is the whole
    overhead of a layer net over hand-written code), allowed only when no hook would be skipped."""
    out: dict[str, torch.Tensor] = {}
    for kind, layer, src, dst in plan:
        fn = layer.forward if direct else layer
        if kind == 1:
            out[dst] = fn(out[src])
        elif kind == 0:
            try:
                out[dst] = batch[src]
            except KeyError:
                raise ConfigError(f"input layer {layer.name!r} reads batch[{src!r}], which the batch lacks; "
                                  f"it has {', '.join(batch) or 'nothing'}") from None
        elif kind == 2:
            out[dst] = fn(*[out[s] for s in src])
        else:
            out.update(zip(dst, fn(*[out[s] for s in src]), strict=True))
    return out


def _toposort(layers: list[Layer], by_name: dict[str, Layer]) -> list[Layer]:
    """Each time, the first layer in declaration order whose sources are done; a cycle is reported."""
    deps = {la.name: {_split_ref(r)[0] for r in la.srclayers} | ({la.share_from} if la.share_from else set())
            for la in layers}
    done: set[str] = set()
    order: list[Layer] = []
    pending = list(layers)
    while pending:
        ready = next((la for la in pending if deps[la.name] <= done), None)
        if ready is None:
            raise ConfigError(f"layers form a cycle: {_find_cycle(pending, deps)} (srclayers must make a DAG)")
        done.add(ready.name)
        order.append(ready)
        pending.remove(ready)
    return order


def _find_cycle(pending: list[Layer], deps: dict[str, set[str]]) -> str:
    left = {la.name for la in pending}
    path: list[str] = []
    node = pending[0].name
    while node not in path:
        path.append(node)
        node = sorted(deps[node] & left)[0]
    cycle = [*path[path.index(node):], node]
    return " -> ".join(reversed(cycle))  # in data-flow order: source -> consumer


def _tie_params(layer: Layer, owner: Layer) -> None:
    """Make ``layer`` use ``owner``'s parameter objects (SINGA's ``share_from``)."""
    mine = dict(layer.named_parameters())
    for pname, p in owner.named_parameters():
        if pname not in mine or mine[pname].shape != p.shape:
            got = tuple(mine[pname].shape) if pname in mine else "none"
            raise ConfigError(f"layer {layer.name!r} cannot share {pname} with {owner.name!r}: shapes "
                              f"{got} vs {tuple(p.shape)}")
        prefix, _, leaf = pname.rpartition(".")
        setattr(layer.get_submodule(prefix) if prefix else layer, leaf, p)


def build_net(cfg: NetConfig) -> Net:
    """Build, validate and size the net a config describes (parameters drawn from torch's RNG)."""
    layers = []
    for lc in cfg.layers:
        cls = layer_class(lc.type, layer=lc.name)
        layers.append(cls(lc.name, lc.srclayers, partition_dim=lc.partition_dim, include=lc.include,
                          exclude=lc.exclude, share_from=lc.share_from, lr_scale=lc.lr_scale,
                          wd_scale=lc.wd_scale, **lc.options))
    return Net(layers, partition_dim=cfg.partition_dim)
