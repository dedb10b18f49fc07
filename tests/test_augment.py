"""One augmentation per modality, stateless and keyed on (seed, epoch, batch): `kerastl.data.augment_images`
(also under its old name `kerastl.train.resume.augment_images`), `kerastl.inputs.audio.augment_waveforms`, and none
for text (its word dropout lives in the architecture)."""

import numpy as np
import pytest
from scipy.io import wavfile

from kerastl import data
from kerastl.core.records import InputSpec
from kerastl.data import augment_images, augmentation_key, make_dataset
from kerastl.errors import UsageError
from kerastl.inputs.audio import augment_waveforms


def test_image_augmentation_is_reproducible_for_seed_and_epoch():
    from kerastl.train import resume as checkpointing

    assert checkpointing.augment_images is augment_images
    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    first = augment_images(images, augmentation_key(7, 2, 1)).numpy()
    np.testing.assert_array_equal(first, augment_images(images, augmentation_key(7, 2, 1)).numpy())
    for other in (augmentation_key(7, 3, 1), augmentation_key(8, 2, 1), augmentation_key(7, 2, 0)):
        assert not np.array_equal(first, augment_images(images, other).numpy())
    assert not np.array_equal(first, images) and first.min() >= 0 and first.max() <= 255


def test_audio_augmentation_is_reproducible_for_seed_and_epoch():
    waves = np.random.default_rng(0).uniform(-0.5, 0.5, (4, 4000)).astype("float32")
    first = augment_waveforms(waves, augmentation_key(7, 2, 1)).numpy()
    np.testing.assert_array_equal(first, augment_waveforms(waves, augmentation_key(7, 2, 1)).numpy())
    assert not np.array_equal(first, augment_waveforms(waves, augmentation_key(7, 3, 1)).numpy())
    assert not np.array_equal(first, waves) and np.abs(first).max() <= 1.0


def speech_like_folder(root, per_class=4, rate=16000, samples=2800):
    rng = np.random.default_rng(1)
    for label, name in enumerate(("low", "high")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            t = np.arange(samples) / rate
            wave = 0.4 * np.sin(2 * np.pi * (300 + 900 * label) * t) * np.hanning(samples)
            wave += rng.normal(0, 0.02, samples)
            wavfile.write(root / name / f"{i}.wav", rate, (wave * 32767).astype("int16"))
    return root


def test_audio_dataset_augments_the_same_way_on_every_pass(tmp_path):
    """The augmentation draws from its key, not from a tf.random.Generator living in the tf.data map (which
    gave another augmentation on each pass, and another after a restart)."""
    folder = speech_like_folder(tmp_path / "wav")
    files = sorted(folder.glob("*/*.wav"))
    spec = InputSpec(modality="audio", shape=(2800,), sample_rate=16000)
    dataset = make_dataset(spec, files, [0] * len(files), batch_size=4, augment=True, seed=3)
    one, two = ([x.numpy() for x, _ in dataset] for _ in range(2))
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    plain = [x.numpy() for x, _ in make_dataset(spec, files, [0] * len(files), batch_size=4)]
    assert not np.array_equal(one[0], plain[0])


@pytest.fixture(scope="module")
def audio_backbone(tmp_path_factory):
    from kerastl.backbones.archs import build_audio_backbone

    path = tmp_path_factory.mktemp("audio-backbone") / "audio.keras"
    build_audio_backbone("smallnet-s", sample_rate=16000, num_samples=2800).save(path)
    return path


def test_audio_augment_finetunes_deterministically_for_a_seed(tmp_path, audio_backbone):
    """`finetune --augment` on audio runs (in memory, as the clips fit) and two runs with one seed end with the
    same weights; the augmentation is on (another seed differs)."""
    from kerastl.train.finetune import FinetuneConfig, finetune

    folder = speech_like_folder(tmp_path / "wav")

    def run(seed):
        config = FinetuneConfig(strategy="full", epochs=2, head_epochs=1, batch_size=4, augment=True, seed=seed,
                                deterministic=True, validate_each_epoch=False)
        return finetune(folder, str(audio_backbone), config=config, verbose=0)

    a, b = run(4), run(4)
    # The head phase trains on the cached views; the full phase augments every epoch.
    assert a.metrics["timing"]["view_cache"] == "computed 8 views"
    for wa, wb in zip(a.model.weights, b.model.weights):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy(), err_msg=wa.path)
    assert np.isfinite(a.metrics["history"][-1]["loss"])


def test_text_has_no_augmentation(tmp_path):
    spec = InputSpec(modality="text", shape=())
    with pytest.raises(UsageError, match="text has no input augmentation.*word dropout.*drop --augment"):
        data.augmentation(spec)
    (tmp_path / "a.txt").write_text("words", encoding="utf-8")
    with pytest.raises(UsageError, match="drop --augment"):
        data.make_dataset(spec, [tmp_path / "a.txt"], [0], batch_size=1, augment=True)
    with pytest.raises(UsageError, match="drop --augment"):
        data.training_examples(spec, [tmp_path / "a.txt"], [0], augment=True)


def test_augment_changes_every_epoch_of_training(image_folder):
    """`--augment` is applied (not only the feature cache switched off, which is all tests/test_strategies.py
    checks): the training batches differ from the plain ones and from one epoch to the next."""
    from kerastl.train.resume import epoch_batches

    scan = data.scan_folder(image_folder)
    files = [p for paths in scan.files for p in paths][:8]
    spec = InputSpec(modality="image", shape=(16, 16, 3))

    def batches(augment):
        inputs, labels, transform = data.training_examples(spec, files, [0] * len(files), augment=augment)
        stream = epoch_batches(inputs, labels, batch_size=8, seed=1, first_epoch=0, epochs=2, shuffle=False,
                               augment=transform)
        return [x.numpy() for x, _ in stream]

    plain, augmented = batches(False), batches(True)
    np.testing.assert_array_equal(plain[0], plain[1])
    assert not np.array_equal(augmented[0], plain[0]) and not np.array_equal(augmented[0], augmented[1])
