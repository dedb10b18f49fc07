"""Data at scale: above `kerastl.data.pipelines.MEMORY_CACHE_BYTES` every modality streams from its files, the
shuffle buffer holding paths (or indices), never decoded inputs, and the training batches are those of the
in-memory path bit for bit, augmentation included. The limit is lowered here to force the streaming path on
tiny sets."""

import numpy as np
import pytest
from scipy.io import wavfile

from kerastl import data
from kerastl.core.records import InputSpec
from kerastl.data import pipelines
from kerastl.train.resume import epoch_batches

IMAGE = InputSpec(modality="image", shape=(16, 16, 3))
AUDIO = InputSpec(modality="audio", shape=(800,), sample_rate=8000)
TEXT = InputSpec(modality="text", shape=())


@pytest.fixture
def streaming(monkeypatch):
    """Every set is too large for memory; reading a whole set into memory fails the test."""
    monkeypatch.setattr(pipelines, "MEMORY_CACHE_BYTES", 0)

    def refuse(*args, **kwargs):
        raise AssertionError("a set above MEMORY_CACHE_BYTES was read into memory whole")

    return refuse


def wav_folder(root, per_class=5, classes=("hum", "hiss")):
    rng = np.random.default_rng(0)
    files = []
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            t = np.arange(rng.integers(600, 1000)) / 8000  # lengths around the clip: cropped and padded
            wave = np.sin(2 * np.pi * (200 + 300 * label) * t) * 0.5 + rng.normal(0, 0.05, t.shape)
            path = root / name / f"{i}.wav"
            wavfile.write(path, 8000, (wave * 32767).astype("int16"))
            files.append((path, label))
    return [f for f, _ in files], [y for _, y in files]


def text_files(root):
    texts = ["\ufeffFirst text, with a BOM.", "Windows\r\nline endings\r\n", "set_trainable « x »", "plain"]
    files = []
    for i, content in enumerate(texts):
        path = root / f"{i}.txt"
        path.write_bytes(content.encode("utf-8"))
        files.append(path)
    return files, [i % 2 for i in range(len(files))]


def image_files(image_folder):
    scan = data.scan_folder(image_folder)
    files = [p for paths in scan.files for p in paths][::3]
    labels = [i for i, paths in enumerate(scan.files) for _ in paths][::3]
    return files, labels


def epochs_of(training, *, seed=3, first=0, epochs=3, batch_size=4):
    inputs, labels, transform = training
    stream = epoch_batches(inputs, labels, batch_size=batch_size, seed=seed, first_epoch=first, epochs=epochs,
                           augment=transform)
    return [(x.numpy(), y.numpy()) for x, y in stream]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)


@pytest.mark.parametrize("augment", [False, True])
def test_streamed_image_batches_equal_the_in_memory_ones(image_folder, monkeypatch, augment):
    files, labels = image_files(image_folder)
    in_memory = data.training_examples(IMAGE, files, labels, augment=augment)
    assert in_memory[0].shape == (len(files), 16, 16, 3)
    monkeypatch.setattr(pipelines, "MEMORY_CACHE_BYTES", 0)
    monkeypatch.setattr(pipelines, "load_inputs", lambda *a, **k: pytest.fail("streaming read the set whole"))
    streamed = data.training_examples(IMAGE, files, labels, augment=augment)
    assert streamed[0].dtype == object and streamed[0][0] == str(files[0])  # paths: permuted, then decoded
    assert_same_batches(epochs_of(in_memory), epochs_of(streamed))
    # A resumed run (from epoch 1) streams what the uninterrupted one streamed from epoch 1.
    assert_same_batches(epochs_of(streamed)[-2 * 3:], epochs_of(streamed, first=1))


@pytest.mark.parametrize("augment", [False, True])
def test_streamed_audio_batches_equal_the_in_memory_ones(tmp_path, monkeypatch, augment):
    import kerastl.inputs.audio

    files, labels = wav_folder(tmp_path)
    in_memory = data.training_examples(AUDIO, files, labels, augment=augment)
    monkeypatch.setattr(pipelines, "MEMORY_CACHE_BYTES", 0)
    monkeypatch.setattr(kerastl.inputs.audio, "load_waveforms", lambda *a, **k: pytest.fail("every clip was loaded"))
    streamed = data.training_examples(AUDIO, files, labels, augment=augment)
    assert_same_batches(epochs_of(in_memory), epochs_of(streamed))


def test_streamed_texts_equal_the_in_memory_ones(tmp_path, monkeypatch):
    files, labels = text_files(tmp_path)
    in_memory = data.training_examples(TEXT, files, labels)
    monkeypatch.setattr(pipelines, "MEMORY_CACHE_BYTES", 0)
    streamed = data.training_examples(TEXT, files, labels)
    a, b = epochs_of(in_memory, batch_size=3), epochs_of(streamed, batch_size=3)
    assert [x.tolist() for x, _ in a] == [x.tolist() for x, _ in b]
    assert "First text, with a BOM." in {t.decode() for x, _ in b for t in x}  # BOM dropped, as read_text does


