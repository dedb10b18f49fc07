"""Audio end to end: WAV reading, the log-mel front end (against tf.signal and through TFLite), the synthetic
pseudo-word source, pretrain → finetune (head, full) → evaluate → predict → SavedModel and TFLite round
trips, TF-Hub waveform modules, and the same-input-type errors as one line.

Speech is real where espeak-ng is installed (`apt-get install espeak-ng`): spoken words by several voices,
rates and pitches. Elsewhere the word folders are rendered by the synthetic pseudo-word source, so the suite
runs on any machine.
"""

import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.io import wavfile

from kerastl.cli import main
from kerastl.errors import KerastlError

from .conftest import finetune_cli, finetune_quick, one_line_error

RATE = 16000
CLIP = 0.5  # seconds: short clips keep every model here tiny
SAMPLES = int(RATE * CLIP)
WORDS = ("yes", "no", "stop")
VOICES = [("en", 175, 50), ("en+f3", 150, 70), ("en-us+m3", 200, 35), ("en+f2", 130, 60), ("en+m1", 220, 45),
          ("en-gb-x-rp", 160, 55), ("en+f4", 185, 80), ("en+m7", 140, 40)]


def speak_folder(root, words=WORDS, per_word=8):
    """A class-per-folder WAV set: `per_word` clips of each word, by espeak-ng when installed (22.05 kHz, as
    espeak writes them), else by the synthetic pseudo-word source (one class per word)."""
    if shutil.which("espeak-ng"):
        for word in words:
            (root / word).mkdir(parents=True, exist_ok=True)
            for i in range(per_word):
                voice, speed, pitch = VOICES[i % len(VOICES)]
                subprocess.run(["espeak-ng", "-w", str(root / word / f"{i:02d}.wav"), "-v", voice, "-s",
                                str(speed), "-p", str(pitch), word], check=True, capture_output=True)
        return root
    from kerastl.pretraining.synthetic_audio import synthetic_audio_dataset

    counts = {w: 0 for w in words}
    dataset = synthetic_audio_dataset("pseudowords", num_classes=len(words), num_samples=SAMPLES, seed=7)
    for wave, label in dataset:
        word = words[int(label)]
        if counts[word] < per_word:
            (root / word).mkdir(parents=True, exist_ok=True)
            wavfile.write(root / word / f"{counts[word]:02d}.wav", RATE, (wave.numpy() * 32767).astype("int16"))
            counts[word] += 1
        if min(counts.values()) >= per_word:
            return root


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    return speak_folder(tmp_path_factory.mktemp("words"))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny audio backbone made by `kerastl pretrain` on the synthetic pseudo-words."""
    out = tmp_path_factory.mktemp("saved") / "pseudowords-tiny"
    result = CliRunner().invoke(main, [
        "pretrain", "--data", "synthetic:pseudowords", "--arch", "smallnet-s", "--classes", "6", "--epochs", "1",
        "--steps-per-epoch", "3", "--batch-size", "16", "--validation-steps", "1", "--precision", "float32",
        "--no-xla", "--clip-seconds", str(CLIP), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


# ------------------------------------------------------------------------------------------------ pieces


def test_front_end_matches_tf_signal_stft():
    import tensorflow as tf

    from kerastl.inputs.audio import LogMelSpectrogram

    layer = LogMelSpectrogram(mean=1.0, std=2.0)
    x = np.random.default_rng(0).normal(0, 0.2, (2, 4000)).astype("float32")
    stft = tf.signal.stft(x, 400, 320, 400, window_fn=tf.signal.hann_window, pad_end=False)
    power = tf.abs(stft) ** 2
    expected = (np.log(power.numpy() @ layer._filters + layer.log_offset) - 1.0) / 2.0
    actual = np.asarray(layer(x))
    assert actual.shape == (2, 1 + (4000 - 400) // 320, 40, 1)
    np.testing.assert_allclose(actual[..., 0], expected, atol=2e-4)
    assert not layer.weights  # constants rebuilt from the config, nothing to train or freeze


def test_mel_filters_have_tensorflows_edges():
    import tensorflow as tf

    from kerastl.inputs.audio import mel_filter_bank

    ours = mel_filter_bank(201, RATE, 40, 60.0, 7600.0)
    theirs = tf.signal.linear_to_mel_weight_matrix(40, 201, RATE, 60.0, 7600.0).numpy()
    # Same mel-spaced edges; the triangles are linear in Hz here and in mel there.
    np.testing.assert_allclose(ours, theirs, atol=0.01)
    np.testing.assert_array_equal(ours > 0, theirs > 0)


def test_read_wav_mixes_down_resamples_and_fits_length(tmp_path):
    from kerastl.inputs.audio import read_wav

    t = np.arange(8000) / 8000.0
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([tone, -tone * 0 + tone], axis=1)
    wavfile.write(tmp_path / "stereo8k.wav", 8000, (stereo * 32767).astype("int16"))
    wave = read_wav(tmp_path / "stereo8k.wav", RATE, RATE)
    assert wave.shape == (RATE,) and wave.dtype == np.float32
    assert abs(np.abs(wave).max() - 0.5) < 0.02  # mixed down (the mean of equal channels), resampled 2x
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * RATE / len(wave) - 440) < 2
    wavfile.write(tmp_path / "float.wav", RATE, np.full(100, 0.25, "float32"))
    padded = read_wav(tmp_path / "float.wav", RATE, 1000)
    assert padded.shape == (1000,) and padded[500] == pytest.approx(0.25) and padded[0] == 0.0
    wavfile.write(tmp_path / "u8.wav", RATE, np.full(3000, 192, "uint8"))
    cropped = read_wav(tmp_path / "u8.wav", RATE, 1000)
    assert cropped.shape == (1000,) and cropped.mean() == pytest.approx(0.5)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEnot really")
    with pytest.raises(KerastlError, match="cannot read .*bad.wav as WAV"):
        read_wav(tmp_path / "bad.wav", RATE, 1000)


def test_pseudowords_are_deterministic_and_share_classes_across_splits():
    from kerastl.pretraining.synthetic_audio import synthetic_audio_dataset

    def first(split, seed=0, n=4):
        data = synthetic_audio_dataset("pseudowords", num_classes=5, num_samples=SAMPLES, seed=seed, split=split)
        return [(w.numpy(), int(y)) for w, y in data.take(n)]

    a, b = first("train"), first("train")
    for (wa, ya), (wb, yb) in zip(a, b):
        assert ya == yb and np.array_equal(wa, wb)
    assert all(w.shape == (SAMPLES,) and np.abs(w).max() <= 1.0 and np.isfinite(w).all() for w, _ in a)
    assert not np.array_equal(first("validation")[0][0], a[0][0])
    assert not np.array_equal(first("train", seed=1)[0][0], a[0][0])


def test_tfds_audio_source_reads_prepared_data(tmp_path, monkeypatch):
    """A prepared TFDS audio set (as speech_commands is, once `tfds build`) is an audio pre-training source."""
    import tensorflow_datasets as tfds

    from kerastl.pretraining.run import PretrainConfig, pretrain

    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))

    class KerastlTinyCommands(tfds.core.GeneratorBasedBuilder):
        """Two 'commands': a low and a high tone of varying length, int16 at 16 kHz."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "audio": tfds.features.Audio(shape=(None,), dtype=np.int16, sample_rate=RATE),
                "label": tfds.features.ClassLabel(names=["low", "high"])}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(24), "validation": self._generate_examples(6)}

        def _generate_examples(self, n):
            for i in range(n):
                t = np.arange(4000 + 500 * (i % 5)) / RATE
                tone = 0.3 * np.sin(2 * np.pi * (300 if i % 2 == 0 else 2000) * t)
                yield i, {"audio": (tone * 32767).astype(np.int16), "label": i % 2}

    KerastlTinyCommands(data_dir=str(tmp_path / "tfds")).download_and_prepare()
    out = tmp_path / "tfds-audio"
    pretrain(PretrainConfig(source="tfds:kerastl_tiny_commands", arch="smallnet-s", epochs=1, steps_per_epoch=2,
                            batch_size=8, validation_steps=1, precision="float32", jit_compile=False,
                            clip_seconds=CLIP), out, verbose=0, command="test")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["modality"] == "audio" and manifest["pretraining"]["classes"] == 2
    assert manifest["input"]["shape"] == [SAMPLES]


