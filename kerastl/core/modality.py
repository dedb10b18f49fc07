"""The Modality protocol and its registry: the one place where input types (image, audio, text, and any a user
adds) differ.

A `Modality` says, for one input type, how its files are recognised and decoded, how a set of them becomes a
tf.data pipeline and is augmented, what input a model of it takes (read from the markers the model carries,
never guessed from a shape), how a TF-Hub module of it is wrapped, what a SavedModel and a TFLite file of it
take, which quantizations it allows, the TFLite metadata it carries and what its MediaPipe task makes of the
file, the synthetic inputs an export is checked on without data, and how backbones of it are pre-trained. Everything else in kerastl asks the registry
(`get`, `of_model`, `of_folder`, `all_modalities`) and calls these methods; no other module tests a modality's
name.

The defaults below are what a simple numeric input type needs (fixed-shape float32 arrays, no augmentation, no
hub modules, no MediaPipe task, no pre-training), so a new modality is one module: subclass `Modality`, set
`name`, `extensions` and `noun`, implement `decode_error`, `load` and `claims`, and `register` an instance.

The built-in modalities live in `kerastl.modalities` (a higher layer: they use data, backbones, export and
pretraining). They register themselves when imported; the registry imports them by name on first use, as a
plugin host loads its entry points, so lower layers depend on this protocol and never on them.
"""

from __future__ import annotations

import dataclasses
import importlib
import os

from kerastl.errors import KerastlError, UsageError

# Imported on the first registry lookup, in this order (`names`); where claims overlap, a modality with
# `fallback = True` (image) is asked last (`all_modalities`).
BUILTIN_MODULES = ("kerastl.modalities.image", "kerastl.modalities.audio", "kerastl.modalities.text")


@dataclasses.dataclass(frozen=True)
class Companion:
    """A file an export writes beside a TFLite file (a text model's vocabulary), declared by a modality in
    `Modality.companion_files`; its content comes from `Modality.companion_contents`.

    Attributes:
        key: its key in the export's file set (`vocabulary`).
        file_name: its name inside a `--format all` directory (`vocabulary.txt`).
        suffix: beside a single `.tflite` file it is `<stem><suffix>` (`.vocab.txt`).
        report_key: the export report's key for what `companion_contents` says about it (`tokenizer`).
    """

    key: str
    file_name: str
    suffix: str
    report_key: str | None = None


