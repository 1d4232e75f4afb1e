"""Training data from local files or a seeded generator, as batches of named tensors.

Nothing is ever downloaded. The ``data`` section of a job picks a source by ``type``:

=====================  =====================================================================
``synthetic``          Gaussian-mixture classification (seeded): ``data`` (N, dim), ``label``
``synthetic_sequence`` delayed echo: ``label[t] = data[t - delay]`` (tokens; first steps -100)
``synthetic_images``   class templates, randomly shifted, plus noise: ``data`` (N, C, H, W)
``numpy``              ``.npz`` (arrays by name) or ``.npy`` files (one per batch key)
``csv``                one row per sample; a label column, the other columns are features
``image_folder``       one sub-folder per class (needs Pillow); images resized to ``size``
``cifar10``            CIFAR-10 binary files: 1 label byte + 3072 pixel bytes (RGB planes) each
``synthetic_text``     next-character prediction on text made of a seeded lexicon's words
``digits``             scikit-learn's bundled 8x8 handwritten digits (1,797): ``data`` (N, 1, 8, 8)
                       in [0, 1], ``label`` 0-9; a seeded ``test_fraction`` (default 0.25) held out
=====================  =====================================================================

A split is held in memory as NumPy arrays (:func:`load_arrays`); :func:`make_data` cuts it
into batches. The train split repeats forever, reshuffled each epoch by a generator seeded with
``(job.seed, epoch)``, so the batch at step *k* is a pure function of the job and *k*: a resumed
job (``start_batch``) and a sharded worker (``shard`` of ``num_shards``, which takes every
``num_shards``-th sample of the epoch's order) see exactly the batches they would have seen.
The test split is one pass, in file order, last batch partial. ``batch_size`` is per shard.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from servelab.errors import ConfigError

if TYPE_CHECKING:
    from servelab.train.job import JobConfig

__all__ = ["DATA_SOURCES", "DataConfig", "Split", "load_arrays", "make_data", "write_cifar10_bin"]

Split = Literal["train", "test"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm"}
CIFAR_RECORD_BYTES = 1 + 3 * 32 * 32
IGNORE = -100


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, description="seed of the generator (synthetic) or of the test_fraction split")
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="hold out this share when no test files")
    mean: list[float] | None = Field(None, description="uint8 images: per-channel mean after /255")
    std: list[float] | None = None

    def resolve(self, base: Path) -> _Source:
        """Make relative paths relative to ``base`` (the job file's folder)."""
        updates: dict[str, Any] = {}
        for key, value in self:
            if isinstance(value, Path) and not value.is_absolute():
                updates[key] = base / value
            elif isinstance(value, dict) and all(isinstance(v, Path) for v in value.values()):
                updates[key] = {k: v if v.is_absolute() else base / v for k, v in value.items()}
        return self.model_copy(update=updates)

    @property
    def has_test(self) -> bool:
        return getattr(self, "test", None) is not None or self.test_fraction > 0

    def read(self, split: Split) -> dict[str, np.ndarray]:
        """The split's arrays; sources with a separate test set override this."""
        arrays = self.read_all()
        if split == "train" and not self.test_fraction:
            return arrays
        if not self.test_fraction:
            raise ConfigError(f"data ({self.type}): no test split; give test files or test_fraction")  # type: ignore[attr-defined]
        n = len(next(iter(arrays.values())))
        order = np.random.default_rng(self.seed).permutation(n)
        n_test = max(1, round(n * self.test_fraction))
        idx = np.sort(order[:n_test] if split == "test" else order[n_test:])
        return {k: v[idx] for k, v in arrays.items()}

    def read_all(self) -> dict[str, np.ndarray]:
        raise NotImplementedError


class SyntheticConfig(_Source):
    """Gaussian mixture: ``clusters_per_class`` centres per class drawn N(0, separation²), samples
    around them N(0, noise²). Several clusters per class make it non-linear (an MLP beats a
    linear model)."""

    type: Literal["synthetic"] = "synthetic"
    num_classes: int = Field(4, ge=2)
    dim: int = Field(8, ge=1)
    clusters_per_class: int = Field(2, ge=1)
    separation: float = Field(1.5, gt=0)
    noise: float = Field(1.0, gt=0)
    num_train: int = Field(4096, ge=1)
    num_test: int = Field(1024, ge=1)

    @property
    def has_test(self) -> bool:
        return True

    def read(self, split: Split) -> dict[str, np.ndarray]:
        k = self.num_classes * self.clusters_per_class
        centres = np.random.default_rng([self.seed, 0]).normal(0.0, self.separation, (k, self.dim))
        rng = np.random.default_rng([self.seed, 1 if split == "train" else 2])
        n = self.num_train if split == "train" else self.num_test
        cluster = rng.integers(0, k, n)
        x = centres[cluster] + rng.normal(0.0, self.noise, (n, self.dim))
        return {"data": x.astype(np.float32), "label": (cluster % self.num_classes).astype(np.int64)}


class SyntheticSequenceConfig(_Source):
    """Delayed echo: tokens uniform in [0, vocab_size); the label at step t is the token at
    t - delay (the first ``delay`` labels are -100, ignored). Only a net that remembers
    ``delay`` steps — a recurrent one trained through time — can beat 1/vocab_size."""

    type: Literal["synthetic_sequence"] = "synthetic_sequence"
    vocab_size: int = Field(8, ge=2)
    length: int = Field(16, ge=2)
    delay: int = Field(2, ge=0)
    num_train: int = Field(2048, ge=1)
    num_test: int = Field(512, ge=1)

    @property
    def has_test(self) -> bool:
        return True

    def read(self, split: Split) -> dict[str, np.ndarray]:
        if self.delay >= self.length:
            raise ConfigError(f"data (synthetic_sequence): delay {self.delay} must be below length {self.length}")
        rng = np.random.default_rng([self.seed, 1 if split == "train" else 2])
        n = self.num_train if split == "train" else self.num_test
        x = rng.integers(0, self.vocab_size, (n, self.length)).astype(np.int64)
        y = np.full_like(x, IGNORE)
        y[:, self.delay:] = x[:, : self.length - self.delay]
        return {"data": x, "label": y}


class SyntheticTextConfig(_Source):
    """Text for a char-RNN (SINGA's char-rnn example) that needs no corpus: ``num_words`` random words
    of 2-6 letters (the lexicon, from the seed) drawn with replacement, separated by spaces; the
    label at step t is the character at t + 1. Token 0 is the space, 1.. the letters. The first
    letter of a word is a guess (1 in ``num_words``); every later one is given by the word's
    prefix, so a net that remembers which word it is in predicts most of them."""

    type: Literal["synthetic_text"] = "synthetic_text"
    vocab_size: int = Field(12, ge=3, description="letters + 1 (the space)")
    num_words: int = Field(16, ge=2)
    length: int = Field(32, ge=2)
    num_train: int = Field(2048, ge=1)
    num_test: int = Field(256, ge=1)

    @property
    def has_test(self) -> bool:
        return True

    def read(self, split: Split) -> dict[str, np.ndarray]:
        lex_rng = np.random.default_rng([self.seed, 0])
        lexicon = [lex_rng.integers(1, self.vocab_size, lex_rng.integers(2, 7)) for _ in range(self.num_words)]
        rng = np.random.default_rng([self.seed, 1 if split == "train" else 2])
        n = self.num_train if split == "train" else self.num_test
        need = n * (self.length + 1)
        pieces, total = [], 0
        while total < need:
            word = lexicon[rng.integers(self.num_words)]
            pieces.extend([word, np.zeros(1, dtype=np.int64)])
            total += len(word) + 1
        text = np.concatenate(pieces)[:need].reshape(n, self.length + 1).astype(np.int64)
        return {"data": text[:, :-1].copy(), "label": text[:, 1:].copy()}


class SyntheticImagesConfig(_Source):
    """One random template per class, shifted by up to ``max_shift`` pixels, plus noise: small
    enough for a CNN test in seconds, shifted so convolution and pooling pay off."""

    type: Literal["synthetic_images"] = "synthetic_images"
    num_classes: int = Field(4, ge=2)
    shape: list[int] = Field(default_factory=lambda: [3, 16, 16], min_length=3, max_length=3)
    max_shift: int = Field(2, ge=0)
    noise: float = Field(0.8, gt=0)
    num_train: int = Field(2048, ge=1)
    num_test: int = Field(512, ge=1)

    @property
    def has_test(self) -> bool:
        return True

    def read(self, split: Split) -> dict[str, np.ndarray]:
        templates = np.random.default_rng([self.seed, 0]).normal(0.0, 1.0, (self.num_classes, *self.shape))
        rng = np.random.default_rng([self.seed, 1 if split == "train" else 2])
        n = self.num_train if split == "train" else self.num_test
        label = rng.integers(0, self.num_classes, n)
        shifts = rng.integers(-self.max_shift, self.max_shift + 1, (n, 2))
        x = np.stack([np.roll(templates[c], tuple(s), axis=(1, 2)) for c, s in zip(label, shifts, strict=True)])
        x += rng.normal(0.0, self.noise, x.shape)
        return {"data": x.astype(np.float32), "label": label.astype(np.int64)}


def _numpy_arrays(arr: np.ndarray) -> np.ndarray:
    """float64 -> float32 (torch's default), other integers -> int64 (labels, token ids); uint8 kept
    (images, scaled per batch)."""
    if arr.dtype == np.float64:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.uint8:
        return arr.astype(np.int64)
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    return arr


class NumpyConfig(_Source):
    """``train: file.npz`` (every array, by name; ``keys`` renames: ``{batch_key: array_name}``) or
    ``train: {data: x.npy, label: y.npy}``; the same for ``test``."""

    type: Literal["numpy"] = "numpy"
    train: Path | dict[str, Path]
    test: Path | dict[str, Path] | None = None
    keys: dict[str, str] | None = None

    def _load(self, spec: Path | dict[str, Path]) -> dict[str, np.ndarray]:
        try:
            if isinstance(spec, dict):
                raw = {k: np.load(p, allow_pickle=False) for k, p in spec.items()}
            else:
                z = np.load(spec, allow_pickle=False)
                if isinstance(z, np.ndarray):
                    raise ConfigError(f"data (numpy): {spec} holds one array; give "
                                      "train: {data: x.npy, label: y.npy}, one file per batch key, or an .npz")
                with z:
                    raw = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ConfigError(f"data (numpy): cannot read {spec}: {e}") from None
        if self.keys:
            missing = [a for a in self.keys.values() if a not in raw]
            if missing:
                raise ConfigError(f"data (numpy): arrays {missing} not in {spec}; it has {sorted(raw)}")
            raw = {k: raw[a] for k, a in self.keys.items()}
        return {k: _numpy_arrays(v) for k, v in raw.items()}

    def read_all(self) -> dict[str, np.ndarray]:
        return self._load(self.train)

    def read(self, split: Split) -> dict[str, np.ndarray]:
        if self.test is None:
            return super().read(split)
        return self._load(self.train if split == "train" else self.test)


class CSVConfig(_Source):
    """One sample per row: ``label_column`` (name or index; labels are integers, or strings mapped
    to their sorted order) is ``label``, every other column a float feature of ``data``."""

    type: Literal["csv"] = "csv"
    train: Path
    test: Path | None = None
    label_column: str | int = -1
    header: bool = True
    delimiter: str = ","

    def _rows(self, path: Path) -> tuple[list[str] | None, list[list[str]]]:
        try:
            with open(path, newline="") as f:
                rows = [r for r in csv.reader(f, delimiter=self.delimiter) if r]
        except OSError as e:
            raise ConfigError(f"data (csv): cannot read {path}: {e}") from None
        if self.header:
            if not rows:
                raise ConfigError(f"data (csv): {path} is empty")
            return rows[0], rows[1:]
        return None, rows

    def _label_index(self, header: list[str] | None, width: int, path: Path) -> int:
        col = self.label_column
        if isinstance(col, str):
            if header is None or col not in header:
                raise ConfigError(f"data (csv): no column {col!r} in {path}"
                                  + (f"; columns: {', '.join(header)}" if header else " (header: false)"))
            return header.index(col)
        if not -width <= col < width:
            raise ConfigError(f"data (csv): label_column {col} out of range for {width} columns in {path}")
        return col % width

    def _load(self, path: Path, classes: list[str] | None) -> tuple[dict[str, np.ndarray], list[str] | None]:
        header, rows = self._rows(path)
        if not rows:
            raise ConfigError(f"data (csv): {path} has no data rows")
        width = len(rows[0])
        li = self._label_index(header, width, path)
        try:
            feats = np.array([[float(v) for j, v in enumerate(r) if j != li] for r in rows], dtype=np.float32)
        except ValueError as e:
            raise ConfigError(f"data (csv): {path}: every column but the label must be a number ({e})") from None
        raw = [r[li] for r in rows]
        try:
            labels = np.array([int(v) for v in raw], dtype=np.int64)
        except ValueError:
            classes = classes or sorted(set(raw))
            index = {c: i for i, c in enumerate(classes)}
            unknown = sorted(set(raw) - set(index))
            if unknown:
                raise ConfigError(f"data (csv): labels {unknown[:5]} in {path} are not in the training file") from None
            labels = np.array([index[v] for v in raw], dtype=np.int64)
        return {"data": feats, "label": labels}, classes

    def read_all(self) -> dict[str, np.ndarray]:
        return self._load(self.train, None)[0]

    def read(self, split: Split) -> dict[str, np.ndarray]:
        if self.test is None:
            return super().read(split)
        train, classes = self._load(self.train, None)
        return train if split == "train" else self._load(self.test, classes)[0]


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError("data (image_folder) needs Pillow: pip install pillow") from None
    return Image


class ImageFolderConfig(_Source):
    """``root/<class>/<image>``: classes are the sorted sub-folder names (label = index)."""

    type: Literal["image_folder"] = "image_folder"
    train: Path
    test: Path | None = None
    size: list[int] | None = Field(None, min_length=2, max_length=2, description="[height, width] to resize to")
    mode: Literal["RGB", "L"] = "RGB"

    def classes(self) -> list[str]:
        if not self.train.is_dir():
            raise ConfigError(f"data (image_folder): {self.train} is not a directory")
        found = sorted(p.name for p in self.train.iterdir() if p.is_dir())
        if not found:
            raise ConfigError(f"data (image_folder): {self.train} has no class sub-folders (root/<class>/<image>)")
        return found

    def _load(self, root: Path, classes: list[str]) -> dict[str, np.ndarray]:
        image = _pil()
        xs: list[np.ndarray] = []
        ys: list[int] = []
        for label, cls in enumerate(classes):
            folder = root / cls
            for f in sorted(folder.iterdir()) if folder.is_dir() else []:
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                with image.open(f) as im:
                    im = im.convert(self.mode)
                    if self.size:
                        im = im.resize((self.size[1], self.size[0]))
                    arr = np.asarray(im, dtype=np.uint8)
                arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
                if xs and arr.shape != xs[0].shape:
                    raise ConfigError(f"data (image_folder): {f} is {arr.shape[1:]} but earlier images are "
                                      f"{xs[0].shape[1:]}; set size: [height, width]")
                xs.append(arr)
                ys.append(label)
        if not xs:
            raise ConfigError(f"data (image_folder): no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
        return {"data": np.stack(xs), "label": np.array(ys, dtype=np.int64)}

    def read_all(self) -> dict[str, np.ndarray]:
        return self._load(self.train, self.classes())

    def read(self, split: Split) -> dict[str, np.ndarray]:
        if self.test is None:
            return super().read(split)
        return self._load(self.train if split == "train" else self.test, self.classes())


class Cifar10Config(_Source):
    """The CIFAR-10 *binary* version, extracted somewhere local (servelab never downloads it):
    ``path/data_batch_{1..5}.bin`` and ``path/test_batch.bin`` unless the files are named."""

    type: Literal["cifar10"] = "cifar10"
    path: Path
    train_files: list[str] | None = None
    test_files: list[str] | None = None

    @property
    def has_test(self) -> bool:
        return self.test_files is not None or (self.path / "test_batch.bin").is_file() or self.test_fraction > 0

    def _files(self, split: Split) -> list[Path]:
        if not self.path.is_dir():
            raise ConfigError(f"data (cifar10): {self.path} is not a directory; extract cifar-10-binary.tar.gz "
                              "(https://www.cs.toronto.edu/~kriz/cifar.html) and point path at cifar-10-batches-bin")
        names = self.train_files if split == "train" else self.test_files
        if names is not None:
            files = [self.path / n for n in names]
        elif split == "train":
            files = sorted(self.path.glob("data_batch_*.bin"))
        else:
            files = [self.path / "test_batch.bin"]
        missing = [str(f) for f in files if not f.is_file()]
        if not files or missing:
            raise ConfigError(f"data (cifar10): missing {split} files {missing or ['data_batch_*.bin']} in {self.path}")
        return files

    def _load(self, files: list[Path]) -> dict[str, np.ndarray]:
        parts = []
        for f in files:
            raw = np.fromfile(f, dtype=np.uint8)
            if raw.size == 0 or raw.size % CIFAR_RECORD_BYTES:
                raise ConfigError(f"data (cifar10): {f} is {raw.size} bytes, not a whole number of "
                                  f"{CIFAR_RECORD_BYTES}-byte records (1 label + 3072 pixels); CIFAR-100 is not "
                                  "supported")
            parts.append(raw.reshape(-1, CIFAR_RECORD_BYTES))
        recs = np.concatenate(parts)
        labels = recs[:, 0].astype(np.int64)
        if labels.max() > 9:
            raise ConfigError(f"data (cifar10): label {labels.max()} found; CIFAR-10 labels are 0-9")
        return {"data": recs[:, 1:].reshape(-1, 3, 32, 32), "label": labels}

    def read_all(self) -> dict[str, np.ndarray]:
        return self._load(self._files("train"))

    def read(self, split: Split) -> dict[str, np.ndarray]:
        has_test_files = self.test_files is not None or (self.path / "test_batch.bin").is_file()
        if has_test_files or (split == "train" and not self.test_fraction):
            return self._load(self._files(split))
        return super().read(split)  # hold out test_fraction of the train files


class DigitsConfig(_Source):
    """scikit-learn's copy of the UCI optical digits (1,797 images, 8x8, 17 grey levels), shipped
    inside the package: real images that need no download. Pixels are scaled to [0, 1] (so a
    binary RBM reads them as probabilities); ``flatten: true`` gives ``data`` as (N, 64)."""

    type: Literal["digits"] = "digits"
    test_fraction: float = Field(0.25, ge=0.0, lt=1.0)
    flatten: bool = False

    def read_all(self) -> dict[str, np.ndarray]:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ConfigError("data (digits) needs scikit-learn: pip install 'servelab[torch]' "
                              "(or pip install scikit-learn)") from None
        digits = load_digits()
        images = (digits.images / 16.0).astype(np.float32)
        data = images.reshape(len(images), -1) if self.flatten else images[:, None]
        return {"data": data, "label": digits.target.astype(np.int64)}


DataConfig = Annotated[
    SyntheticConfig | SyntheticSequenceConfig | SyntheticTextConfig | SyntheticImagesConfig | NumpyConfig
    | CSVConfig | ImageFolderConfig | Cifar10Config | DigitsConfig,
    Field(discriminator="type"),
]
DATA_SOURCES: dict[str, type[_Source]] = {
    c.model_fields["type"].default: c
    for c in (SyntheticConfig, SyntheticSequenceConfig, SyntheticTextConfig, SyntheticImagesConfig, NumpyConfig,
              CSVConfig, ImageFolderConfig, Cifar10Config, DigitsConfig)
}

_CACHE: dict[tuple[str, str], dict[str, np.ndarray]] = {}
_CACHE_ENTRIES = 4


def load_arrays(cfg: _Source, split: Split) -> dict[str, np.ndarray]:
    """The whole split as arrays of equal length (cached: a trainer tests many times)."""
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    key = (cfg.model_dump_json(), split)
    if key not in _CACHE:
        arrays = cfg.read(split)
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ConfigError(f"data ({cfg.type}): arrays differ in length: {lengths}")  # type: ignore[attr-defined]
        if next(iter(lengths.values())) == 0:
            raise ConfigError(f"data ({cfg.type}): the {split} split is empty")  # type: ignore[attr-defined]
        while len(_CACHE) >= _CACHE_ENTRIES:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = arrays
    return _CACHE[key]


def _to_tensors(arrays: dict[str, np.ndarray], idx: np.ndarray, cfg: _Source) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in arrays.items():
        t = torch.from_numpy(np.ascontiguousarray(v[idx]))
        if t.dtype == torch.uint8:  # images: [0, 255] -> [0, 1], then per-channel mean/std
            t = t.float().div_(255.0)
            if cfg.mean is not None:
                shape = (1, -1) + (1,) * (t.dim() - 2)
                t = t.sub_(torch.tensor(cfg.mean).view(shape)).div_(torch.tensor(cfg.std or [1.0]).view(shape))
        out[k] = t
    return out


def make_data(job: JobConfig, split: Split, shard: int = 0, num_shards: int = 1, *,
              start_batch: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of ``job.batch_size`` (per shard) as ``{key: tensor}``; see the module docstring."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ConfigError(f"shard {shard} of {num_shards}: need 0 <= shard < num_shards")
    cfg = job.data
    if cfg.mean is not None and cfg.std is not None and len(cfg.mean) != len(cfg.std):
        raise ConfigError("data: mean and std need one value per channel each")
    arrays = load_arrays(cfg, split)
    n = len(next(iter(arrays.values())))
    bs = job.batch_size
    if split == "train":
        per_epoch = len(range(shard, n, num_shards)) // bs
        if per_epoch == 0:
            raise ConfigError(f"data: the train split has {n} samples, fewer than batch_size {bs} per shard "
                              f"x {num_shards} shard(s); lower batch_size")
        return _train_batches(arrays, cfg, job.seed, n, bs, shard, num_shards, per_epoch, start_batch)
    return _test_batches(arrays, cfg, np.arange(shard, n, num_shards), bs)


def _train_batches(arrays: dict[str, np.ndarray], cfg: _Source, seed: int, n: int, bs: int, shard: int,
                   num_shards: int, per_epoch: int, start_batch: int) -> Iterator[dict[str, torch.Tensor]]:
    epoch, offset = divmod(start_batch, per_epoch)
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(n)[shard::num_shards]
        for b in range(offset, per_epoch):
            yield _to_tensors(arrays, order[b * bs:(b + 1) * bs], cfg)
        epoch, offset = epoch + 1, 0


def _test_batches(arrays: dict[str, np.ndarray], cfg: _Source, idx: np.ndarray,
                  bs: int) -> Iterator[dict[str, torch.Tensor]]:
    for start in range(0, len(idx), bs):
        yield _to_tensors(arrays, idx[start:start + bs], cfg)


def write_cifar10_bin(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write CIFAR-10 binary records (for tests and for converting other data to the format)."""
    images = np.asarray(images, dtype=np.uint8).reshape(len(labels), -1)
    if images.shape[1] != CIFAR_RECORD_BYTES - 1:
        raise ConfigError(f"CIFAR-10 images are 3x32x32 = 3072 bytes, got {images.shape[1]}")
    recs = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], images], axis=1)
    path.write_bytes(recs.tobytes())
    return path
