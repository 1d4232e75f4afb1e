"""One layer-net job (an MLP on the synthetic task) trained by each distributed framework:
the cluster section alone picks it (docs/training-distributed.md, "Worked example").

    python examples/train/frameworks.py

Prints per framework: wall time including process start, worker 0's first and last loss, the
test accuracy log as (elapsed s, step, accuracy), and the returned net's type.
"""

import copy
import tempfile
import time
from pathlib import Path

from servelab.train.distributed import launch
from servelab.train.job import load_job

CLUSTERS = {  # four cluster sections, four frameworks (the topology table)
    "allreduce": {"nworkers_per_group": 2},
    "sync-ps": {"nworkers_per_group": 2, "nservers_per_group": 2, "server_worker_separate": True},
    "async-ps": {"nworker_groups": 2, "server_worker_separate": True},
    "hogwild": {"nworker_groups": 2},
}


def main() -> None:
    job = load_job(Path(__file__).with_name("mlp-frameworks.yaml"))
    with tempfile.TemporaryDirectory() as out:
        for name, cluster in CLUSTERS.items():
            doc = copy.deepcopy(job.model_dump(mode="json", exclude_none=True))
            doc["cluster"] = cluster
            if name != "allreduce":  # feature-parallel layers only under all-reduce
                for layer in doc["neuralnet"]["layers"]:
                    layer.pop("partition_dim", None)
            t0 = time.monotonic()
            r = launch(type(job).model_validate(doc), out_dir=Path(out) / name, timeout_s=300)
            assert r.framework == name, (r.framework, name)
            print(f"{name} {time.monotonic() - t0:.1f}s {r.losses[0]} {r.losses[-1]} "
                  f"{[(round(t, 3), s, a) for t, s, a in r.eval_log]} {type(r.net).__name__}")


if __name__ == "__main__":  # the workers are started with forkserver: they import this file
    main()
