"""The zoo's architectures built with Keras and saved as TensorFlow SavedModels (the tensorflow runtime).

The study served its models with TensorFlow as well as ONNX Runtime. servelab's zoo builds ONNX
files from PyTorch code; this module builds the *same architectures* from
``keras.applications`` with ``weights=None`` (random weights, seeded: no download, like the ONNX
zoo) and saves them as SavedModels with one ``serving_default`` signature:
``input`` (float32, ``[batch, H, W, 3]``, channels-last as Keras builds them) →
``output`` (float32, ``[batch, classes]``, softmax probabilities). The weights differ from the
ONNX zoo's (two frameworks, two initialisers), so outputs are not comparable across runtimes;
timings are (same layers, same shapes, same FLOPs).

Only the image models are offered: VGG16's SavedModel would be ~530 MB of random weights to
build on every machine, and ALBERT is not in ``keras.applications``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servelab.errors import RuntimeNotAvailableError, UnknownModelError

META_FILE = "servelab.json"  # beside saved_model.pb: what was built, from what, with which seed


@dataclass(frozen=True)
class KerasEntry:
    name: str
    builder: str  # keras.applications attribute
    image_size: int
    classes: int
    alpha: float = 1.0
    description: str = ""


KERAS_ZOO: dict[str, KerasEntry] = {
    "mobilenetv2": KerasEntry("mobilenetv2", "MobileNetV2", 224, 1000, 1.0,
                              "MobileNetV2 (width 1.0), 1000 classes, 224x224x3 channels-last"),
    "mobilenetv2-tiny": KerasEntry("mobilenetv2-tiny", "MobileNetV2", 64, 10, 0.35,
                                   "MobileNetV2 at width 0.35, 64x64x3, 10 classes (tests)"),
}


def _tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise RuntimeNotAvailableError(f"building a SavedModel needs TensorFlow ({e}); "
                                       "install it with: pip install 'servelab[tensorflow]'") from None
    return tf


def build_saved_model(name: str, out_dir: str | os.PathLike[str], *, seed: int = 0, force: bool = False) -> Path:
    """Build ``name`` with Keras into ``out_dir/<name>-tf`` (a SavedModel directory) and return it.

    Cached: an existing directory built with the same seed is returned as is unless ``force``.
    Written to a temporary directory and renamed, so a killed build never leaves half a model.
    """
    try:
        entry = KERAS_ZOO[name]
    except KeyError:
        raise UnknownModelError(f"no Keras build of {name!r}; the tensorflow runtime has: "
                                f"{', '.join(KERAS_ZOO)}") from None
    dest = Path(out_dir) / f"{name}-tf"
    meta = {"name": name, "seed": seed, "builder": f"keras.applications.{entry.builder}",
            "image_size": entry.image_size, "classes": entry.classes, "alpha": entry.alpha,
            "layout": "NHWC"}
    if (dest / "saved_model.pb").is_file() and not force:
        try:
            if json.loads((dest / META_FILE).read_text()) == meta:
                return dest
        except (OSError, ValueError):
            pass
    tf = _tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, entry.builder)(
        weights=None, input_shape=(entry.image_size, entry.image_size, 3), classes=entry.classes,
        alpha=entry.alpha)

    served = tf.Module()
    served.model = model  # tracked: its variables are saved with the signature
    spec = tf.TensorSpec([None, entry.image_size, entry.image_size, 3], tf.float32, name="input")
    served.serve = tf.function(lambda x: {"output": model(x, training=False)}, input_signature=[spec])
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(served, str(tmp), signatures={"serving_default": served.serve})
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest
