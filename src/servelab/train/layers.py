"""SINGA's layer abstraction on PyTorch: named layers with a type, options and source layers.

A layer is a :class:`torch.nn.Module` that knows its ``name``, its ``type``, the names of the
layers it reads (``srclayers``, which make the net a DAG) and how it may be partitioned
(``partition_dim``: None/-1 not partitioned, 0 split the batch, 1 split the features), as in
SINGA's ``LayerProto``. Where SINGA's ``Setup(conf, srclayers)`` sized a layer from its sources,
:meth:`Layer.setup` does the same from *example tensors* (a batch of 2 from a dry forward pass),
so no layer ever asks the user for an input size it could read itself. ``ComputeFeature`` is
:meth:`Layer.forward`; ``ComputeGradient`` is autograd.

Types are looked up in :data:`LAYERS`, a registry that users extend with :func:`register_layer`::

    @register_layer("scale")
    class Scale(Layer):
        class Options(LayerOptions):
            factor: float = 2.0

        options: Options

        def forward(self, x):
            return x * self.options.factor

A layer with more than one output (``slice``, ``split``) names them ``NAME:0``, ``NAME:1``, …;
its consumers list those in ``srclayers``.
"""

from __future__ import annotations

import builtins
import math
import re
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn
from torch.nn import functional as F

from servelab.errors import ConfigError

__all__ = [
    "LAYERS",
    "Layer",
    "LayerOptions",
    "LayerRole",
    "Phase",
    "format_validation_error",
    "layer_class",
    "make_layer",
    "register_layer",
]

Phase = Literal["train", "test"]
# What a layer is for: the net treats inputs, losses and metrics specially (SINGA's categories).
LayerRole = Literal["input", "neuron", "connection", "loss", "metric"]
LAYER_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
IGNORE_INDEX = -100  # labels equal to this are skipped by softmax_loss and accuracy (padding)