# ------------------------------------------------------------------------------------------- end to end


def test_pretrained_audio_backbone_manifest(pretrained):
    from kerastl.backbones import load_backbone

    manifest = json.loads((pretrained / "manifest.json").read_text())
    assert manifest["modality"] == "audio"
    assert manifest["input"] == {"shape": [SAMPLES], "dtype": "float32", "range": [-1, 1], "layout": "waveform",
                                 "channels": "mono", "sample_rate": RATE, "clip_seconds": CLIP}
    assert manifest["preprocessing"]["mode"] == "log_mel" and manifest["preprocessing"]["std"] > 0
    assert manifest["pretraining"]["source"] == "synthetic:pseudowords"
    backbone = load_backbone(str(pretrained))
    assert backbone.modality == "audio" and backbone.input_shape == (SAMPLES,)
    assert backbone.model.get_layer("log_mel").mean == manifest["preprocessing"]["mean"]


@pytest.mark.parametrize("strategy", ["head", "full"])
def test_finetune_evaluate_predict_on_spoken_words(strategy, pretrained, words, tmp_path):
    out = tmp_path / strategy
    runner = CliRunner()
    result = runner.invoke(main, ["finetune", "--data", str(words), "--backbone", str(pretrained), "--strategy",
                                  strategy, "--epochs", "2", "--head-epochs", "1", "--batch-size", "8",
                                  "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == strategy and metrics["backbone"]["modality"] == "audio"
    assert (out / "labels.txt").read_text().split() == sorted(WORDS)
    phases = [row["phase"] for row in metrics["history"]]
    assert phases == (["head", "head"] if strategy == "head" else ["head", "full", "full"])
    if strategy == "head":
        assert "feature_cache_seconds" in metrics["timing"]  # Option 1 trained on cached features
    result = runner.invoke(main, ["evaluate", str(out), "--data", str(words), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["n"] == 3 * 8 and set(report["per_class"]) == set(WORDS)
    clip = min((words / "yes").iterdir())
    result = runner.invoke(main, ["predict", str(out), str(clip)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    path, label, probability = result.output.strip().split("\t")
    assert path == str(clip) and label in WORDS and 0 <= float(probability) <= 1


@pytest.fixture(scope="module")
def finetuned(pretrained, words, tmp_path_factory):
    return finetune_cli(words, pretrained, tmp_path_factory.mktemp("finetuned") / "run", "--strategy", "head",
                        "--epochs", "2", "--batch-size", "8")


def test_export_all_takes_raw_waveforms(finetuned, words, tmp_path):
    """`kerastl export --format all`: the SavedModel's serving_default takes float32 waveforms (two batch sizes)
    and returns probabilities, class_index and class_name; the TFLite file is the whole model, front end
    included, taking one waveform, with MediaPipe AudioClassifier metadata; both agree with Keras on the
    held-out clips, and the report says so."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from kerastl.data import input_spec, load_inputs
    from kerastl.export import metadata as tflite_metadata
    from kerastl.train.evaluate import load_classifier

    out = tmp_path / "exported"
    result = CliRunner().invoke(main, ["export", str(finetuned), "--format", "all", "--data", str(words),
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "held-out clips" in result.output
    report = json.loads((out / "export_report.json").read_text())
    assert report["modality"] == "audio" and report["sample_rate"] == RATE and report["input_shape"] == [SAMPLES]
    assert report["verified_on"]["held_out"] and report["verified_on"]["n"] >= 3
    for figures in report["exports"].values():
        assert figures["top1_agreement"] == 1.0 and figures["max_abs_diff"] < 1e-4, figures

    model, labels = load_classifier(finetuned)
    files = [p for word in WORDS for p in sorted((words / word).iterdir())[:2]]
    waves = load_inputs(input_spec(model), files)
    reference = model.predict(waves, verbose=0)
    serve = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    for n in (1, len(waves)):
        served = serve(waveforms=tf.constant(waves[:n]))
        np.testing.assert_allclose(served["probabilities"].numpy(), reference[:n], atol=1e-5)
        assert [name.decode() for name in served["class_name"].numpy()] == [
            labels[i] for i in reference[:n].argmax(-1)]

    content = (out / "model.tflite").read_bytes()
    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    (inp,), (outp,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert tuple(inp["shape"]) == (1, SAMPLES) and inp["dtype"] == np.float32
    lite = []
    for wave in waves:
        interpreter.set_tensor(inp["index"], wave[None])
        interpreter.invoke()
        lite.append(interpreter.get_tensor(outp["index"])[0])
    np.testing.assert_allclose(np.stack(lite), reference, atol=1e-4)
    assert tflite_metadata.read_associated_files(content)["labels.txt"].decode().split() == labels

    # The phone's runtime: MediaPipe Tasks' AudioClassifier reads the sample rate and the labels from the
    # metadata and agrees with Keras on the clips kerastl read (resampled to the model's rate).
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python import audio as mp_audio
    from mediapipe.tasks.python.components.containers import AudioData

    options = mp_audio.AudioClassifierOptions(base_options=BaseOptions(model_asset_buffer=content),
                                              running_mode=mp_audio.RunningMode.AUDIO_CLIPS, max_results=1)
    with mp_audio.AudioClassifier.create_from_options(options) as classifier:
        for wave, expected in zip(waves, reference):
            top = classifier.classify(AudioData.create_from_array(wave, RATE))[0].classifications[0].categories[0]
            assert top.category_name == labels[expected.argmax()]
            assert abs(top.score - expected.max()) < 1e-4


@pytest.mark.parametrize("quantize,max_diff", [("float16", 0.01), ("dynamic", 0.15)])
def test_export_quantized_tflite(finetuned, words, tmp_path, quantize, max_diff):
    """Quantized audio files keep a float32 waveform input and a float front end (TFLite's own dynamic-range
    quantization of the front end costs this tiny model 0.44 in probability)."""
    out = tmp_path / "model.tflite"
    result = CliRunner().invoke(main, ["export", str(finetuned), "--format", "tflite", "--quantize", quantize,
                                       "--data", str(words), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    figures = json.loads(out.with_name("model.report.json").read_text())["exports"]["tflite"]
    assert figures["quantize"] == quantize and figures["input"]["dtype"] == "float32"
    assert figures["input"]["shape"] == [1, SAMPLES] and figures["max_abs_diff"] < max_diff, figures


@pytest.mark.parametrize("quantize", ["int8", "int8-per-tensor"])
def test_export_refuses_full_integer_audio(finetuned, words, tmp_path, quantize):
    result = CliRunner().invoke(main, ["export", str(finetuned), "--format", "all", "--quantize", quantize,
                                       "--data", str(words), "--out", str(tmp_path / "out")])
    one_line_error(result, 2, f"--quantize {quantize} would make the audio front end 8-bit", "dynamic")
    assert not (tmp_path / "out").exists()


def test_export_without_data_checks_synthetic_clips(finetuned, tmp_path):
    result = CliRunner().invoke(main, ["export", str(finetuned), "--format", "tflite", "--out",
                                       str(tmp_path / "m.tflite")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "32 synthetic clips" in result.output
    report = json.loads((tmp_path / "m.report.json").read_text())
    assert report["exports"]["tflite"]["top1_agreement"] == 1.0


def test_export_refuses_data_of_another_type(finetuned, tmp_path):
    (tmp_path / "docs" / "a").mkdir(parents=True)
    (tmp_path / "docs" / "b").mkdir()
    (tmp_path / "docs" / "a" / "1.txt").write_text("some words")
    (tmp_path / "docs" / "b" / "1.txt").write_text("other words")
    result = CliRunner().invoke(main, ["export", str(finetuned), "--format", "saved_model", "--data",
                                       str(tmp_path / "docs"), "--out", str(tmp_path / "sm")])
    one_line_error(result, 1, "holds text files but the model takes audio input")
    assert not (tmp_path / "sm").exists()


# ---------------------------------------------------------------------------------------------- TF-Hub


@pytest.fixture(scope="module")
def hub_waveform_module(tmp_path_factory):
    """A TF-Hub-style audio embedding: a tf_keras model from (batch, samples) waveforms of any length to a
    vector, saved with tf.saved_model.save as hub publishers did."""
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((None,))
    x = tf_keras.layers.Reshape((-1, 1))(inputs)
    x = tf_keras.layers.Conv1D(8, 64, strides=32, activation="relu")(x)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.GlobalAveragePooling1D()(x)
    path = tmp_path_factory.mktemp("hub") / "waveform_embedding"
    tf.saved_model.save(tf_keras.Model(inputs, x), str(path))
    return path


def test_hub_waveform_module_is_an_audio_backbone(hub_waveform_module, words, tmp_path):
    from kerastl.backbones import load_backbone
    from kerastl.train.finetune import FinetuneConfig, finetune

    backbone = load_backbone(f"hub:{hub_waveform_module}#modality=audio")
    assert backbone.modality == "audio" and backbone.input_shape == (RATE,) and backbone.feature_width == 8
    assert backbone.preprocessing == {"mode": "waveform", "sample_rate": RATE}
    result = finetune(words, backbone, out=tmp_path / "run",
                      config=FinetuneConfig(strategy="head", epochs=1, batch_size=8), verbose=0)
    assert result.metrics["backbone"]["modality"] == "audio" and result.metrics["n"] > 0
    # Exported like kerastl's own audio models (--trust: the .keras file embeds the module's SavedModel).
    out = tmp_path / "exported"
    cli = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "--format", "all", "--data", str(words),
                                    "--trust", "--out", str(out)], catch_exceptions=False)
    assert cli.exit_code == 0, cli.output
    report = json.loads((out / "export_report.json").read_text())
    assert report["sample_rate"] == RATE and set(report["exports"]) == {"saved_model", "tflite"}
    for figures in report["exports"].values():
        assert figures["top1_agreement"] == 1.0 and figures["max_abs_diff"] < 1e-4, figures


@pytest.fixture(scope="module")
def hub_yamnet_style_module(tmp_path_factory):
    """A YAMNet-style module: ONE waveform (samples,) in, frame-wise (scores, embeddings, spectrogram) out."""
    import tensorflow as tf

    class FrameModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.embed = tf.Variable(tf.random.stateless_normal((400, 8), seed=(1, 2)) * 0.05)
            self.classify = tf.Variable(tf.random.stateless_normal((8, 3), seed=(3, 4)))
            self.project = tf.Variable(tf.random.stateless_normal((400, 4), seed=(5, 6)))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, waveform):
            frames = tf.signal.frame(waveform, 400, 160)
            embeddings = tf.nn.relu(tf.matmul(frames, self.embed))
            return tf.matmul(embeddings, self.classify), embeddings, tf.matmul(frames, self.project)

    path = tmp_path_factory.mktemp("hub") / "yamnet_style"
    tf.saved_model.save(FrameModel(), str(path))
    return path


def test_hub_yamnet_style_module_runs_per_waveform(hub_yamnet_style_module, words, tmp_path):
    from kerastl.backbones import load_backbone
    from kerastl.train.evaluate import evaluate, load_classifier
    from kerastl.train.finetune import FinetuneConfig, finetune

    backbone = load_backbone(f"hub:{hub_yamnet_style_module}#modality=audio")
    # The widest frame-wise output (the embeddings, 8 wide) averaged over frames.
    assert backbone.modality == "audio" and backbone.feature_width == 8
    result = finetune(words, backbone, out=tmp_path / "run",
                      config=FinetuneConfig(strategy="full", epochs=1, head_epochs=1, batch_size=8), verbose=0)
    with pytest.raises(KerastlError, match="--trust"):
        load_classifier(tmp_path / "run")  # the .keras file embeds the module's SavedModel
    model, _ = load_classifier(tmp_path / "run", trust=True)
    waves = np.random.default_rng(0).uniform(-0.5, 0.5, (3, RATE)).astype("float32")
    np.testing.assert_allclose(model.predict(waves, verbose=0), result.model.predict(waves, verbose=0), atol=1e-5)
    assert evaluate(tmp_path / "run", words, trust=True)["n"] == 3 * 8


# --------------------------------------------------------------------------------- same input type rule


@pytest.fixture(scope="module")
def tiny_audio_backbone(tmp_path_factory):
    from kerastl.backbones.archs import build_audio_backbone

    path = tmp_path_factory.mktemp("audio-backbone") / "audio.keras"
    build_audio_backbone("smallnet-s", sample_rate=RATE, num_samples=SAMPLES).save(path)
    return path


def test_image_backbone_on_wav_folder(words, tiny_backbone_path, saved_models, tmp_path):
    line = one_line_error(finetune_quick(words, tiny_backbone_path, tmp_path / "out"), 1, "holds audio files",
                           "an image backbone", "saved_models/pseudowords-x")
    assert "will not transfer" in line and not (tmp_path / "out").exists()


def test_audio_backbone_on_image_folder(image_folder, tiny_audio_backbone, saved_models, tmp_path):
    one_line_error(finetune_quick(image_folder, tiny_audio_backbone, tmp_path / "out"), 1, "holds image files",
                    "an audio backbone", "saved_models/glyphs-x")
    assert not (tmp_path / "out").exists()


def test_without_a_backbone_of_the_right_type_the_error_says_how_to_pretrain_one(
        words, tiny_backbone_path, tmp_path, monkeypatch):
    monkeypatch.setenv("KERASTL_SAVED_MODELS", str(tmp_path / "empty"))
    one_line_error(finetune_quick(words, tiny_backbone_path, tmp_path / "out"), 1, "holds audio files",
                    "kerastl pretrain --data synthetic:pseudowords")


def test_rank_mismatch_is_one_line(words, saved_models, tmp_path):
    """A backbone taking spectrograms (frames, mels) is neither an image nor a waveform backbone."""
    import keras

    inputs = keras.Input((49, 40))
    path = tmp_path / "spectrogram.keras"
    keras.Model(inputs, keras.layers.Conv1D(4, 3)(inputs)).save(path)
    one_line_error(finetune_quick(words, path, tmp_path / "out"), 1, "shape (49, 40)", "mono waveforms",
                    "saved_models/pseudowords-x")


def test_audio_model_evaluated_on_images_is_one_line(pretrained, words, image_folder, tmp_path):
    from kerastl.train.finetune import FinetuneConfig, finetune

    finetune(words, str(pretrained), out=tmp_path / "run", config=FinetuneConfig(strategy="head", epochs=1),
             verbose=0)
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "run"), "--data", str(image_folder)],
                                catch_exceptions=False)
    one_line_error(result, 1, "holds image files but the model takes audio input")


def test_backbones_listing_shows_audio(pretrained, monkeypatch):
    monkeypatch.setenv("KERASTL_SAVED_MODELS", str(pretrained.parent))
    result = CliRunner().invoke(main, ["backbones"], catch_exceptions=False)
    row = next(line for line in result.output.splitlines() if "pseudowords-tiny" in line)
    assert "audio" in row and f"{SAMPLES} @ {RATE} Hz" in row and "synthetic:pseudowords" in row
