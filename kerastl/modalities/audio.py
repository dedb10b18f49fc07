"""Audio: the audio `Modality`. Mono waveforms in [-1, 1] at the model's sample rate in, the log-mel front end
inside the model (`kerastl.inputs.audio`), MediaPipe AudioClassifier metadata on TFLite files; the front end
stays float32 under quantization."""

from __future__ import annotations

from kerastl.core.modality import Modality, register
from kerastl.core.records import InputSpec, UndeclaredInput
from kerastl.errors import UsageError

AUDIO_EXTENSIONS = (".wav",)


def _waveform_shape(model):
    shape = tuple(None if d is None else int(d) for d in model.input.shape[1:])
    if len(shape) == 1 and shape[0] is not None and "float" in str(model.input.dtype):
        return shape
    return None


class Audio(Modality):
    name = "audio"
    extensions = AUDIO_EXTENSIONS
    noun = "audio"
    plural = "clips"
    input_form = "mono waveforms of shape (samples,)"
    default_backbone_hint = "hub:<dir>"
    pretrain_hint = "kerastl pretrain --data synthetic:pseudowords --arch smallnet-s --out saved_models/NAME"
    classical_baseline = "log-spectrum statistics + logistic regression"

    def decode_error(self, path):
        from kerastl.inputs.audio import decode_error, wav_header_error

        return wav_header_error(path) or decode_error(path)

    def claims(self, model):
        from kerastl.inputs.audio import sample_rate_of

        shape = _waveform_shape(model)
        rate = None if shape is None else sample_rate_of(model)
        return None if rate is None else InputSpec(self.name, shape, rate)

    def claims_unmarked(self, model):
        shape = _waveform_shape(model)
        if shape is None:
            return
        raise UndeclaredInput(
            f"the model takes {model.input.dtype} inputs of shape {shape} and nothing in it says they are waveforms "
            "(they may be feature vectors; kerastl does not guess from a shape): to use it as audio, put a "
            "kerastl.inputs.audio.Waveform(sample_rate) layer first, or give it a manifest with \"modality\": "
            "\"audio\" (a hub: module: append #modality=audio to the spec)"
        )

    def mark(self, model, manifest):
        """A manifest's audio backbone whose model has no sample-rate layer gets an `audio.Waveform` marker
        first, so that the model itself says what it takes."""
        from kerastl.inputs.audio import DEFAULT_SAMPLE_RATE, Waveform, sample_rate_of

        if sample_rate_of(model) is not None or len(model.input.shape) != 2:
            return model
        import keras

        rate = int(manifest.get("input", {}).get("sample_rate") or DEFAULT_SAMPLE_RATE)
        inputs = keras.Input(model.input.shape[1:], name="waveforms")
        return keras.Model(inputs, model(Waveform(rate, name="waveform")(inputs)), name=model.name)

    def preprocessing_record(self, model):
        from kerastl.inputs.audio import preprocessing_record

        return preprocessing_record(model)

    # ---------------------------------------------------------------------------------------------- data
    def load(self, spec, files, *, batch_size=64):
        from kerastl.inputs.audio import load_waveforms

        return load_waveforms(files, sample_rate=spec.sample_rate, num_samples=spec.shape[0])

    def classical_features(self, spec, train_files, other_files):
        from kerastl.inputs.audio import band_statistics

        return tuple(band_statistics(self.load(spec, files), sample_rate=spec.sample_rate)
                     for files in (train_files, other_files))

    def reader(self, spec):
        from kerastl.inputs.audio import wav_reader

        return wav_reader(spec.sample_rate, spec.shape[0])

    def augmentation(self):
        from kerastl.inputs.audio import augment_waveforms

        return augment_waveforms

    # ---------------------------------------------------------------------------------------------- hub
    def hub_claims(self, signature, declared):
        """A float input of rank 1 or 2 (a batch of waveforms, or one waveform as YAMNet takes) is audio only
        when the spec declares it: it may as well be feature vectors.

        Raises:
            UsageError: such an input without a declaration.
        """
        if signature is None or signature.shape.rank not in (1, 2) or not signature.dtype.is_floating:
            return False
        if declared is None:
            raise UsageError(
                f"takes {signature.dtype.name} inputs of shape {tuple(signature.shape)}, which may be waveforms or "
                "feature vectors; kerastl does not guess from a shape: if it takes mono waveforms (16 kHz), "
                f"append #modality={self.name} to the spec"
            )
        return declared == self.name

    def hub_backbone(self, spec, hub, *, image_size=None):
        """A module taking batched waveforms (batch, samples), or one taking a single waveform (samples,) and
        returning frame-wise outputs, as YAMNet does (run per waveform by `PerWaveform`, its embeddings averaged
        over frames). The module's own front end runs inside it; a `Waveform` layer first records the sample
        rate (16 kHz, the TF-Hub audio convention), so later loads of the model need no declaration.

        Raises:
            KerastlError: the module's outputs are not features per waveform or per frame.
        """
        import keras

        from kerastl.backbones.models import graph_backbone
        from kerastl.core.graph import first_input_spec
        from kerastl.inputs.audio import (
            DEFAULT_CLIP_SECONDS,
            DEFAULT_SAMPLE_RATE,
            PerWaveform,
            Waveform,
        )

        num_samples = round(DEFAULT_SAMPLE_RATE * DEFAULT_CLIP_SECONDS)
        inputs = keras.Input((num_samples,), name="waveforms")
        marker = Waveform(DEFAULT_SAMPLE_RATE, name="waveform")
        module_input = first_input_spec(hub._fn) if hub._input_names is None else None
        if module_input is not None and module_input.shape.rank == 1:
            features = PerWaveform(hub, name="per_waveform")(marker(inputs))
        else:
            features = hub(marker(inputs))
        return graph_backbone(spec, self.name, inputs, features, preprocessing=marker.to_record(),
                              weights="pretrained", name="hub_audio_backbone", ranks=(2, 3))

    # ---------------------------------------------------------------------------------------------- export
    def serving_signatures(self, model):
        from kerastl.inputs.audio import serving_signature

        return [("serving_default", serving_signature(model))]

    def tflite_model(self, model):
        from kerastl.inputs.audio import tflite_signature

        return model, tflite_signature(model)

    def check_quantization(self, quantize):
        """Full integer quantizes the log-mel front end too: the waveform and the power spectrum become 8-bit,
        and everything quieter than 1/256 of a frame's loudest part is lost. The shipped audio backbone
        fine-tuned on ten spoken keywords: 100% held-out accuracy in float32, 25% in int8
        (tools/bench_export_audio_text.py)."""
        if quantize not in self.quantizations:
            raise UsageError(f"--quantize {quantize} would make the audio front end 8-bit (waveform and spectrum), "
                             "which destroys accuracy; use --quantize dynamic (int8 network weights, float front "
                             "end) or float16")

    def tflite_packages(self, quantize):
        return ["flatbuffers", "mediapipe"] + (["litert_quantizer"] if quantize == "dynamic" else [])

    def float_layers(self, model, quantize):
        from kerastl.export.quantize import front_end_layers

        return front_end_layers(model) if quantize == "dynamic" else []

    def tflite_metadata(self, blob, model, labels, *, quantize):
        from kerastl.export import metadata
        from kerastl.inputs.audio import sample_rate_of

        kind = "float32" if quantize == "none" else quantize
        return metadata.add_audio_classifier_metadata(
            blob, labels=list(labels), sample_rate=int(sample_rate_of(model)), name=f"{model.name} ({kind})",
            description=f"Audio classifier exported by kerastl: {len(labels)} classes, raw mono waveforms in.")

    def synthetic_inputs(self, model, spec, n, *, seed=0):
        """Clips of a few random tones in noise at a random level."""
        import numpy as np

        rng = np.random.default_rng(seed)
        samples = spec.shape[0]
        t = np.arange(samples) / spec.sample_rate
        clips = []
        for _ in range(n):
            tones = sum(np.sin(2 * np.pi * rng.uniform(80, 4000) * t + rng.uniform(0, 2 * np.pi))
                        for _ in range(rng.integers(1, 4)))
            clip = tones / 3 + rng.normal(0, 0.1, samples)
            clips.append(rng.uniform(0.05, 0.9) * clip / np.abs(clip).max())
        return np.stack(clips).astype("float32")

    # ---------------------------------------------------------------------------------------------- pretraining
    def pretraining_source(self, config, channels, global_batch):
        from kerastl.pretraining.other_sources import audio_source

        return audio_source(config, global_batch)

    def pretraining_model(self, config, source, channels):
        from kerastl.pretraining.other_sources import audio_model_factory

        return audio_model_factory(config, source)


AUDIO = register(Audio())