def format_validation_error(e: ValidationError) -> str:
    """One line per problem, ``a.b.c: message``, the way a YAML author reads it."""
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class LayerOptions(BaseModel):
    """A layer type's own options (SINGA's ``<type>_conf``); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Layer(nn.Module):
    """Base class of every layer type. Subclasses set ``Options`` and override
    :meth:`setup` (create parameters from example inputs) and :meth:`forward`."""

    # SINGA's layer type name, set by register_layer; shadows nn.Module.type() on purpose.
    type: ClassVar[str] = "layer"  # type: ignore[assignment]
    # In this class body ``type`` is the attribute above, so the builtin is spelled out.
    Options: ClassVar[builtins.type[LayerOptions]] = LayerOptions
    role: ClassVar[LayerRole] = "neuron"
    min_sources: ClassVar[int] = 1
    max_sources: ClassVar[int | None] = 1
    # An instance of ``Options``; each subclass that defines its own Options re-declares this
    # as ``options: Options`` so the checker sees that type's fields.
    options: LayerOptions

    def __init__(
        self,
        name: str,
        srclayers: Sequence[str] | str = (),
        *,
        partition_dim: int | None = None,
        include: Sequence[Phase] | None = None,
        exclude: Sequence[Phase] | None = None,
        share_from: str | None = None,
        lr_scale: float = 1.0,
        wd_scale: float = 1.0,
        **options: Any,
    ) -> None:
        super().__init__()
        if not isinstance(name, str) or not LAYER_NAME_RE.fullmatch(name):
            raise ConfigError(f"layer name {name!r}: use 1-64 letters, digits, '_' or '-', starting with a letter "
                              "or '_' (':' and '.' are reserved for output indices and parameter paths)")
        self.name = name
        self.srclayers = [srclayers] if isinstance(srclayers, str) else list(srclayers)
        self.partition_dim_set = partition_dim is not None  # an explicit -1 overrides the net's default
        if partition_dim == -1:
            partition_dim = None
        if partition_dim not in (None, 0, 1):
            raise ConfigError(f"layer {name!r}: partition_dim must be -1/None (none), 0 (batch) or 1 (feature), "
                              f"got {partition_dim!r}")
        self.partition_dim = partition_dim
        if include and exclude:
            raise ConfigError(f"layer {name!r}: give include or exclude, not both")
        phases: set[str] = set(include) if include else {"train", "test"} - set(exclude or ())
        if not phases <= {"train", "test"} or not phases:
            raise ConfigError(f"layer {name!r}: include/exclude take phases 'train' and 'test'; "
                              f"this layer would run in {sorted(phases) or 'no phase'}")
        self.phases = frozenset(phases)
        self.share_from = share_from
        self.lr_scale = float(lr_scale)
        self.wd_scale = float(wd_scale)
        try:
            self.options = self.Options(**options)
        except ValidationError as e:
            raise ConfigError(f"layer {name!r} ({self.type}): {format_validation_error(e)}") from None
        n = len(self.srclayers)
        if n < self.min_sources or (self.max_sources is not None and n > self.max_sources):
            want = (f"exactly {self.min_sources}" if self.max_sources == self.min_sources
                    else f"at least {self.min_sources}" if self.max_sources is None
                    else f"{self.min_sources} to {self.max_sources}")
            raise ConfigError(f"layer {name!r} ({self.type}) needs {want} source layer(s) in srclayers, got {n}")
        self.out_shapes: list[tuple[int, ...]] = []  # per-sample output shapes, filled by the dry run

    # -- what subclasses override --------------------------------------------------------------
    @property
    def num_outputs(self) -> int:
        return 1

    def setup(self, inputs: list[torch.Tensor]) -> None:
        """Create parameters for these example inputs (a batch of 2). Default: none."""

    # Each layer type takes its own sources (one tensor, two, or any number) and returns one tensor
    # or a tuple of them (``num_outputs``); the base signature is loose so subclasses may narrow it.
    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------------
    def output_names(self) -> list[str]:
        return [self.name] if self.num_outputs == 1 else [f"{self.name}:{i}" for i in range(self.num_outputs)]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, type={self.type!r}, srclayers={self.srclayers}"


LAYERS: dict[str, type[Layer]] = {}


def register_layer(type_name: str, *aliases: str) -> Callable[[type[Layer]], type[Layer]]:
    """Class decorator: make ``type_name`` (and any aliases) a layer type usable in YAML."""

    def deco(cls: type[Layer]) -> type[Layer]:
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise TypeError(f"register_layer({type_name!r}) decorates Layer subclasses, not {cls!r}")
        if "type" not in cls.__dict__:
            cls.type = type_name
        for key in (type_name, *aliases):
            LAYERS[key] = cls
        return cls

    return deco


def layer_class(type_name: str, *, layer: str | None = None) -> type[Layer]:
    try:
        return LAYERS[type_name]
    except KeyError:
        where = f"layer {layer!r}: " if layer else ""
        raise ConfigError(f"{where}unknown layer type {type_name!r}; known types: {', '.join(sorted(LAYERS))} "
                          "(register your own with servelab.train.layers.register_layer)") from None


def make_layer(type_name: str, name: str, srclayers: Sequence[str] | str = (), **kwargs: Any) -> Layer:
    """Build a layer by type name: ``make_layer("inner_product", "fc1", ["data"], num_output=10)``."""
    return layer_class(type_name, layer=name)(name, srclayers, **kwargs)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair (height, width), got {list(v)}")
    return (int(v[0]), int(v[1]))


def _rank(layer: Layer, x: torch.Tensor, ranks: Sequence[int], what: str) -> None:
    if x.dim() not in ranks:
        raise ConfigError(f"layer {layer.name!r} ({layer.type}) expects {what}, got a tensor of shape "
                          f"{tuple(x.shape)} (batch first)")


# ---------------------------------------------------------------------------------- input layers
@register_layer("input", "data")
class Input(Layer):
    """Where a batch enters the net: ``batch[source]`` (default: the layer's name)."""

    role: ClassVar[LayerRole] = "input"
    min_sources: ClassVar[int] = 0
    max_sources: ClassVar[int | None] = 0

    class Options(LayerOptions):
        shape: list[int] = Field(description="per-sample shape, without the batch axis; [] for a scalar label")
        dtype: Literal["float32", "int64"] = "float32"
        source: str | None = Field(None, description="key of the batch dict (default: the layer name)")
        sequence: bool = Field(False, description="the first per-sample axis is time (BPTT windows, ONNX dynamic)")

    options: Options

    @property
    def source(self) -> str:
        return self.options.source or self.name

    def example(self, batch: int = 2) -> torch.Tensor:
        dtype = torch.int64 if self.options.dtype == "int64" else torch.float32
        return torch.zeros((batch, *self.options.shape), dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


# --------------------------------------------------------------------------------- neuron layers
@register_layer("convolution", "conv")
class Convolution(Layer):
    """2-D convolution over (batch, channels, height, width)."""

    class Options(LayerOptions):
        num_filters: int = Field(gt=0)
        kernel: int | list[int] = 3
        stride: int | list[int] = 1
        pad: int | list[int] | Literal["same"] = 0
        dilation: int = 1
        groups: int = 1
        bias: bool = True

    options: Options

    def setup(self, inputs: list[torch.Tensor]) -> None:
        _rank(self, inputs[0], (4,), "(batch, channels, height, width)")
        o = self.options
        pad = o.pad if o.pad == "same" else _pair(o.pad)
        self.conv = nn.Conv2d(inputs[0].shape[1], o.num_filters, _pair(o.kernel), _pair(o.stride), pad,
                              o.dilation, o.groups, o.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@register_layer("pooling", "pool")
class Pooling(Layer):
    """Max or average pooling; ``global_pool`` reduces each channel to one value."""

    class Options(LayerOptions):
        method: Literal["max", "avg"] = "max"
        kernel: int | list[int] = 2
        stride: int | list[int] | None = None
        pad: int | list[int] = 0
        global_pool: bool = False

    options: Options

    def setup(self, inputs: list[torch.Tensor]) -> None:
        _rank(self, inputs[0], (4,), "(batch, channels, height, width)")
        o = self.options
        if o.global_pool:
            self.pool: nn.Module = nn.AdaptiveMaxPool2d(1) if o.method == "max" else nn.AdaptiveAvgPool2d(1)
        else:
            cls = nn.MaxPool2d if o.method == "max" else nn.AvgPool2d
            stride = _pair(o.stride) if o.stride is not None else None
            self.pool = cls(_pair(o.kernel), stride, _pair(o.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


@register_layer("inner_product", "dense", "fc")
class InnerProduct(Layer):
    """A dense layer. Axes from ``axis`` on are flattened into features (Caffe/SINGA's
    InnerProduct), so it follows a convolution directly; ``axis: 2`` applies it per time step."""

    class Options(LayerOptions):
        num_output: int = Field(gt=0)
        bias: bool = True
        axis: int = Field(1, ge=1)

    options: Options

    def setup(self, inputs: list[torch.Tensor]) -> None:
        x = inputs[0]
        axis = self.options.axis
        if x.dim() <= axis:
            raise ConfigError(f"layer {self.name!r} (inner_product) has axis {axis} but its input has shape "
                              f"{tuple(x.shape)}: nothing to flatten into features")
        self.linear = nn.Linear(math.prod(x.shape[axis:]), self.options.num_output, bias=self.options.bias)
        self._flatten = x.dim() > axis + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._flatten:
            x = x.flatten(self.options.axis)
        return F.linear(x, self.linear.weight, self.linear.bias)  # not self.linear(x): one module call per layer


ActivationMode = Literal["relu", "sigmoid", "tanh", "leaky_relu", "elu", "gelu", "softplus"]
_ACTIVATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "leaky_relu": F.leaky_relu,
    "elu": F.elu, "gelu": F.gelu, "softplus": F.softplus,
}


@register_layer("activation")
class Activation(Layer):
    """An element-wise non-linearity chosen by ``mode``."""

    class Options(LayerOptions):
        mode: ActivationMode = "relu"

    options: Options

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fn = _ACTIVATIONS[self.mode]

    @property
    def mode(self) -> str:
        return self.options.mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x)


def _fixed_activation(mode: str, class_name: str) -> type[Activation]:
    class Fixed(Activation):
        # No options: the mode is fixed. Replacing Activation's Options model by the empty one is
        # intentional (this class overrides ``mode``, so it never reads ``options.mode``).
        Options: ClassVar[type[LayerOptions]] = LayerOptions  # type: ignore[assignment]

        @property
        def mode(self) -> str:
            return mode

    Fixed.__name__ = Fixed.__qualname__ = class_name  # the module attribute, so instances pickle
    Fixed.__doc__ = f"SINGA's {mode} layer: ``activation`` with mode {mode}."
    return Fixed


ReLU = register_layer("relu")(_fixed_activation("relu", "ReLU"))
Sigmoid = register_layer("sigmoid")(_fixed_activation("sigmoid", "Sigmoid"))
Tanh = register_layer("tanh", "stanh")(_fixed_activation("tanh", "Tanh"))


@register_layer("dropout")
class Dropout(Layer):
    class Options(LayerOptions):
        ratio: float = Field(0.5, ge=0.0, lt=1.0)

    options: Options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.options.ratio, self.training)


@register_layer("batch_norm", "batchnorm")
class BatchNorm(Layer):
    """Batch normalisation over the channel axis (axis 1) of a 2-, 3- or 4-D input."""

    class Options(LayerOptions):
        momentum: float = 0.1
        eps: float = 1e-5
        affine: bool = True

    options: Options

    def setup(self, inputs: list[torch.Tensor]) -> None:
        x = inputs[0]
        _rank(self, x, (2, 3, 4), "(batch, channels[, length[, width]])")
        cls = nn.BatchNorm2d if x.dim() == 4 else nn.BatchNorm1d
        o = self.options
        self.bn = cls(x.shape[1], eps=o.eps, momentum=o.momentum, affine=o.affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


class _LRNForExport(torch.autograd.Function):
    """Exports as ONNX's own ``LRN`` operator (torch's composed version exports an ``If`` subgraph
    that ONNX importers such as onnx2torch cannot read); used only while tracing for export."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        return F.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g: Any, x: Any, size: int, alpha: float, beta: float, k: float) -> Any:
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


@register_layer("lrn")
class LRN(Layer):
    """Local response normalisation across channels (AlexNet; SINGA's LRN layer):
    ``x / (knorm + alpha / local_size * sum of x^2 over local_size neighbouring channels) ** beta``.
    ``local_size`` is odd, so the window is centred (PyTorch and ONNX place an even one differently)."""

    class Options(LayerOptions):
        local_size: int = Field(5, ge=1)
        alpha: float = Field(1e-4, ge=0)
        beta: float = Field(0.75, ge=0)
        knorm: float = Field(1.0, gt=0)

    options: Options

    def setup(self, inputs: list[torch.Tensor]) -> None:
        _rank(self, inputs[0], (3, 4), "(batch, channels, length) or (batch, channels, height, width)")
        if self.options.local_size % 2 == 0:
            raise ConfigError(f"layer {self.name!r} (lrn): local_size must be odd (a centred window), "
                              f"got {self.options.local_size}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        if torch.jit.is_tracing():
            return _LRNForExport.apply(x, o.local_size, o.alpha, o.beta, o.knorm)
        return F.local_response_norm(x, o.local_size, o.alpha, o.beta, o.knorm)


@register_layer("embedding")
class Embedding(Layer):
    """Token ids (int64) to vectors: (batch, ...) -> (batch, ..., dim)."""

    class Options(LayerOptions):
        vocab_size: int = Field(gt=0)
        dim: int = Field(gt=0)
        padding_idx: int | None = None

    options: Options

    def setup(self, inputs: list[torch.Tensor]) -> None:
        if inputs[0].dtype != torch.int64:
            raise ConfigError(f"layer {self.name!r} (embedding) needs int64 token ids; its source gives "
                              f"{inputs[0].dtype} (set dtype: int64 on the input layer)")
        o = self.options
        self.embed = nn.Embedding(o.vocab_size, o.dim, padding_idx=o.padding_idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


_RNNS: dict[str, Callable[..., nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


@register_layer("rnn")
class RNN(Layer):
    """A recurrent layer (vanilla RNN, GRU or LSTM) over (batch, time, features), trained by
    back-propagation through time: autograd through the unrolled sequence. With
    ``train_one_batch: {alg: bptt, unroll_len: K}`` the trainer runs *truncated* BPTT: the
    sequence is cut into windows of K steps and the hidden state is carried (detached) from one
    window to the next — which is what :meth:`carry_state` switches on.
    """

    class Options(LayerOptions):
        cell: Literal["rnn", "gru", "lstm"] = "gru"
        hidden_size: int = Field(gt=0)
        num_layers: int = Field(1, ge=1)
        bidirectional: bool = False
        dropout: float = Field(0.0, ge=0.0, lt=1.0)
        output: Literal["sequence", "last"] = "sequence"

    options: Options

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._carry = False
        self._state: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None

    def setup(self, inputs: list[torch.Tensor]) -> None:
        x = inputs[0]
        _rank(self, x, (3,), "(batch, time, features)")
        if not x.is_floating_point():
            raise ConfigError(f"layer {self.name!r} (rnn) needs float features; put an embedding layer "
                              "between token ids and the rnn")
        o = self.options
        self.rnn = _RNNS[o.cell](x.shape[2], o.hidden_size, o.num_layers, batch_first=True,
                                 dropout=o.dropout, bidirectional=o.bidirectional)

    def carry_state(self, enabled: bool) -> None:
        """Keep the final hidden state of each call as the next call's initial state (truncated BPTT)."""
        self._carry = enabled
        self._state = None

    def reset_state(self) -> None:
        self._state = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = self._state if self._carry else None
        out, h = self.rnn(x, h0)
        if self._carry:  # cut the graph here: gradients stop at the window boundary
            self._state = tuple(t.detach() for t in h) if isinstance(h, tuple) else h.detach()
        return out if self.options.output == "sequence" else out[:, -1]


# ----------------------------------------------------------------------------- connection layers
@register_layer("concat", "concate")
class Concat(Layer):
    """Concatenate the sources along ``axis`` (1: features/channels)."""

    role: ClassVar[LayerRole] = "connection"
    min_sources: ClassVar[int] = 2
    max_sources: ClassVar[int | None] = None

    class Options(LayerOptions):
        axis: int = Field(1, ge=1)

    options: Options

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.options.axis)


@register_layer("split")
class Split(Layer):
    """SINGA's Split: one source fanned out to ``num_splits`` consumers (``NAME:0`` …).
    Autograd sums the consumers' gradients, as SINGA's ComputeGradient did by hand."""

    role: ClassVar[LayerRole] = "connection"

    class Options(LayerOptions):
        num_splits: int = Field(2, ge=1)

    options: Options

    @property
    def num_outputs(self) -> int:
        return self.options.num_splits

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,) * self.options.num_splits


@register_layer("slice")
class Slice(Layer):
    """Cut the source along ``axis`` into pieces ``NAME:0``, ``NAME:1``, …: at ``slice_points``
    (indices) or into ``num_slices`` equal parts."""

    role: ClassVar[LayerRole] = "connection"

    class Options(LayerOptions):
        axis: int = Field(1, ge=1)
        slice_points: list[int] | None = None
        num_slices: int | None = Field(None, ge=2)

    options: Options

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        o = self.options
        if (o.slice_points is None) == (o.num_slices is None):
            raise ConfigError(f"layer {self.name!r} (slice): give exactly one of slice_points or num_slices")
        if o.slice_points is not None and (not o.slice_points or sorted(o.slice_points) != o.slice_points):
            raise ConfigError(f"layer {self.name!r} (slice): slice_points must be increasing indices, "
                              f"got {o.slice_points}")

    @property
    def num_outputs(self) -> int:
        o = self.options
        if o.slice_points is not None:
            return len(o.slice_points) + 1
        assert o.num_slices is not None  # __init__ checked that exactly one of the two is given
        return o.num_slices

    def setup(self, inputs: list[torch.Tensor]) -> None:
        x, o = inputs[0], self.options
        if x.dim() <= o.axis:
            raise ConfigError(f"layer {self.name!r} (slice): axis {o.axis} out of range for shape {tuple(x.shape)}")
        size = x.shape[o.axis]
        if o.num_slices is not None:
            if size % o.num_slices:
                raise ConfigError(f"layer {self.name!r} (slice): axis {o.axis} has {size} entries, "
                                  f"not divisible into {o.num_slices} slices")
            self._sizes = [size // o.num_slices] * o.num_slices
        else:
            assert o.slice_points is not None  # __init__ checked that exactly one of the two is given
            bounds = [0, *o.slice_points, size]
            if bounds[-2] >= size:
                raise ConfigError(f"layer {self.name!r} (slice): slice point {bounds[-2]} is past the end of "
                                  f"axis {o.axis} ({size} entries)")
            self._sizes = [b - a for a, b in pairwise(bounds)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.split(x, self._sizes, dim=self.options.axis))


@register_layer("flatten")
class Flatten(Layer):
    role: ClassVar[LayerRole] = "connection"

    class Options(LayerOptions):
        axis: int = Field(1, ge=1)

    options: Options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(self.options.axis)


@register_layer("reshape")
class Reshape(Layer):
    role: ClassVar[LayerRole] = "connection"

    class Options(LayerOptions):
        shape: list[int] = Field(description="per-sample shape; one entry may be -1")

    options: Options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.options.shape)


@register_layer("add", "eltwise_sum")
class Add(Layer):
    """Element-wise sum of the sources (residual connections)."""

    min_sources: ClassVar[int] = 2
    max_sources: ClassVar[int | None] = None

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


@register_layer("softmax")
class Softmax(Layer):
    """Class probabilities; a good ``--output`` to serve."""

    class Options(LayerOptions):
        axis: int = -1

    options: Options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=self.options.axis)


# -------------------------------------------------------------------------- loss and output layers
def _class_last_to_second(logits: torch.Tensor) -> torch.Tensor:
    """(batch, T…, classes) -> (batch, classes, T…), the layout cross_entropy wants."""
    return logits if logits.dim() == 2 else logits.movedim(-1, 1)


class _LabelledLayer(Layer):
    min_sources: ClassVar[int] = 2
    max_sources: ClassVar[int | None] = 2

    def setup(self, inputs: list[torch.Tensor]) -> None:
        logits, label = inputs
        if label.dtype != torch.int64:
            raise ConfigError(f"layer {self.name!r} ({self.type}): its second source must be int64 class labels, "
                              f"got {label.dtype} (set dtype: int64 on the label input layer)")
        if tuple(logits.shape[:-1]) != tuple(label.shape):
            raise ConfigError(f"layer {self.name!r} ({self.type}): scores of shape {tuple(logits.shape)} do not "
                              f"match labels of shape {tuple(label.shape)}; scores must be labels' shape + "
                              "(classes,)")


@register_layer("softmax_loss", "cross_entropy")
class SoftmaxLoss(_LabelledLayer):
    """Cross-entropy of softmax(scores) against int64 labels; labels of -100 are ignored."""

    role: ClassVar[LayerRole] = "loss"

    class Options(LayerOptions):
        ignore_index: int = IGNORE_INDEX
        label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
        loss_weight: float = 1.0

    options: Options

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        o = self.options
        return F.cross_entropy(_class_last_to_second(logits), label, ignore_index=o.ignore_index,
                               label_smoothing=o.label_smoothing)


@register_layer("euclidean_loss", "mse_loss")
class EuclideanLoss(Layer):
    """Mean squared error between two sources of the same shape."""

    role: ClassVar[LayerRole] = "loss"
    min_sources: ClassVar[int] = 2
    max_sources: ClassVar[int | None] = 2

    class Options(LayerOptions):
        loss_weight: float = 1.0

    options: Options

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(x, y)


@register_layer("accuracy")
class Accuracy(_LabelledLayer):
    """Top-k accuracy of scores against labels, a metric: it never contributes to the loss."""

    role: ClassVar[LayerRole] = "metric"

    class Options(LayerOptions):
        top_k: int = Field(1, ge=1)
        ignore_index: int = IGNORE_INDEX

    options: Options

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            o = self.options
            if o.top_k == 1:
                hit = logits.argmax(-1) == label
            else:
                hit = (logits.topk(o.top_k, dim=-1).indices == label.unsqueeze(-1)).any(-1)
            valid = label != o.ignore_index
            return (hit & valid).sum().float() / valid.sum().clamp(min=1).float()


# ------------------------------------------------------------------------------ imported models
@register_layer("onnx")
class OnnxModel(Layer):
    """An ONNX model as a layer, its weights trainable: import to fine-tune (SINGA's ``sonnx``).

    The file is converted to a ``torch.fx`` module by onnx2torch (the converter servelab's torch
    runtime uses); its initialisers become this layer's parameters and buffers, named
    ``NAME.graph.…``. The layer's sources feed the model's inputs in order; ``output`` picks one
    output of a model with several. ``path`` is relative to the working directory.
    """

    max_sources: ClassVar[int | None] = None

    class Options(LayerOptions):
        path: str = Field(description="the .onnx file")
        output: int = Field(0, ge=0, description="which of the model's outputs this layer returns")

    options: Options

    def setup(self, inputs: list[torch.Tensor]) -> None:
        from pathlib import Path

        from servelab.runtimes.torch_rt import import_library

        path = Path(self.options.path)
        if not path.is_file():
            raise ConfigError(f"layer {self.name!r} (onnx): no file {path} (relative paths are relative to the "
                              "working directory)")
        _, onnx2torch = import_library()
        try:
            self.graph = onnx2torch.convert(str(path))
        except Exception as e:
            raise ConfigError(f"layer {self.name!r} (onnx): onnx2torch cannot convert {path}: "
                              f"{type(e).__name__}: {e}") from None
        for p in self.graph.parameters():
            p.requires_grad_(True)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = self.graph(*xs)
        if isinstance(out, tuple | list):
            return out[self.options.output]
        return out
