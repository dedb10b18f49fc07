"""Training on several devices or machines through tf.distribute, for `kerastl finetune --distribute` and
`kerastl pretrain --strategy` alike: the strategy (`make_distribution`), which worker writes the outputs
(`is_chief`, `worker_directory`), and fine-tuning's `Distribution`, the run's strategy with its fit and
predict.

- None: TensorFlow's default strategy (one device); the run is exactly the one without a strategy.
- `mirrored`: `tf.distribute.MirroredStrategy` over the local devices (several GPUs; on a CPU-only machine one
  replica). Keras `Model.fit` runs under it.
- `multiworker`: `tf.distribute.MultiWorkerMirroredStrategy` over the machines `TF_CONFIG` describes. Keras 3's
  `Model.fit` does not run under it (keras-team/keras#20585: it fails in its first batch reduction), so fine-tuning
  trains there with `kerastl.train.distributed_fit`, a short loop that keeps fit's contract (callbacks, class
  weights, validation logs, History).

The batch size of a run is per replica: each step takes `batch_size × replicas` examples (the global batch),
split evenly over the replicas, as Keras' distribution guide prescribes; the learning rate is not rescaled.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from kerastl.errors import KerastlError, UsageError

#: `finetune --distribute` values (None: the default strategy).
DISTRIBUTE = ("mirrored", "multiworker")


def make_distribution(name: str | None, flag: str = "--strategy"):
    """The tf.distribute strategy called `name`: `mirrored`, `multiworker`, or anything else (`auto`, None) the
    default single-device strategy. `flag` is the option that named it, for the error lines.

    Raises:
        KerastlError: `multiworker` without `TF_CONFIG`, or with a `TF_CONFIG` that is not JSON.
    """
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            section = "Pre-training on several machines" if flag == "--strategy" else "Fine-tuning on several devices"
            raise KerastlError(f"{flag} multiworker needs TF_CONFIG describing the cluster and this worker's "
                               f"task; see the README section '{section}'")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError:
            raise KerastlError("TF_CONFIG is not valid JSON; set it to {\"cluster\": {\"worker\": [...]}, "
                               "\"task\": {\"type\": \"worker\", \"index\": N}}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _tf_config() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    except ValueError:
        return {}


def is_chief() -> bool:
    """Worker 0 (or a `chief` task, or no cluster at all) writes the outputs."""
    tf_config = _tf_config()
    task = tf_config.get("task", {})
    return task.get("type", "worker") == "chief" or (task.get("type", "worker") == "worker"
                                                      and int(task.get("index", 0)) == 0
                                                      and "chief" not in tf_config.get("cluster", {}))


def task_index() -> int:
    """This worker's index in `TF_CONFIG` (0 without one)."""
    return int(_tf_config().get("task", {}).get("index", 0))


def worker_directory(path) -> Path:
    """Where this worker writes what it must write but nobody keeps: `path` on the chief, else a directory beside
    it named for the worker (`.NAME.worker1`), as Keras' multi-worker guide has workers write to their own
    temporary paths. It is the same path each time a worker starts, so a restarted worker finds its backup."""
    path = Path(path)
    return path if is_chief() else path.parent / f".{path.name}.worker{task_index()}"


class Distribution:
    """A fine-tuning run's strategy (`distribution(name)`): the scope its model is built in, the global batch,
    where this worker writes, and the chief's values for what each worker computes alone. The model's
    optimizer and training follow the strategy it was built under (`model_scope`, `kerastl.train.distributed_fit.fit`)."""

    def __init__(self, name: str | None):
        self.name = name
        self.strategy = make_distribution(name, flag="--distribute") if name else None
        self.replicas = int(self.strategy.num_replicas_in_sync) if self.strategy is not None else 1
        self.multiworker = name == "multiworker"
        self.chief = is_chief() if self.multiworker else True

    def scope(self):
        """The strategy's scope (nothing for the default strategy): every variable the run trains must be
        made inside it, the backbone's included."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def global_batch(self, batch_size: int) -> int:
        """The examples of one step over all replicas: `batch_size` per replica."""
        return int(batch_size) * self.replicas

    def out(self, out):
        """The directory this worker writes its backups to: `out` on the chief, else `worker_directory(out)`."""
        return out if out is None or not self.multiworker else worker_directory(out)

    def discard(self, directory) -> dict:
        """Removes a non-chief worker's `directory` once the run is over: only the chief's outputs are kept.
        Returns the files written (none)."""
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
        return {}

    def broadcast_from_chief(self, variables) -> None:
        """Sets `variables` on every worker to the chief's values: for what each worker computes on its own
        (the head's standardisation, a linear probe's solution), which floating-point differences between
        machines could otherwise leave out of step."""
        if not self.multiworker or not variables:
            return
        import tensorflow as tf

        variables = list(variables)

        def replica_fn():
            context = tf.distribute.get_replica_context()
            first = tf.equal(context.replica_id_in_sync_group, 0)
            return [context.all_reduce(tf.distribute.ReduceOp.SUM,
                                       tf.where(first, tf.identity(v.value), tf.zeros_like(v.value)))
                    for v in variables]

        values = self.strategy.run(tf.function(replica_fn))
        for variable, value in zip(variables, values):
            variable.assign(self.strategy.experimental_local_results(value)[0])

    def record(self, batch_size: int) -> dict | None:
        """What metrics.json records of the run's distribution (None for the default strategy)."""
        if self.strategy is None:
            return None
        cluster = _tf_config().get("cluster", {}) if self.multiworker else {}
        return {"strategy": self.name, "replicas": self.replicas,
                "workers": len(cluster.get("worker", [])) + len(cluster.get("chief", [])) or 1,
                "batch_size_per_replica": int(batch_size), "global_batch": self.global_batch(batch_size)}


def model_scope(model):
    """The scope of the strategy `model` was built under, for what is made with it later (its optimizer);
    nothing for a model of the default strategy."""
    import tensorflow as tf

    strategy = model.distribute_strategy
    return contextlib.nullcontext() if strategy is tf.distribute.get_strategy() else strategy.scope()


def distribution(name: str | None, backbone=None) -> Distribution:
    """The `Distribution` of `finetune --distribute name` (None: the default strategy). `backbone` is what
    finetune was given: a spec loads inside the strategy's scope, a loaded `Backbone` cannot.

    Raises:
        UsageError: a strategy with a `Backbone` loaded outside its scope.
        KerastlError: `multiworker` without a usable `TF_CONFIG`.
    """
    from kerastl.core.records import Backbone

    if name and isinstance(backbone, Backbone):
        raise UsageError(f"--distribute {name} builds the model inside the strategy's scope; give the backbone "
                         f"as a spec (e.g. {backbone.spec!r}), not a Backbone loaded outside it")
    return Distribution(name)
