"""Single-process training: SINGA's BP and BPTT workers, metrics as they happen, resumable checkpoints.

:func:`train_one_batch` is SINGA's ``TrainOneBatch``: forward, backward, then ``update()`` —
the caller's hook that applies the gradients (a local optimizer step here; a push to parameter
servers or an all-reduce in the distributed frameworks, which reuse this function). For
``bptt`` with ``unroll_len`` it calls ``update()`` once per time window (truncated BPTT).

:func:`train_local` runs a whole job in this process:

- builds the net from the job's seed, the optimizer and the learning-rate schedule;
- resumes from the newest checkpoint when asked (model, optimizer, schedule, step, RNG state;
  the data order is a function of the step, so the resumed run sees the same batches);
- appends a JSON line to ``out_dir/metrics.jsonl`` every ``disp_freq`` steps (train) and every
  ``test_freq`` steps (test), flushed as written;
- checkpoints every ``checkpoint_freq`` steps and at the end; writes ``job.yaml`` and ``result.json``.

Units: times in seconds, throughput in samples per second (wall clock, data loading included).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from servelab.errors import ConfigError
from servelab.train.checkpoint import latest_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from servelab.train.job import JobConfig, TrainOneBatchConfig
from servelab.train.net import Net, build_net
from servelab.train.precision import MixedPrecision
from servelab.train.updaters import make_optimizer, make_scheduler

__all__ = ["BatchStats", "MetricsLog", "TrainProgress", "TrainResult", "build_for_job", "check_batch",
           "evaluate", "resolve_device", "train_local", "train_one_batch"]

MetricsCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class BatchStats:
    loss: float
    accuracy: float | None
    samples: int
    metrics: dict[str, float] = field(default_factory=dict)  # the net's other metric layers, by name


@dataclass
class TrainResult:
    job_name: str
    steps: int
    resumed_from_step: int | None
    train_loss: float | None
    test_loss: float | None
    test_accuracy: float | None
    samples_per_s: float
    elapsed_s: float
    out_dir: Path
    checkpoint: Path | None
    net: Net = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"job_name": self.job_name, "steps": self.steps, "resumed_from_step": self.resumed_from_step,
                "train_loss": self.train_loss, "test_loss": self.test_loss, "test_accuracy": self.test_accuracy,
                "samples_per_s": self.samples_per_s, "elapsed_s": self.elapsed_s,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None}


# ------------------------------------------------------------------------------ one batch
def _batch_size(batch: Mapping[str, torch.Tensor]) -> int:
    return int(next(iter(batch.values())).shape[0])


def train_one_batch(net: Net, batch: Mapping[str, torch.Tensor], cfg: TrainOneBatchConfig,
                    update: Callable[[], None], precision: MixedPrecision | None = None) -> BatchStats:
    """Forward, backward, ``update()`` (BP); per time window when ``cfg`` asks for truncated BPTT.
    With ``precision`` the forward runs under its autocast and the backward is scaled (fp16)."""
    if cfg.alg == "bptt" and cfg.unroll_len is not None:
        return _truncated_bptt(net, batch, cfg, update, precision)
    net.zero_grad(set_to_none=True)
    with precision.autocast() if precision is not None else contextlib.nullcontext():
        out = net(batch)
    if "loss" not in out:
        raise ConfigError("the net has no loss layer (softmax_loss, euclidean_loss, …) active in the train phase")
    loss = out["loss"]
    _backward(loss, precision)
    _clip(net, cfg)
    update()
    acc = out.get("accuracy")
    metrics = {name: float(out[name]) for name in net.metric_names}
    return BatchStats(float(loss.detach()), None if acc is None else float(acc), _batch_size(batch), metrics)


def _backward(loss: torch.Tensor, precision: MixedPrecision | None) -> None:
    if precision is None:
        loss.backward()
        return
    precision.backward(loss)
    precision.unscale()  # clipping sees the true gradients


def _clip(net: Net, cfg: TrainOneBatchConfig) -> None:
    if cfg.clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad_norm)


def _truncated_bptt(net: Net, batch: Mapping[str, torch.Tensor], cfg: TrainOneBatchConfig,
                    update: Callable[[], None], precision: MixedPrecision | None = None) -> BatchStats:
    seq = net.sequence_inputs
    if not seq:
        raise ConfigError("train_one_batch: bptt with unroll_len needs an input layer with sequence: true "
                          "(its axis 1 is time)")
    length = int(batch[seq[0]].shape[1])
    k = cfg.unroll_len or length
    losses, accs, weights = [], [], []
    net.carry_state(True)  # fresh state for this batch, carried across its windows
    try:
        for start in range(0, length, k):
            window = {key: (t[:, start:start + k] if key in seq else t) for key, t in batch.items()}
            net.zero_grad(set_to_none=True)
            with precision.autocast() if precision is not None else contextlib.nullcontext():
                out = net(window)
            _backward(out["loss"], precision)
            _clip(net, cfg)
            update()
            steps = min(k, length - start)
            losses.append(float(out["loss"].detach()) * steps)
            if "accuracy" in out:
                accs.append(float(out["accuracy"]) * steps)
            weights.append(steps)
    finally:
        net.carry_state(False)
    total = sum(weights)
    return BatchStats(sum(losses) / total, sum(accs) / total if accs else None, _batch_size(batch))


def evaluate(net: Net, batches: Iterable[Mapping[str, torch.Tensor]], *, max_batches: int = 0,
             device: torch.device | None = None) -> dict[str, Any]:
    """Mean loss and accuracy (weighted by batch size) over ``batches`` in the test phase."""
    was_training = net.training
    net.eval()
    loss_sum = acc_sum = 0.0
    n = 0
    has_acc = False
    metric_sums: dict[str, float] = {}
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if max_batches and i >= max_batches:
                    break
                if device is not None:
                    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                out = net(batch)
                b = _batch_size(batch)
                if "loss" in out:
                    loss_sum += float(out["loss"]) * b
                if "accuracy" in out:
                    has_acc = True
                    acc_sum += float(out["accuracy"]) * b
                for name in net.metric_names:
                    metric_sums[name] = metric_sums.get(name, 0.0) + float(out[name]) * b
                n += b
    finally:
        net.train(was_training)
    return {"loss": loss_sum / n if n else None, "accuracy": acc_sum / n if n and has_acc else None, "samples": n,
            **{k: v / n for k, v in metric_sums.items() if n}}


def check_batch(net: Net, batch: Mapping[str, torch.Tensor]) -> None:
    """Refuse data that does not fit the input layers, naming the layer (checked on the first batch)."""
    for layer in net.input_layers:
        key = layer.source
        if key not in batch:
            raise ConfigError(f"input layer {layer.name!r} reads {key!r} but the data gives {', '.join(batch)}; "
                              "set source: on the input layer")
        t = batch[key]
        want = list(layer.options.shape)
        got = list(t.shape[1:])
        if layer.options.sequence and len(got) == len(want) and got[1:] == want[1:]:
            got[0] = want[0]  # any length along time
        if got != want:
            raise ConfigError(f"input layer {layer.name!r} declares shape {want} but the data gives "
                              f"{list(t.shape[1:])} per sample")
        kind = "int64" if layer.options.dtype == "int64" else "float32"
        if str(t.dtype).removeprefix("torch.") != kind:
            raise ConfigError(f"input layer {layer.name!r} declares dtype {kind} but the data gives "
                              f"{str(t.dtype).removeprefix('torch.')}")


# ------------------------------------------------------------------------------ bookkeeping
class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, flushed as written. On resume, lines past the
    checkpoint's step (written by the interrupted run) are dropped, so the log reads as one run."""

    def __init__(self, path: Path, *, resume_step: int | None) -> None:
        self.path = path
        if resume_step is None:
            path.write_text("")
        elif path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        self._f = open(path, "a")  # noqa: SIM115 - held open for the run, closed by close()

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class TrainProgress:
    """A rich progress bar with loss, accuracy and samples/s; does nothing when disabled."""

    def __init__(self, enabled: bool, total: int, start: int, description: str) -> None:
        self._p = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("loss {task.fields[loss]}"), TextColumn("acc {task.fields[acc]}"),
                           TextColumn("{task.fields[rate]} samples/s"), TimeRemainingColumn())
        self._task = self._p.add_task(description, total=total, completed=start, loss="-", acc="-", rate="-")
        self._p.start()

    def advance(self) -> None:
        if self._p is not None:
            self._p.advance(self._task)

    def show(self, loss: float | None, acc: float | None, rate: float | None) -> None:
        if self._p is not None:
            self._p.update(self._task, loss="-" if loss is None else f"{loss:.4f}",
                           acc="-" if acc is None else f"{acc:.3f}", rate="-" if rate is None else f"{rate:,.0f}")

    def log(self, text: str) -> None:
        if self._p is not None:
            self._p.console.print(text)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda, but torch sees no CUDA GPU here (torch.cuda.is_available() is False); "
                          "set device: cpu")
    return torch.device(name)


