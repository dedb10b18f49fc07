"""TF-Hub TF2 SavedModels as layers of Keras 3 functional models.

``tensorflow_hub.KerasLayer`` does not work inside Keras 3 models (tensorflow/hub#903), and
``keras.layers.TFSMLayer`` breaks optimizers with slot variables (Adam, SGD with momentum) because
its variables keep TensorFlow's ``:0`` suffix, which is not valid in the slot variables' names.
``HubLayer`` fixes both: it tracks the very tf.Variables that the module's restored functions read,
under clean Keras names, so ``model.fit`` trains them with any optimizer. A model holding it saves
to a self-contained ``.keras`` file (the SavedModel is copied into the file's assets), exports with
``model.export(..., format="tf_saved_model")`` and converts to TFLite.

The module is always run in inference mode: BatchNormalization inside it normalises with its moving
statistics and never updates them, and dropout inside it is off, whether or not the layer is
trainable and whether or not the model is training. That is what fine-tuning a pretrained backbone
on a small data set wants (batch statistics of small batches would wreck the pretrained ones).

Security: a SavedModel is a program (its graph may contain file-reading or file-writing ops), and
a ``.keras`` file holding a ``HubLayer`` embeds one, or names a handle to download one from. Keras'
safe_mode cannot vet that graph, so a ``HubLayer`` refuses to be deserialised while Keras' safe
mode is on: ``keras.saving.load_model(path)`` (safe_mode=True, the default) raises KerastlError,
and neither the embedded copy nor the handle is touched. Load such files with
``kerastl.backbones.load_keras_file(path, trust=True)`` (the CLI's ``--trust``) or with
``safe_mode=False``, and only from sources you trust, as for the hub module itself. Rebuilding a
layer from an in-memory model (``keras.models.clone_model``) is not a load and is allowed.

Downloads: an ``https://`` handle may go unpinned; an ``http://`` one needs ``#sha256=<hex>`` (the
sha256 of the compressed tarball), and every redirect hop is checked against
``$KERASTL_TRUSTED_HUB_HOSTS`` and must stay https unless pinned (``kerastl.net``); handles are resolved by
``kerastl.backbones.hub_handles``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import shutil
import tempfile
import weakref

import keras
import tensorflow as tf

from kerastl.backbones.hub_handles import resolve_handle
from kerastl.backbones.savedmodel import (
    _clean_name,
    _copy_saved_model,
    _load_partial,
    _spec_to_json,
    _variable_paths,
    _variables_used,
)
from kerastl.core.graph import concrete_functions, first_input_spec
from kerastl.errors import KerastlError, one_line

__all__ = ["HubLayer", "resolve_handle", "trusted_loading"]

# Name of the SavedModel copy inside the layer's directory of the .keras file's assets.
_ASSET_DIRNAME = "savedmodel"


# --------------------------------------------------------------------------------------------------
# Trusted loading


# Set only by trusted_loading(): a model holding a HubLayer is being loaded with the user's trust.
_TRUSTED_LOAD = contextvars.ContextVar("kerastl_hub_trusted_load", default=False)


@contextlib.contextmanager
def trusted_loading():
    """Within this block, HubLayers may be deserialised, bind embedded SavedModels and resolve their
    handles even while Keras' safe mode is on. ``load_keras_file(trust=True)`` uses it; nothing else
    should. Raises nothing."""
    token = _TRUSTED_LOAD.set(True)
    try:
        yield
    finally:
        _TRUSTED_LOAD.reset(token)


def _refuse_untrusted_load(what: str) -> None:
    """Raise KerastlError if a model loads in Keras' safe mode outside trusted_loading()."""
    if _TRUSTED_LOAD.get():
        return
    try:
        from keras.src.saving.serialization_lib import in_safe_mode
    except ImportError:  # pragma: no cover - a Keras without it: fail closed
        safe = True
    else:
        # None: no load in progress (e.g. clone_model of an in-memory model); False: the caller
        # chose safe_mode=False, i.e. trusts the file.
        safe = in_safe_mode() is True
    if safe:
        raise KerastlError(
            f"refusing to {what} while loading a model in safe mode: a HubLayer runs a SavedModel "
            "graph, which safe mode cannot vet; pass --trust (load_keras_file(path, trust=True)) "
            "only if you trust whoever made the file"
        )


