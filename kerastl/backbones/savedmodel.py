"""TF2 SavedModel helpers of `HubLayer`: the object graph's variable paths, partial loading onto given variables,
the variables a restored function reads, Keras-valid variable names, output-spec records, and copying a
SavedModel directory.
"""

from __future__ import annotations

import re
import shutil
from collections import deque
from pathlib import Path

import tensorflow as tf

from kerastl.core.graph import concrete_functions
from kerastl.errors import KerastlError


def _variable_paths(saved_model_dir: str) -> dict[int, str]:
    """Map each variable node of the SavedModel's object graph to its shortest node path.

    Node paths (``root.layer_with_weights-0.kernel``) are what ``load_partial`` accepts. Raises
    KerastlError for TF1 (``hub.Module``) SavedModels, which have no object graph.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(Path(saved_model_dir, "saved_model.pb").read_bytes())
    except Exception as exc:  # protobuf raises DecodeError, an OSError may come from reading.
        raise KerastlError(
            f"cannot read {saved_model_dir}/saved_model.pb ({exc}); re-download or re-export the "
            "module"
        ) from exc
    if len(proto.meta_graphs) != 1 or not proto.meta_graphs[0].HasField("object_graph_def"):
        raise KerastlError(
            f"{saved_model_dir} is a TF1 SavedModel (hub.Module format), which HubLayer can't "
            "load; use the module's TF2 SavedModel version"
        )
    nodes = proto.meta_graphs[0].object_graph_def.nodes
    # Breadth first, so each node gets its shortest path and the choice is deterministic.
    paths = {0: "root"}
    queue = deque([0])
    while queue:
        node_id = queue.popleft()
        for child in nodes[node_id].children:
            if child.node_id not in paths:
                paths[child.node_id] = f"{paths[node_id]}.{child.local_name}"
                queue.append(child.node_id)
    return {i: p for i, p in paths.items() if nodes[i].WhichOneof("kind") == "variable"}


def _load_partial(saved_model_dir: str, filters):
    try:
        load_partial = tf.__internal__.saved_model.load_partial
    except AttributeError as exc:  # pragma: no cover - present in every TF 2.x we support.
        raise KerastlError(
            f"this TensorFlow ({tf.__version__}) lacks saved_model.load_partial, which HubLayer "
            "needs; install a TensorFlow version that kerastl supports"
        ) from exc
    return load_partial(saved_model_dir, filters)


def _variables_used(fn) -> list:
    """The variables ``fn`` reads, trainable ones first, each once, in a deterministic order."""
    trainable, other, seen = [], [], set()
    for cf in concrete_functions(fn):
        for v in cf.trainable_variables:
            if id(v) not in seen:
                seen.add(id(v))
                trainable.append(v)
    for cf in concrete_functions(fn):
        for v in cf.variables:
            if id(v) not in seen:
                seen.add(id(v))
                other.append(v)
    return trainable + other


def _clean_name(tf_name: str, used: set) -> str:
    """A Keras-valid, unique variable name: no ``:0`` suffix, no ``/`` (nor anything but [\\w.-])."""
    name = re.sub(r":\d+$", "", tf_name)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip("_") or "variable"
    unique, n = name, 1
    while unique in used:
        unique, n = f"{name}_{n}", n + 1
    used.add(unique)
    return unique


def _spec_to_json(x) -> dict:
    shape = [None if d is None else int(d) for d in x.shape]
    return {"shape": shape, "dtype": tf.as_dtype(x.dtype).name}


def _copy_saved_model(src: str, dst: str) -> None:
    try:
        shutil.copytree(src, dst, dirs_exist_ok=True)
    except OSError as exc:
        raise KerastlError(
            f"cannot copy the SavedModel {src} to {dst} ({exc}); free disk space or fix permissions"
        ) from exc