class Modality:
    """One input type. Subclasses set the attributes and override what differs from the defaults.

    Attributes:
        name: the registry key, recorded in manifests, metrics and export reports (`image`).
        extensions: lower-case file extensions of its files in a class-per-folder directory (`.png`, ...).
        noun: one example, for messages ("image"); `plural` the examples ("images", "clips").
        input_form: what kerastl feeds a model of it, for messages ("images of shape (height, width, 1 or 3)").
        fallback: asked last when models, hub modules or folders are matched to modalities (image: a float
            (H, W, 1 or 3) input without any marker).
        quantizations: the TFLite quantizations it allows (see `kerastl.export.quantize.QUANTIZATIONS`).
        default_backbone_hint: an example backbone spec of it, for messages when none is shipped.
        pretrain_hint: the `kerastl pretrain` command that makes a backbone of it, or None.
        companion_files: the `Companion` files its TFLite exports write beside the .tflite file.
        classical_baseline: what `classical_features` computes, as metrics.json names the baseline ("pixels +
            logistic regression"); None: no classical baseline (every run reports it as not measured).
    """

    name: str = ""
    extensions: tuple = ()
    noun: str = ""
    plural: str = ""
    input_form: str = "fixed-shape float32 arrays"
    fallback: bool = False
    quantizations: tuple = ("none", "float16", "dynamic")
    default_backbone_hint: str = "a .keras backbone of this input type"
    pretrain_hint: str | None = None
    classical_baseline: str | None = None

    # ------------------------------------------------------------------------------------------ files
    def decode_error(self, path) -> str | None:
        """Why `path` cannot be read as a file of this modality (damaged, over a size limit), or None."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ models
    def claims(self, model):
        """The `InputSpec` of `model` if a marker it carries (a layer, its input dtype) says it takes this
        modality, else None. Must not guess from a shape alone.

        Raises:
            KerastlError: the model carries this modality's marker but its input does not fit it.
        """
        return

    def claims_unmarked(self, model):
        """For `fallback` modalities: the `InputSpec` of a model carrying no marker at all, or None."""
        return

    def check_input(self, model, spec) -> None:
        """Raises KerastlError when `model` cannot be fine-tuned, evaluated or exported as this modality
        (e.g. a variable image size)."""

    def mark(self, model, manifest: dict):
        """`model` (a backbone a manifest labels with this modality) with the marker `claims` reads, added
        if it lacks one."""
        return model

    def preprocessing_record(self, model) -> dict:
        """The JSON-able record of what the model's first layers do to raw inputs (manifests, metrics)."""
        return {"mode": "none"}

    def backbone_preferences(self, folder) -> dict:
        """What the default backbone for the class-per-folder data in `folder` should declare in its
        manifest's `input` record (the image modality: `{"color": "grayscale"}` or `{"color": "rgb"}`), for
        `kerastl.backbones.default_backbone_spec`; the default asks for nothing."""
        return {}

    # ------------------------------------------------------------------------------------------ data
    def decoded_bytes(self, spec, files) -> int:
        """What `files` cost in memory once read: 4 bytes per float32 value by default."""
        per_example = 1
        for size in spec.shape:
            per_example *= int(size or 1)
        return 4 * per_example * len(files)

    def load(self, spec, files, *, batch_size: int = 64):
        """`files` read for a model taking `spec`, in order, as one numpy array."""
        raise NotImplementedError

    def reader(self, spec):
        """`(read, signature)`: `read(path)` a graph function giving one file's input as `load` gives it, of
        type `signature` (a tf.TensorSpec). The default runs `load` on the one file through
        `tf.numpy_function`."""
        import numpy as np
        import tensorflow as tf

        signature = tf.TensorSpec(tuple(spec.shape), tf.float32)

        def read_one(path):
            return np.asarray(self.load(spec, [os.fsdecode(path)])[0], "float32")

        def read(path):
            value = tf.numpy_function(read_one, [path], tf.float32, stateful=False)
            value.set_shape(signature.shape)
            return value

        return read, signature

    def augmentation(self):
        """`augment(batch, key) -> batch`, the one stateless augmentation of training batches.

        Raises:
            UsageError: the modality has none (the default).
        """
        raise UsageError(f"--augment has no {self.noun} augmentation to apply: drop --augment")

    def batch_mixing(self, kind: str, alpha: float):
        """`mix(inputs, targets, key) -> (inputs, targets)`, the `kind` ("mixup" or "cutmix") of blending
        training batches with concentration `alpha`: `targets` are (batch, classes) rows of class weights and
        `key` a stateless seed (see `kerastl.train.mixing`).

        Raises:
            UsageError: the modality has no such mixing (the default: blending inputs is defined for images).
        """
        raise UsageError(f"--{kind} blends images, not {self.plural or self.name}: drop --{kind} for {self.name} data")

    def classical_features(self, spec, train_files, other_files):
        """`(train_x, other_x)`: the classical baseline's input features for a logistic regression, of
        `train_files` and of `other_files`, fitted on the training files only (standardisation, a TF-IDF
        vocabulary). Dense arrays or scipy sparse matrices. Only called when `classical_baseline` is set."""
        raise NotImplementedError(f"the {self.name} modality has no classical baseline")

    def example_files(self, files) -> list:
        """`files` as the pipeline's paths (strings)."""
        return [str(f) for f in files]

    # ------------------------------------------------------------------------------------------ hub
    def hub_claims(self, signature, declared: str | None) -> bool:
        """Whether a TF-Hub module whose first input is `signature` (a tf.TensorSpec, or None when unknown)
        takes this modality; `declared` is the spec's `#modality=` fragment.

        Raises:
            UsageError: the input is ambiguous without a declaration.
        """
        return False

    def hub_backbone(self, spec: str, hub, *, image_size=None):
        """The `Backbone` record of a TF-Hub module (a `HubLayer`) of this modality.

        Raises:
            UsageError: the modality has no hub wrapping (the default).
        """
        raise UsageError(f"{spec}: kerastl wraps no TF-Hub module of {self.noun} input")

    # ------------------------------------------------------------------------------------------ export
    def serving_signatures(self, model) -> list:
        """The SavedModel's signatures as `[(name, tf.TensorSpec)]`; the last is the one verification calls."""
        import tensorflow as tf

        return [("serving_default", tf.TensorSpec((None, *model.input.shape[1:]), model.input.dtype,
                                                  name=self.plural or self.name))]

    def check_tflite(self, model) -> None:
        """Raises KerastlError when `model` has no TFLite form, before any work."""

    def tflite_model(self, model):
        """What the TFLite converter converts: `(keras_model, input tf.TensorSpec of batch 1)`."""
        import tensorflow as tf

        return model, tf.TensorSpec((1, *model.input.shape[1:]), tf.float32, name=self.name)

    def tflite_inputs(self, model, inputs):
        """`inputs` as Keras takes them → as the TFLite file takes them (None: the file has no such form)."""
        import numpy as np

        return np.asarray(inputs, dtype="float32")

    def check_quantization(self, quantize: str) -> None:
        """Raises UsageError for a quantization this modality does not allow (default: not in
        `quantizations`)."""
        if quantize not in self.quantizations:
            raise UsageError(f"--quantize {quantize} is not offered for {self.noun} models; use one of "
                             f"{', '.join(self.quantizations)}")

    def tflite_packages(self, quantize: str) -> list:
        """The optional modules a TFLite export quantized as `quantize` imports beyond the interpreter."""
        return []

    def float_layers(self, model, quantize: str) -> list:
        """Names of layers that quantization must leave float32 (the audio front end)."""
        return []

    def calibration(self, samples, quantize: str) -> dict:
        """For full-integer quantization: the converter options beyond the representative data (e.g.
        uint8 input and output), adjusting `samples` in place if the input range must be pinned."""
        return {}

    def tflite_metadata(self, blob: bytes, model, labels, *, quantize: str) -> bytes:
        """The TFLite file with the metadata of its MediaPipe task; the default has none and returns `blob`."""
        return blob

    def task_figures(self, blob: bytes, model, inputs, *, reference, y_true) -> dict | None:
        """What the TFLite file `blob` gives in its MediaPipe task on `inputs` (raw examples, as Keras takes them),
        beside Keras' `reference` probabilities, for the export report (`exports.tflite.mediapipe`); None (the
        default) when not measured."""
        return None

    def tflite_figures(self, spec) -> dict:
        """Extra figures for the export report's TFLite entry."""
        return {}

    companion_files: tuple = ()

    def companion_contents(self, model) -> dict:
        """For each of `companion_files`: `key -> (write, report)`, `write(path)` writing the file and `report`
        what the export report says about it (a dict)."""
        return {}

    def verification_inputs(self, model, spec, files):
        """`(keras_inputs, tflite_inputs)` of labelled `files`, for checking exports."""
        raw = self.load(spec, files)
        return self.export_pair(model, spec, raw)

    def export_pair(self, model, spec, raw):
        """`(keras_inputs, tflite_inputs)` from examples read by `verification_inputs` or made by
        `synthetic_inputs`."""
        return raw, self.tflite_inputs(model, raw)

    def synthetic_inputs(self, model, spec, n: int, *, seed: int = 0):
        """`n` synthetic examples for checking an export without data: standard normal values by default."""
        import numpy as np

        return np.random.default_rng(seed).standard_normal((n, *spec.shape)).astype("float32")

    # ------------------------------------------------------------------------------------------ pretraining
    def pretraining_source(self, config, channels: int, global_batch: int):
        """The pre-training `Source` for `config.source` when it names data of this modality, else None."""
        return

    def pretraining_model(self, config, source, channels: int):
        """`(input_shape, input_record, preprocessing, make_model)` for pre-training on `source`.

        Raises:
            UsageError: the modality has no pre-training (the default).
        """
        raise UsageError(f"kerastl pretrain builds no {self.noun} backbones")

    def __repr__(self):
        return f"<Modality {self.name}>"