# --------------------------------------------------------------------------------------------------
# The layer


@keras.saving.register_keras_serializable(package="kerastl")
class HubLayer(keras.layers.Layer):
    """A TF2 SavedModel (TF-Hub module) as a Keras 3 layer.

    Args:
        handle: a SavedModel directory or an http(s) TF-Hub URL (see ``resolve_handle``).
        output_key: for modules returning a dict, the key of the output to return. By default the
            ``"default"`` key, or the only key.
        signature: name of a serving signature (``module.signatures[...]``) to call instead of the
            module's ``__call__``. Signatures take keyword tensors: the layer's input is passed
            under the signature's only input name, or, for a dict input, as the keywords.
        trainable: whether the module's trainable variables train (default False: frozen, as with
            ``hub.KerasLayer``). The module's non-trainable variables (BatchNormalization moving
            statistics) never do.
        **kwargs: passed to ``keras.layers.Layer`` (``name``, ``dtype``...).
        _module_state: internal, set by ``from_config``: the saved variables and output specs.

    The module runs in inference mode always (``training=False`` is passed when its function
    accepts it): BatchNormalization uses and keeps its moving statistics, dropout is off. Each
    variable the called function reads is tracked as a Keras variable wrapping that same
    tf.Variable, named after it with ``:0`` removed and other characters than ``[A-Za-z0-9_.-]``
    replaced by ``_`` (``conv2d/kernel:0`` -> ``conv2d_kernel``), so trained values are what the
    module computes with and optimizers' slot variables get valid names.

    Saving: ``get_config`` records the handle plus the variables' and outputs' shapes, and
    ``save_assets`` copies the SavedModel into the ``.keras`` file, so the file loads (trusted:
    ``load_keras_file(trust=True)`` or ``safe_mode=False``) where the handle does not exist. On
    loading, variables are restored before assets: the layer first holds placeholder variables,
    and ``load_assets`` binds the embedded module to those same variables (keeping their loaded,
    possibly fine-tuned values), so an optimizer built before that keeps working. A layer made by
    ``from_config`` alone (e.g. ``keras.models.clone_model``) resolves ``handle`` on its first call
    instead. See the module docstring about safe_mode and the trust an embedded SavedModel needs.

    Raises KerastlError (one line) for a bad handle (see ``resolve_handle``), a TF1 module, a
    module without ``__call__`` when no ``signature`` is given, an unknown ``signature``, a
    missing or ambiguous ``output_key``, or inputs the module does not accept.
    """

    def __init__(
        self,
        handle,
        output_key: str | None = None,
        signature: str | None = None,
        trainable: bool = False,
        *,
        _module_state: dict | None = None,
        **kwargs,
    ):
        super().__init__(trainable=trainable, **kwargs)
        self.handle = os.fspath(handle) if isinstance(handle, os.PathLike) else handle
        self.output_key = output_key
        self.signature = signature
        # Set once the module is loaded and its functions read this layer's variables.
        self._module = None
        self._fn = None
        self._saved_model_dir = None  # the directory the module was loaded from
        self._values_loaded = False  # load_own_variables ran while the module was not yet bound
        # (non-batch input shapes, dtypes) -> output specs, recorded from symbolic calls so that a
        # layer restored from its config can rebuild a functional model before its module loads.
        self._output_specs: list[dict] = []
        self._var_info: list[dict] = []

        if _module_state is None:
            self._bind(resolve_handle(self.handle), existing=None)
        else:
            # From a config: make placeholders now (the functional model, optimizer and weight
            # loading need them); load_assets or the first call binds the module to them.
            self._output_specs = list(_module_state.get("output_specs", []))
            used = set()
            for info in _module_state["variables"]:
                with keras.name_scope(self.name, caller=self):
                    variable = keras.Variable(
                        initializer="zeros",
                        shape=tuple(info["shape"]),
                        dtype=info["dtype"],
                        trainable=bool(info["trainable"]),
                        name=_clean_name(info["name"], used),
                    )
                self._var_info.append(dict(info))
                self._track_variable(variable)
        # Layer.trainable's setter marks the tracked variables; the module's own non-trainable
        # ones sit in _non_trainable_variables and so are never touched by it.
        self.trainable = trainable
        self.built = True

    # ---------------------------------------------------------------------------------------------
    # Module loading

    def _bind(self, saved_model_dir: str, existing: list | None) -> None:
        """Load the SavedModel at ``saved_model_dir`` and bind its functions to our variables.

        With ``existing=None`` the module's own variables are wrapped as new Keras variables.
        Otherwise ``existing`` are this layer's placeholder Keras variables: the loader restores
        the checkpoint into their very tf.Variables (so anything already holding them, such as an
        optimizer, stays valid), then values loaded by ``load_own_variables`` are put back.
        """
        var_paths = _variable_paths(saved_model_dir)
        if existing is None:
            filters = ["root", *var_paths.values()]
        else:
            if len(existing) != len(self._var_info):  # pragma: no cover - internal invariant
                raise KerastlError("HubLayer state is inconsistent; rebuild the layer from handle")
            known = set(var_paths.values())
            missing = [i["path"] for i in self._var_info if i["path"] not in known]
            if missing:
                raise KerastlError(
                    f"the SavedModel {saved_model_dir} lacks variables {missing[:3]} that layer "
                    f"'{self.name}' was saved with; load it with the module it was built from"
                )
            filters = {"root": None}
            for info, variable in zip(self._var_info, existing):
                filters[info["path"]] = _tf_variable(variable)
            snapshot = [v.numpy() for v in existing] if self._values_loaded else None
        try:
            loaded = _load_partial(saved_model_dir, filters)
        except KerastlError:
            raise
        except Exception as exc:
            raise KerastlError(
                f"cannot load the SavedModel {saved_model_dir} ({one_line(exc)}); check that it "
                "is an intact TF2 SavedModel"
            ) from exc
        module = loaded["root"]
        fn = self._select_function(module, saved_model_dir)
        used = _variables_used(fn)
        path_of = {id(loaded[p]): p for p in var_paths.values()}
        if existing is None:
            names = set()
            for v in used:
                if id(v) not in path_of:  # pragma: no cover - a saved function's captures are saved
                    raise KerastlError(
                        f"variable {v.name} of {saved_model_dir} is not in its object graph; "
                        "re-export the module with tf.saved_model.save"
                    )
                info = {
                    "path": path_of[id(v)],
                    "name": v.name,
                    "shape": [int(d) for d in v.shape],
                    "dtype": v.dtype.name,
                    "trainable": bool(v.trainable),
                }
                # In the layer's name scope, as add_weight does, so paths (and the optimizer slot
                # names derived from them) are "<layer>/<variable>" and differ between layers.
                with keras.name_scope(self.name, caller=self):
                    variable = keras.Variable(
                        # In the TF backend a tf.Variable initializer is kept as the variable's
                        # value (not copied), so the module's functions read what Keras trains.
                        initializer=v,
                        shape=tuple(info["shape"]),
                        dtype=info["dtype"],
                        trainable=info["trainable"],
                        name=_clean_name(v.name, names),
                    )
                self._var_info.append(info)
                self._track_variable(variable)
        else:
            bound = {id(_tf_variable(v)) for v in existing}
            if {id(v) for v in used} != bound:
                raise KerastlError(
                    f"the SavedModel {saved_model_dir} does not match layer '{self.name}' (its "
                    "function reads other variables); load it with the module it was built from"
                )
            if snapshot is not None:
                for variable, value in zip(existing, snapshot):
                    variable.assign(value)
        self._module, self._fn, self._saved_model_dir = module, fn, saved_model_dir

    def _select_function(self, module, saved_model_dir: str):
        if self.signature is not None:
            signatures = getattr(module, "signatures", {})
            if self.signature not in signatures:
                raise KerastlError(
                    f"{saved_model_dir} has no signature {self.signature!r}; pass signature= one "
                    f"of {sorted(signatures)} or None for the module's __call__"
                )
            fn = signatures[self.signature]
            self._input_names = sorted(fn.structured_input_signature[1])
            self._accepts_training = False
        else:
            # The restored tf.function itself (not any callable): its traces are inspected below.
            fn = getattr(module, "__call__", None)  # noqa: B004
            if fn is None or not hasattr(fn, "concrete_functions"):
                raise KerastlError(
                    f"{saved_model_dir} has no restored __call__ function; pass signature= one of "
                    f"{sorted(getattr(module, 'signatures', {}))}"
                )
            self._input_names = None
            self._accepts_training = _accepts_training(fn)
        self._check_output_key(fn, saved_model_dir)
        return fn

    def _check_output_key(self, fn, saved_model_dir: str) -> None:
        # All traces of one function return the same structure; the first one tells.
        traces = concrete_functions(fn)
        outputs = traces[0].structured_outputs if traces else None
        if isinstance(outputs, dict):
            self._pick_key(sorted(outputs), saved_model_dir)
        elif self.output_key is not None:
            raise KerastlError(
                f"output_key={self.output_key!r} was given but {saved_model_dir} returns a single "
                "output, not a dict; pass output_key=None"
            )

    def _pick_key(self, keys: list, where: str) -> str:
        if self.output_key is not None:
            if self.output_key not in keys:
                raise KerastlError(
                    f"{where} has no output {self.output_key!r}; pass output_key= one of {keys}"
                )
            return self.output_key
        if "default" in keys:
            return "default"
        if len(keys) == 1:
            return keys[0]
        raise KerastlError(
            f"{where} returns several outputs {keys}; pass output_key= to choose one"
        )

    def _ensure_module(self) -> None:
        """Bind the module if still unbound (a layer made by from_config without load_assets).

        Raises KerastlError while a model loads in safe mode without trusted_loading()."""
        if self._fn is None:
            _refuse_untrusted_load(f"resolve the hub handle {self.handle!r}")
            # Eagerly, even when reached while tracing: loading creates resources and functions.
            with tf.init_scope():
                self._bind(resolve_handle(self.handle), existing=list(self._ordered_variables()))

    def _ordered_variables(self) -> list:
        # The order of _var_info: trainable first as created, which is also Layer's save order.
        return self._trainable_variables + self._non_trainable_variables

    # ---------------------------------------------------------------------------------------------
    # Calling

    def _invoke(self, inputs):
        fn = self._fn
        if self._input_names is not None:  # a signature: keyword tensors only
            if isinstance(inputs, dict):
                kwargs = dict(inputs)
            elif len(self._input_names) == 1:
                kwargs = {self._input_names[0]: inputs}
            else:
                raise KerastlError(
                    f"signature {self.signature!r} takes inputs {self._input_names}; call layer "
                    f"'{self.name}' with a dict of them"
                )
            specs = fn.structured_input_signature[1]
            kwargs = {k: _cast_like(v, specs.get(k)) for k, v in kwargs.items()}
            outputs = fn(**kwargs)
        else:
            spec = first_input_spec(fn)
            inputs = tf.nest.map_structure(lambda t: _cast_like(t, spec), inputs)
            if self._accepts_training:
                outputs = fn(inputs, training=False)
            else:
                outputs = fn(inputs)
        if isinstance(outputs, dict):
            outputs = outputs[self._pick_key(sorted(outputs), f"layer '{self.name}'")]
        return outputs

    def call(self, inputs):
        self._ensure_module()
        return self._invoke(inputs)

    def compute_output_spec(self, inputs):
        flat_in = [_spec_to_json(x) for x in tf.nest.flatten(inputs)]
        key = [{"shape": s["shape"][1:], "dtype": s["dtype"]} for s in flat_in]
        if self._fn is None:
            for record in self._output_specs:
                if record["inputs"] == key:
                    return self._specs_from_record(record, inputs)
            self._ensure_module()
        tf_specs = tf.nest.map_structure(
            lambda x: tf.TensorSpec(x.shape, tf.as_dtype(x.dtype)), inputs
        )
        try:
            traced = tf.function(self._invoke, autograph=False).get_concrete_function(tf_specs)
        except KerastlError:
            raise
        except (ValueError, TypeError) as exc:
            raise KerastlError(
                f"the module of layer '{self.name}' does not accept inputs {flat_in} "
                f"({one_line(exc)[:300]}); give the model inputs of the shape and dtype the "
                "module expects"
            ) from exc
        outputs = traced.structured_outputs
        record = {
            "inputs": key,
            "outputs": [_spec_to_json(t) for t in tf.nest.flatten(outputs)],
            "sequence": isinstance(outputs, (list, tuple)),
        }
        if record not in self._output_specs:
            self._output_specs.append(record)
        return self._specs_from_record(record, inputs)

    @staticmethod
    def _specs_from_record(record: dict, inputs):
        batch = tf.nest.flatten(inputs)[0].shape[0]
        specs = []
        for out in record["outputs"]:
            shape = list(out["shape"])
            if shape:
                # The module's batch dimension is usually None; follow the input's.
                shape[0] = batch if shape[0] is None else shape[0]
            specs.append(keras.KerasTensor(tuple(shape), dtype=out["dtype"]))
        return specs if record["sequence"] else specs[0]

    def compute_output_shape(self, input_shape):
        def to_tensor(shape):
            return keras.KerasTensor(tuple(shape), dtype="float32")

        if isinstance(input_shape, dict):
            inputs = {k: to_tensor(s) for k, s in input_shape.items()}
        else:
            inputs = to_tensor(input_shape)
        return tf.nest.map_structure(lambda t: t.shape, self.compute_output_spec(inputs))

    # ---------------------------------------------------------------------------------------------
    # Saving

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "handle": self.handle,
                "output_key": self.output_key,
                "signature": self.signature,
                "module_state": {
                    "variables": [dict(i) for i in self._var_info],
                    "output_specs": [dict(r) for r in self._output_specs],
                },
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        """Rebuild the layer; refused (KerastlError) while a model loads in Keras' safe mode, unless
        within trusted_loading(): the layer would run, or download, a SavedModel graph."""
        _refuse_untrusted_load("deserialise a HubLayer")
        config = dict(config)
        state = config.pop("module_state", None)
        if state is None:  # a config written by hand: load from the handle now
            return cls(**config)
        return cls(**config, _module_state=state)

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self._fn is None:
            # The module is bound later (load_assets); it must keep these values, not its own.
            self._values_loaded = True

    def save_assets(self, dir_path):
        """Copy the module's SavedModel into the ``.keras`` file's assets (``dir_path``)."""
        self._ensure_module()
        _copy_saved_model(self._saved_model_dir, os.path.join(dir_path, _ASSET_DIRNAME))

    def load_assets(self, dir_path):
        """Bind the SavedModel embedded by ``save_assets`` to the variables loaded before.

        Keras deletes ``dir_path`` after loading, and a module may need its files later (asset
        files such as vocabularies are re-read on export, and saving again copies the directory),
        so the SavedModel is first copied to a private temporary directory that lives as long as
        this layer. A layer whose module is already bound ignores the call. A ``.keras`` file
        without the embedded copy falls back to resolving ``handle``.
        """
        if self._fn is not None:
            return
        _refuse_untrusted_load("bind the SavedModel embedded in a HubLayer")
        source = os.path.join(dir_path, _ASSET_DIRNAME)
        if not os.path.isfile(os.path.join(source, "saved_model.pb")):
            self._ensure_module()
            return
        private = tempfile.mkdtemp(prefix="kerastl-hub-")
        weakref.finalize(self, shutil.rmtree, private, ignore_errors=True)
        target = os.path.join(private, _ASSET_DIRNAME)
        _copy_saved_model(source, target)
        self._bind(target, existing=list(self._ordered_variables()))


# --------------------------------------------------------------------------------------------------
# Small helpers


def _tf_variable(variable) -> tf.Variable:
    """The tf.Variable behind a Keras variable (the TF backend keeps it as the value)."""
    value = variable.value
    if not isinstance(value, tf.Variable):  # e.g. read under an autocast scope
        value = variable._value  # the TF backend's storage of the tf.Variable
    return value


def _accepts_training(fn) -> bool:
    import inspect

    try:
        return "training" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False




def _cast_like(x, spec):
    """Cast floating ``x`` to the floating dtype ``spec`` expects (e.g. under mixed precision)."""
    if spec is None or not isinstance(spec, tf.TensorSpec):
        return x
    x = tf.convert_to_tensor(x)
    if x.dtype.is_floating and spec.dtype.is_floating and x.dtype != spec.dtype:
        return tf.cast(x, spec.dtype)
    return x


