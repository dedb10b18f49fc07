"""How pre-training runs on this machine: the dtype policy and XLA chosen by timing real steps (`choose_execution`,
`mixed_policy`, `has_gpu`), forward FLOPs and the measured matmul peak that utilisation is reported against,
the hardware summary and weights digest a manifest records."""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path


def count_flops(model) -> int:
    """Forward FLOPs per example (2 × multiply-accumulates) of the Conv1D, Conv2D, DepthwiseConv2D and Dense
    layers, and of layers that report their own (`forward_flops()`)."""
    import keras

    from kerastl.core.graph import walk_layers

    total = 0
    for layer in walk_layers(model):
        if isinstance(layer, keras.Model):
            continue
        out = getattr(layer, "output", None)
        if out is None:
            continue
        out_shape = out.shape
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += 2 * kh * kw * math.prod(out_shape[1:])
        elif isinstance(layer, keras.layers.SeparableConv2D):
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            total += 2 * (kh * kw * cin * math.prod(out_shape[1:3]) * layer.depth_multiplier
                          + cin * layer.depth_multiplier * math.prod(out_shape[1:]))
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1] // layer.groups
            total += 2 * kh * kw * cin * math.prod(out_shape[1:])
        elif isinstance(layer, keras.layers.Conv1D):
            cin = layer.input.shape[-1] // layer.groups
            total += 2 * layer.kernel_size[0] * cin * math.prod(out_shape[1:])
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
        elif hasattr(layer, "forward_flops"):  # layers of fixed maths, e.g. kerastl.inputs.audio.LogMelSpectrogram
            total += int(layer.forward_flops())
    return int(total)


def matmul_peak_flops(dtype: str = "float32", size: int = 2048, seconds: float = 1.0) -> float:
    """Measured matmul throughput (FLOP/s) of this machine in `dtype`: the peak that utilisation is reported
    against, measured rather than taken from a data sheet."""
    import tensorflow as tf

    a = tf.random.stateless_normal((size, size), seed=(1, 2), dtype=tf.float32)
    a = tf.cast(a, dtype)
    b = tf.cast(tf.random.stateless_normal((size, size), seed=(3, 4)), dtype)
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y)[:1, :1], tf.float32)))
    matmul(a, b).numpy()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 2:
        matmul(a, b).numpy()
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - start)


# -------------------------------------------------------------------------------- precision and XLA


def has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def mixed_policy() -> str:
    """float16 on GPUs (tensor cores), bfloat16 on CPUs (AVX512-BF16/AMX)."""
    return "mixed_float16" if has_gpu() else "mixed_bfloat16"


def choose_execution(config, build, sample_batch, steps: int = 8) -> dict:
    """Picks the dtype policy and XLA by timing a few real training steps of each candidate.

    `config` is the run's `kerastl.pretraining.run.PretrainConfig` (its `precision` and `jit_compile`);
    `build()` returns a fresh compiled-ready model for the current global policy. Returns
    `{"policy", "jit_compile", "measurements": [{"policy", "jit_compile", "step_seconds"}]}`.
    """
    import keras

    policies = {"float32": ["float32"], "mixed": [mixed_policy()],
                "auto": ["float32", mixed_policy()]}[config.precision]
    jits = [config.jit_compile] if config.jit_compile is not None else [False, True]
    if len(policies) * len(jits) == 1:
        return {"policy": policies[0], "jit_compile": jits[0], "measurements": []}
    x, y = sample_batch
    measurements = []
    for policy in policies:
        for jit in jits:
            keras.mixed_precision.set_global_policy(policy)
            model = build()
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                          jit_compile=jit)
            try:
                model.train_on_batch(x, y)  # trace and compile
                start = time.perf_counter()
                for _ in range(steps):
                    model.train_on_batch(x, y)
                seconds = (time.perf_counter() - start) / steps
            except Exception as error:  # noqa: BLE001 (an op without an XLA or bf16 kernel: not a candidate)
                seconds = float("inf")
                measurements.append({"policy": policy, "jit_compile": jit, "error": str(error).splitlines()[0][:100]})
                continue
            measurements.append({"policy": policy, "jit_compile": jit, "step_seconds": round(seconds, 5)})
    keras.mixed_precision.set_global_policy("float32")
    best = min((m for m in measurements if "step_seconds" in m), key=lambda m: m["step_seconds"])
    return {"policy": best["policy"], "jit_compile": best["jit_compile"], "measurements": measurements}


def hardware_summary() -> dict:
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            "tensorflow": tf.__version__, "python": platform.python_version(), "platform": platform.platform()}