def test_text_size_estimate_is_the_bytes_of_the_texts(tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("word " * 100_000, encoding="utf-8")
    assert data.decoded_bytes(TEXT, [big]) == 500_000  # not 4 bytes per text
    assert data.decoded_bytes(IMAGE, [big, big]) == 2 * 16 * 16 * 3 * 4
    assert data.decoded_bytes(AUDIO, [big]) == 800 * 4


def test_streaming_datasets_shuffle_paths_and_read_no_set_whole(image_folder, tmp_path, monkeypatch, streaming):
    """make_dataset (the validation and plain passes, audio too) streams above the limit: every
    example once per pass, the order shuffled before decoding."""
    import kerastl.inputs.audio

    monkeypatch.setattr(pipelines, "load_inputs", streaming)
    monkeypatch.setattr(kerastl.inputs.audio, "load_waveforms", streaming)
    files, labels = image_files(image_folder)
    reference = data.load_images(files, image_size=(16, 16), channels=3)
    passes = [np.concatenate([x.numpy() for x, _ in data.make_dataset(IMAGE, files, labels, batch_size=4,
                                                                       shuffle=True, seed=1)]) for _ in range(2)]
    key = lambda a: sorted(map(bytes, a))  # the same images, in another order
    assert key(passes[0]) == key(passes[1]) == key(reference)
    assert not np.array_equal(passes[0], reference)

    wavs, wav_labels = wav_folder(tmp_path / "wav")
    waves = [x.numpy() for x, _ in data.make_dataset(AUDIO, wavs, wav_labels, batch_size=4, shuffle=True)]
    assert sum(len(w) for w in waves) == len(wavs)


def test_pretraining_audio_folder_streams(tmp_path, monkeypatch, streaming):
    import types

    import kerastl.inputs.audio
    from kerastl.pretraining.other_sources import _audio_folder

    monkeypatch.setattr(kerastl.inputs.audio, "load_waveforms", streaming)
    wav_folder(tmp_path / "wav", per_class=6)
    scan = data.scan_folder(tmp_path / "wav", "audio")
    config = types.SimpleNamespace(sample_rate=8000, clip_seconds=0.1, seed=0)
    source = _audio_folder(config, scan, "folder", global_batch=4)
    x, y = next(iter(source.train))
    assert x.shape == (4, 800) and y.shape == (4,)


def test_pretraining_image_folder_shuffles_paths(image_folder, monkeypatch, streaming):
    """Folder pre-training streams images above the limit (its shuffle buffer holds paths)."""
    import types

    from kerastl.pretraining.run import _folder_source

    monkeypatch.setattr(pipelines, "load_inputs", streaming)
    config = types.SimpleNamespace(seed=0, image_size=16)
    source = _folder_source(config, image_folder, 3, 4)
    x, _ = next(iter(source.train))
    assert x.shape == (4, 16, 16, 3)


def test_image_streaming_finetune_trains_with_the_same_augmentation(image_folder, tiny_backbone_path,
                                                                    monkeypatch):
    """Forced onto the streaming path, `finetune --augment` trains and ends with the weights of the
    in-memory run: same batches, same augmentation."""
    from kerastl.train.finetune import FinetuneConfig, finetune

    config = dict(strategy="full", epochs=2, head_epochs=1, batch_size=8, augment=True, seed=5,
                  deterministic=True, validate_each_epoch=False)
    in_memory = finetune(image_folder, str(tiny_backbone_path), config=FinetuneConfig(**config), verbose=0)
    monkeypatch.setattr(pipelines, "MEMORY_CACHE_BYTES", 0)
    streamed = finetune(image_folder, str(tiny_backbone_path), config=FinetuneConfig(**config), verbose=0)
    assert [row["loss"] for row in streamed.metrics["history"]] == [
        row["loss"] for row in in_memory.metrics["history"]]
    for a, b in zip(in_memory.model.weights, streamed.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def text_folder(root, per_class=12):
    for topic in ("music", "garden"):
        (root / topic).mkdir(parents=True)
        for i in range(per_class):
            (root / topic / f"{i}.txt").write_text(f"{topic} words number {i} about the {topic} topic")
    return root


def test_text_pretraining_folder_streams_above_the_bound(tmp_path, monkeypatch, streaming):
    """A text folder over the bound is neither loaded whole for its batches nor for its vocabulary, which is
    the one the in-memory path builds."""
    import tensorflow as tf

    from kerastl.inputs import text
    from kerastl.pretraining import other_sources as pretraining_modalities
    from kerastl.pretraining.run import PretrainConfig

    folder = text_folder(tmp_path / "texts")
    config = PretrainConfig(source=str(folder), arch="textcnn-s", batch_size=4, sequence_length=8,
                            vocabulary_size=50)
    monkeypatch.setattr(pipelines, "MEMORY_CACHE_BYTES", 1 << 30)
    in_memory = pretraining_modalities.text_source(config, 4)
    monkeypatch.setattr(pipelines, "MEMORY_CACHE_BYTES", 0)
    monkeypatch.setattr(text, "load_texts", streaming)
    streamed = pretraining_modalities.text_source(config, 4)
    assert isinstance(streamed.texts, tf.data.Dataset)
    build = dict(vocabulary_size=50, sequence_length=8)
    assert text.build_vocabulary(streamed.texts, **build) == text.build_vocabulary(in_memory.texts, **build)
    first = [next(iter(s.train)) for s in (in_memory, streamed)]
    assert first[0][0].dtype == first[1][0].dtype == tf.string
    assert [t.numpy().tolist() for t in first[0]] == [t.numpy().tolist() for t in first[1]]