def build_for_job(job: JobConfig, device: torch.device | None = None) -> tuple[Net, Any, Any]:
    """Net (seeded by ``job.seed``), optimizer and schedule for a job: what every worker builds."""
    torch.manual_seed(job.seed)
    net = build_net(job.neuralnet)
    if device is not None:
        net.to(device)
    optimizer = make_optimizer(net.param_groups(), job.updater)
    return net, optimizer, make_scheduler(optimizer, job.updater.learning_rate)


# ------------------------------------------------------------------------------ the loop
def train_local(job: JobConfig, *, out_dir: Path, progress: bool = True, resume: bool = False,
                on_metrics: MetricsCallback | None = None) -> TrainResult:
    """Run ``job`` in this process; see the module docstring. ``on_metrics`` sees every record."""
    from servelab.train.data import make_data

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / job.checkpoint_path
    device = resolve_device(job.device)
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    net, optimizer, scheduler = build_for_job(job, device)
    start, latest = 0, latest_checkpoint(ckpt_dir)
    if latest is not None and not resume:
        raise ConfigError(f"{ckpt_dir} holds checkpoints of an earlier run ({latest.name}); resume it (--resume) "
                          "or choose another output directory")
    if resume and latest is not None:
        state = load_checkpoint(latest, map_location=device)
        try:
            net.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise ConfigError(f"checkpoint {latest} does not fit this job's net or updater: {e}") from None
        restore_rng(state["rng"])
        start = int(state["step"])
    (out_dir / "job.yaml").write_text(job.to_yaml())
    metrics = MetricsLog(out_dir / "metrics.jsonl", resume_step=start if (resume and latest) else None)
    bar = TrainProgress(progress, job.train_steps, start, job.name)
    if start:
        bar.log(f"resumed {job.name} from {latest} at step {start}")

    def emit(record: dict[str, Any]) -> None:
        metrics.write(record)
        if on_metrics is not None:
            on_metrics(record)

    def test(step: int) -> dict[str, Any] | None:
        if not job.data.has_test:
            return None
        r = evaluate(net, make_data(job, "test"), max_batches=job.test_steps, device=device)
        emit({"phase": "test", "step": step, **r})
        bar.log(f"step {step}: test loss {r['loss']:.4f}" + (f" accuracy {r['accuracy']:.3f}" if r["accuracy"]
                                                              is not None else ""))
        return r

    amp = MixedPrecision(job.precision, device, optimizer)
    update = amp.step

    if job.pretrain and start == 0:  # greedy RBM stages first (a resumed run has them in its checkpoint)
        from servelab.train.rbm import pretrain

        pretrain(net, job, device=device, emit=emit)
    ckpt: Path | None = latest
    train_loss: float | None = None
    window: list[BatchStats] = []
    t_run = time.perf_counter()
    t_window = t_run
    samples_total = 0
    step = start
    net.train()
    try:
        batches = make_data(job, "train", start_batch=start)
        for step in range(start + 1, job.train_steps + 1):
            batch = next(batches)
            if step == start + 1:
                check_batch(net, batch)
            if device.type != "cpu":
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used
            stats = train_one_batch(net, batch, job.train_one_batch, update, amp)
            scheduler.step()
            if not math.isfinite(stats.loss):
                raise ConfigError(f"loss became {stats.loss} at step {step}; lower the learning rate "
                                  f"({job.updater.learning_rate.base}) or set train_one_batch.clip_grad_norm")
            window.append(stats)
            samples_total += stats.samples
            bar.advance()
            if step % job.disp_freq == 0 or step == job.train_steps:
                now = time.perf_counter()
                n = sum(s.samples for s in window)
                train_loss = sum(s.loss * s.samples for s in window) / n
                accs = [(s.accuracy, s.samples) for s in window if s.accuracy is not None]
                acc = sum(a * k for a, k in accs) / sum(k for _, k in accs) if accs else None
                rate = n / max(now - t_window, 1e-9)
                extra = {k: sum(s.metrics[k] * s.samples for s in window) / n for k in window[-1].metrics}
                emit({"phase": "train", "step": step, "loss": train_loss, "accuracy": acc, **extra,
                      "lr": lr, "samples_per_s": rate,
                      "elapsed_s": now - t_run})
                bar.show(train_loss, acc, rate)
                window, t_window = [], time.perf_counter()
            if job.test_freq and step % job.test_freq == 0 and step != job.train_steps:
                test(step)
            if job.checkpoint_freq and step % job.checkpoint_freq == 0 and step != job.train_steps:
                ckpt = _save(ckpt_dir, step, job, net, optimizer, scheduler)
        elapsed = time.perf_counter() - t_run
        final = test(job.train_steps)
        if step > start or ckpt is None:
            ckpt = _save(ckpt_dir, job.train_steps, job, net, optimizer, scheduler)
    finally:
        bar.close()
        metrics.close()
    result = TrainResult(
        job_name=job.name, steps=job.train_steps, resumed_from_step=start or None, train_loss=train_loss,
        test_loss=final["loss"] if final else None, test_accuracy=final["accuracy"] if final else None,
        samples_per_s=samples_total / elapsed if elapsed > 0 else 0.0, elapsed_s=elapsed, out_dir=out_dir,
        checkpoint=ckpt, net=net)
    (out_dir / "result.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result


def _save(ckpt_dir: Path, step: int, job: JobConfig, net: Net, optimizer: Any, scheduler: Any) -> Path:
    return save_checkpoint(ckpt_dir, step=step, job_name=job.name, model=net.state_dict(),
                           optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict())
