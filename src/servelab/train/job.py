"""A training job: SINGA's ``JobProto`` as a typed, validated YAML document.

The four parts SINGA put in one job file, plus the loop settings::

    name: mlp-synthetic
    neuralnet: {layers: [...]}            # the net (servelab.train.net)
    train_one_batch: {alg: bp}            # bp | bptt (unroll_len, clip_grad_norm)
    updater: {type: sgd, momentum: 0.9, learning_rate: {type: step, base: 0.1, step_size: 200}}
    cluster: {}                           # topology; read by servelab.train.cluster (empty: one process)
    data: {type: synthetic}               # servelab.train.data
    train_steps: 500
    batch_size: 64
    test_freq: 100                        # 0: test only at the end
    test_steps: 0                         # 0: the whole test split
    disp_freq: 50
    checkpoint_freq: 100                  # 0: checkpoint only at the end
    checkpoint_path: checkpoints          # relative to the output directory
    pretrain: [{layer: rbm1, steps: 300}] # optional: RBM layers trained by CD-k first (servelab.train.rbm)
    seed: 0
    device: cpu                           # or cuda
    threads: 1                            # torch intra-op threads; small nets run fastest on 1
    precision: fp32                       # bf16 (autocast, CPU or GPU) or fp16 (autocast + loss scaling, GPU)

The config is the artefact of record: the trainer writes it, resolved, next to the checkpoints.
Relative data paths are relative to the job file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from servelab.config import validate_name
from servelab.errors import ConfigError
from servelab.train.data import DataConfig, SyntheticConfig, make_data
from servelab.train.layers import format_validation_error
from servelab.train.net import NetConfig
from servelab.train.rbm import PretrainStage
from servelab.train.updaters import LearningRateConfig, UpdaterConfig, make_optimizer, make_scheduler

__all__ = [
    "JobConfig",
    "LearningRateConfig",
    "TrainOneBatchConfig",
    "UpdaterConfig",
    "cluster_workers",
    "load_job",
    "make_data",
    "make_optimizer",
    "make_scheduler",
]

Alg = Literal["bp", "bptt"]


class TrainOneBatchConfig(BaseModel):
    """SINGA's ``train_one_batch``: how one batch becomes parameter updates.

    ``bp``: forward, backward, one update. ``bptt``: the same through the recurrent layers'
    unrolled time steps; with ``unroll_len`` K the sequences are cut into windows of K steps,
    the hidden state carried (detached) across windows, one update per window (truncated BPTT).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    alg: Alg = "bp"
    unroll_len: int | None = Field(None, ge=1)
    clip_grad_norm: float | None = Field(None, gt=0)


class JobConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "job"
    neuralnet: NetConfig
    train_one_batch: TrainOneBatchConfig = TrainOneBatchConfig()
    updater: UpdaterConfig = UpdaterConfig()
    data: DataConfig = Field(default_factory=SyntheticConfig)
    train_steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    test_freq: int = Field(0, ge=0)
    test_steps: int = Field(0, ge=0)
    disp_freq: int = Field(50, ge=1)
    checkpoint_freq: int = Field(0, ge=0)
    checkpoint_path: str = "checkpoints"
    seed: int = 0
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (None: leave torch's default)")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="bf16: autocast (CPU or GPU); fp16: autocast with loss scaling (GPU only); "
                            "one process or allreduce")
    cluster: dict[str, Any] = Field(default_factory=dict)
    pretrain: list[PretrainStage] = Field(
        default_factory=list, description="rbm layers trained greedily by CD-k, in order, before train_steps of BP")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, what="job name")

    @model_validator(mode="after")
    def _fill_total_steps(self) -> JobConfig:
        lr = self.updater.learning_rate
        if lr.total_steps is None and lr.type in ("linear", "cosine"):
            new_lr = lr.model_copy(update={"total_steps": self.train_steps})
            object.__setattr__(self, "updater", self.updater.model_copy(update={"learning_rate": new_lr}))
        if self.train_one_batch.unroll_len is not None and self.train_one_batch.alg != "bptt":
            raise ValueError("train_one_batch.unroll_len needs alg: bptt")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_job(doc: Any, *, base_dir: Path | None = None, where: str = "job") -> JobConfig:
    """Validate a parsed YAML document; relative data paths are resolved against ``base_dir``."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping with neuralnet, data, updater, …; got {type(doc).__name__}")
    try:
        job = JobConfig.model_validate(doc)
    except ValidationError as e:
        raise ConfigError(f"{where}: {format_validation_error(e)}") from None
    if base_dir is not None:
        job = job.model_copy(update={"data": job.data.resolve(base_dir)})
    return job


def load_job(path: str | Path) -> JobConfig:
    """Read and validate a job file (the net itself is checked by :func:`~servelab.train.net.build_net`)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read job file {path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_job(doc, base_dir=path.resolve().parent, where=str(path))


def cluster_workers(cluster: dict[str, Any]) -> int:
    """How many workers a cluster section asks for, in SINGA's terms: worker groups x workers per group."""
    try:
        groups = int(cluster.get("nworker_groups", 1))
        per_group = int(cluster.get("nworkers_per_group", 1))
    except (TypeError, ValueError):
        raise ConfigError("cluster: nworker_groups and nworkers_per_group must be integers") from None
    return groups * per_group