_REGISTRY: dict[str, Modality] = {}
_loaded = False


def register(modality: Modality, *, replace: bool = False) -> Modality:
    """Adds `modality` to the registry under `modality.name` and returns it.

    Raises:
        ValueError: no name or extensions, an extension another modality has, or a name taken (unless
            `replace`).
    """
    if not modality.name or not modality.extensions:
        raise ValueError(f"a Modality needs a name and file extensions. Received: {modality!r}")
    if modality.name in _REGISTRY and not replace:
        raise ValueError(f"modality '{modality.name}' is already registered")
    for other in _REGISTRY.values():
        shared = set(other.extensions) & set(modality.extensions)
        if other.name != modality.name and shared:
            raise ValueError(f"extensions {sorted(shared)} already belong to modality '{other.name}'")
    _REGISTRY[modality.name] = modality
    return modality


def unregister(name: str) -> None:
    """Removes a registered modality (tests register and remove their own)."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def all_modalities() -> list:
    """The registered modalities, fallbacks last."""
    _load_builtins()
    return sorted(_REGISTRY.values(), key=lambda m: m.fallback)


def names() -> tuple:
    """The registered modality names, in registration order."""
    _load_builtins()
    return tuple(_REGISTRY)


def listed(words) -> str:
    """`a, b or c`."""
    words = list(words)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def get(name: str) -> Modality:
    """The modality registered as `name`.

    Raises:
        KerastlError: no such modality (the line names the registered ones).
    """
    _load_builtins()
    if name not in _REGISTRY:
        raise KerastlError(f"unknown modality '{name}'; kerastl knows {', '.join(names())}")
    return _REGISTRY[name]


def find(name) -> Modality | None:
    """The modality registered as `name`, or None."""
    _load_builtins()
    return _REGISTRY.get(name)


def of_path(path) -> Modality | None:
    """The modality whose extensions include `path`'s, or None."""
    suffix = os.path.splitext(str(path))[1].lower()
    return next((m for m in all_modalities() if suffix in m.extensions), None)


def of_model(model):
    """The `InputSpec` of a Keras model, from the markers it carries (`Modality.claims`), then, for a model
    with none, the fallback modalities' `claims_unmarked`.

    Raises:
        KerastlError: more than one input, or an input no modality claims (one line naming its shape and
            dtype); a modality's own error for an input its marker contradicts.
    """
    if len(model.inputs) != 1:
        raise KerastlError(f"the model has {len(model.inputs)} inputs; kerastl reads files into models with one")
    for modality in all_modalities():
        spec = modality.claims(model)
        if spec is not None:
            return spec
    for modality in all_modalities():
        spec = modality.claims_unmarked(model)
        if spec is not None:
            return spec
    shape = tuple(None if d is None else int(d) for d in model.input.shape[1:])
    forms = [get(name).input_form for name in names()]
    either = forms[0] if len(forms) == 1 else f"{', '.join(forms[:-1])} nor {forms[-1]}"
    raise KerastlError(f"the model takes {model.input.dtype} inputs of shape {shape}: neither {either}, so kerastl "
                       "cannot read files into it")
