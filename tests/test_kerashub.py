"""`kerashub:` backbones end to end, on presets and checkpoints built here (no downloads): a tiny keras-hub ResNet
with its image converter and a tiny BERT with its tokenizer (`save_to_preset`), a tiny Hugging Face transformers
BERT directory and a timm ResNet-18 directory (safetensors written with numpy). Each is loaded, fine-tuned with
every strategy, reloaded from model.keras in a fresh process in safe mode, and exported; offline and missing
presets fail in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kerastl.cli import main
from kerastl.errors import KerastlError, UsageError

from .conftest import finetune_cli, make_image_folder, one_line_error

keras_hub = pytest.importorskip("keras_hub", reason="the kerashub extra (pip install -e '.[test]') is not installed")

ROOT = Path(__file__).resolve().parent.parent
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOPICS = {
    "weather": ["rain", "sunny", "cloud", "storm", "wind", "snow"],
    "sport": ["goal", "match", "team", "score", "coach", "ball"],
}
FILLER = ["the", "a", "today", "was", "very", "and", "we", "saw"]
VOCABULARY = SPECIALS + FILLER + [w for words in TOPICS.values() for w in words] + ["##s", "##ed", ".", ","]
IMAGE_SIZE = 32
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_text_folder(root, per_class=10, seed=0):
    rng = np.random.default_rng(seed)
    for topic, words in TOPICS.items():
        (root / topic).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            sentence = list(rng.choice(words, 3)) + list(rng.choice(FILLER, 4))
            rng.shuffle(sentence)
            (root / topic / f"{i:02d}.txt").write_text(" ".join(sentence).capitalize() + ".\n", encoding="utf-8")
    return root


def tiny_bert_preset(root, seed=0, lowercase=True):
    """A keras-hub preset directory: a 2-layer BERT (hidden width 8) and its classifier preprocessor."""
    import keras

    keras.utils.set_random_seed(seed)
    tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=VOCABULARY, lowercase=lowercase)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=16)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(VOCABULARY), num_layers=2, num_heads=2,
                                             hidden_dim=8, intermediate_dim=16, max_sequence_length=32)
    backbone.save_to_preset(str(root))
    preprocessor.save_to_preset(str(root))
    return root


def tiny_resnet_preset(root, seed=0):
    """A keras-hub preset directory: a 2-stack ResNet and its image converter (ImageNet mean and std)."""
    import keras

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(None, None, 3))
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=(IMAGE_SIZE, IMAGE_SIZE), scale=[1 / 255 / s for s in IMAGENET_STD],
        offset=[-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    backbone.save_to_preset(str(root))
    converter.save_to_preset(str(root))
    return root


def hf_bert_directory(root, *, hidden=8, layers=2, heads=2, intermediate=16, positions=32, seed=0):
    """A Hugging Face transformers BERT checkpoint as `BertModel.save_pretrained` and its tokenizer write it:
    config.json, model.safetensors (PyTorch layout: Linear weights are (out, in)), vocab.txt,
    tokenizer_config.json. Returns the directory and its tensors."""
    from safetensors.numpy import save_file

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def dense(out, inp):
        return (rng.standard_normal((out, inp)) * 0.2).astype("float32")

    def norm(prefix):
        return {f"{prefix}.weight": np.ones(hidden, "float32"), f"{prefix}.bias": np.zeros(hidden, "float32")}

    tensors = {"embeddings.word_embeddings.weight": dense(len(VOCABULARY), hidden),
               "embeddings.position_embeddings.weight": dense(positions, hidden),
               "embeddings.token_type_embeddings.weight": dense(2, hidden),
               **norm("embeddings.LayerNorm"),
               "pooler.dense.weight": dense(hidden, hidden), "pooler.dense.bias": np.zeros(hidden, "float32")}
    for i in range(layers):
        prefix = f"encoder.layer.{i}"
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):
            tensors[f"{prefix}.{name}.weight"] = dense(hidden, hidden)
            tensors[f"{prefix}.{name}.bias"] = np.zeros(hidden, "float32")
        tensors.update(norm(f"{prefix}.attention.output.LayerNorm"))
        tensors[f"{prefix}.intermediate.dense.weight"] = dense(intermediate, hidden)
        tensors[f"{prefix}.intermediate.dense.bias"] = np.zeros(intermediate, "float32")
        tensors[f"{prefix}.output.dense.weight"] = dense(hidden, intermediate)
        tensors[f"{prefix}.output.dense.bias"] = np.zeros(hidden, "float32")
        tensors.update(norm(f"{prefix}.output.LayerNorm"))
    save_file(tensors, str(root / "model.safetensors"))
    config = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": len(VOCABULARY),
              "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
              "intermediate_size": intermediate, "max_position_embeddings": positions, "type_vocab_size": 2,
              "hidden_act": "gelu", "layer_norm_eps": 1e-12}
    (root / "config.json").write_text(json.dumps(config))
    (root / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True,
                                                             "tokenizer_class": "BertTokenizer"}))
    (root / "vocab.txt").write_text("".join(f"{token}\n" for token in VOCABULARY), encoding="utf-8")
    return root, tensors


def timm_resnet18_directory(root, seed=0):
    """A timm checkpoint as `timm.create_model("resnet18").save_pretrained` writes it: config.json with the
    architecture and `pretrained_cfg` (input size, mean, std), model.safetensors in timm's (torchvision's)
    names and layouts (convolutions (out, in, kh, kw))."""
    from safetensors.numpy import save_file

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors = {}

    def conv(name, out, inp, k):
        tensors[f"{name}.weight"] = (rng.standard_normal((out, inp, k, k)) * np.sqrt(2 / (inp * k * k))).astype(
            "float32")

    def batchnorm(name, width):
        tensors.update({f"{name}.weight": np.ones(width, "float32"), f"{name}.bias": np.zeros(width, "float32"),
                        f"{name}.running_mean": (rng.standard_normal(width) * 0.1).astype("float32"),
                        f"{name}.running_var": rng.uniform(0.5, 1.5, width).astype("float32")})

    conv("conv1", 64, 3, 7)
    batchnorm("bn1", 64)
    previous = 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            conv(f"{prefix}.conv1", width, previous if block == 0 else width, 3)
            batchnorm(f"{prefix}.bn1", width)
            conv(f"{prefix}.conv2", width, width, 3)
            batchnorm(f"{prefix}.bn2", width)
            if block == 0 and stage > 1:
                conv(f"{prefix}.downsample.0", width, previous, 1)
                batchnorm(f"{prefix}.downsample.1", width)
        previous = width
    tensors["fc.weight"] = (rng.standard_normal((1000, 512)) * 0.01).astype("float32")
    tensors["fc.bias"] = np.zeros(1000, "float32")
    save_file(tensors, str(root / "model.safetensors"))
    config = {"architecture": "resnet18", "num_classes": 1000, "num_features": 512,
              "pretrained_cfg": {"input_size": [3, IMAGE_SIZE, IMAGE_SIZE], "mean": list(IMAGENET_MEAN),
                                 "std": list(IMAGENET_STD), "interpolation": "bicubic", "crop_pct": 0.875}}
    (root / "config.json").write_text(json.dumps(config))
    return root, tensors


@pytest.fixture(scope="module")
def bert_preset(tmp_path_factory):
    return tiny_bert_preset(tmp_path_factory.mktemp("presets") / "tiny_bert")


@pytest.fixture(scope="module")
def resnet_preset(tmp_path_factory):
    return tiny_resnet_preset(tmp_path_factory.mktemp("presets") / "tiny_resnet")


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory):
    return hf_bert_directory(tmp_path_factory.mktemp("hf") / "bert-tiny")


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    return make_text_folder(tmp_path_factory.mktemp("texts"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("images"), per_class=10, size=IMAGE_SIZE)


def _spec(path) -> str:
    return f"kerashub:{path}"


# ------------------------------------------------------------------------------------------------ loading


def test_image_preset_takes_raw_pixels_through_its_converter(resnet_preset):
    """The backbone model is raw pixels → the converter's rescaling as kerastl's ImagePreprocessing (the marker
    the image modality claims) → the ResNet: the same features as keras-hub's converter and backbone."""
    from kerastl.backbones import load_backbone
    from kerastl.core.graph import walk_layers
    from kerastl.data import input_spec
    from kerastl.inputs.image import ImagePreprocessing

    backbone = load_backbone(_spec(resnet_preset))
    assert backbone.modality == "image" and backbone.input_shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert input_spec(backbone.model).modality == "image"
    assert isinstance(backbone.model.layers[1], ImagePreprocessing)
    assert not any(type(layer).__module__.startswith("keras_hub") for layer in walk_layers(backbone.model))
    record = backbone.preprocessing
    assert record["converter"] == "ResNetImageConverter" and record["converter_image_size"] == [32, 32]
    np.testing.assert_allclose(record["mean"], [255 * m for m in IMAGENET_MEAN], rtol=1e-6)
    np.testing.assert_allclose(record["std"], [255 * s for s in IMAGENET_STD], rtol=1e-6)

    pixels = np.random.default_rng(0).uniform(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    converter = keras_hub.layers.ImageConverter.from_preset(str(resnet_preset))
    reference = keras_hub.models.Backbone.from_preset(str(resnet_preset))(converter(pixels))
    np.testing.assert_allclose(backbone.model(pixels), reference, atol=1e-4)
    larger = load_backbone(_spec(resnet_preset), image_size=48)
    assert larger.input_shape == (48, 48, 3) and "runs at 48x48 (--image-size)" in larger.preprocessing["resize"]


def test_text_preset_takes_raw_strings_and_pools_the_real_tokens(bert_preset):
    """Raw strings → the preset's tokenizer and packer → BERT → the mean of sequence_output over the tokens the
    padding mask keeps; BERT's pooler is not in the model."""
    from kerastl.backbones import load_backbone
    from kerastl.data import input_spec
    from kerastl.train.strategies import weighted_layers

    backbone = load_backbone(_spec(bert_preset))
    assert backbone.modality == "text" and backbone.input_shape == () and backbone.feature_width == 8
    assert input_spec(backbone.model).modality == "text"
    record = backbone.preprocessing
    assert record["tokenizer"] == "BertTokenizer" and record["sequence_length"] == 16
    assert record["outputs"] == ["token_ids", "padding_mask", "segment_ids"]
    names = [layer.name for layer in weighted_layers(backbone.model)]
    assert names[-2:] == ["transformer_layer_0", "transformer_layer_1"] and "pooled_dense" not in names

    sentences = ["Rain and snow today.", "The team saw a goal"]
    packed = keras_hub.models.TextClassifierPreprocessor.from_preset(str(bert_preset))(sentences)
    sequence = np.asarray(keras_hub.models.Backbone.from_preset(str(bert_preset))(packed)["sequence_output"])
    mask = np.asarray(packed["padding_mask"], "float32")[..., None]
    expected = (sequence * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(backbone.model(np.asarray(sentences, dtype=object)), expected, atol=1e-5)

    shorter = load_backbone(_spec(bert_preset) + "#sequence_length=8")
    assert shorter.preprocessing["sequence_length"] == 8
    with pytest.raises(UsageError, match="exceeds the encoder's maximum of 32"):
        load_backbone(_spec(bert_preset) + "#sequence_length=64")
    with pytest.raises(UsageError, match="sequence_length=N"):
        load_backbone(_spec(bert_preset) + "#length=8")
    with pytest.raises(UsageError, match="--image-size applies to image backbones"):
        load_backbone(_spec(bert_preset), image_size=64)


def test_hugging_face_bert_directory(hf_bert):
    """A transformers checkpoint directory: keras-hub converts the weights (the word embeddings arrive as
    written) and the tokenizer frames each text as [CLS] pieces [SEP], padded with [PAD]."""
    from kerastl.backbones import load_backbone
    from kerastl.inputs.packed_text import pack

    root, tensors = hf_bert
    backbone = load_backbone(_spec(root))
    assert backbone.modality == "text" and backbone.preprocessing["encoder"] == "BertBackbone"
    # The checkpoint's 32 positions cap the default 128.
    assert backbone.preprocessing["sequence_length"] == 32
    encoder = backbone.model.get_layer("bert_backbone")
    np.testing.assert_array_equal(encoder.get_layer("token_embedding").embeddings.numpy(),
                                  tensors["embeddings.word_embeddings.weight"])
    packed = pack(backbone.model, ["The storm", "a goal"])
    ids = [VOCABULARY.index(token) for token in ("[CLS]", "the", "storm", "[SEP]")]
    assert packed["token_ids"][0].tolist() == ids + [0] * 28
    assert packed["padding_mask"][1].tolist() == [1] * 4 + [0] * 28
    assert not packed["segment_ids"].any()


@pytest.mark.slow
def test_timm_resnet18_directory(tmp_path, images):
    """A timm checkpoint directory: the converter comes from pretrained_cfg (mean, std, input size); the
    features are keras-hub's; a head trains on it."""
    from kerastl.backbones import load_backbone
    from kerastl.train.finetune import FinetuneConfig, finetune

    root, _ = timm_resnet18_directory(tmp_path / "resnet18.a1_in1k")
    backbone = load_backbone(_spec(root))
    assert backbone.modality == "image" and backbone.input_shape == (32, 32, 3) and backbone.feature_width == 512
    assert backbone.preprocessing["interpolation"] == "bicubic"
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    converter = keras_hub.layers.ImageConverter.from_preset(str(root))
    reference = keras_hub.models.Backbone.from_preset(str(root))(converter(pixels))
    np.testing.assert_allclose(backbone.model(pixels), reference, atol=1e-3)
    result = finetune(images, _spec(root), config=FinetuneConfig(strategy="head", epochs=1, batch_size=8),
                      verbose=0)
    assert result.metrics["backbone"]["spec"] == _spec(root)


def test_vit_preset_fixed_size_and_blocks_as_layers(tmp_path):
    """A ViT runs its transformer blocks in a loop inside one `ViTEncoder` layer: `top:N` still counts blocks.
    Its position embeddings fix its input size."""
    from kerastl.backbones import load_backbone
    from kerastl.train.strategies import parse_strategy, set_backbone_trainable, weighted_layers

    root = tmp_path / "vit"
    keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=8,
                                 mlp_dim=16).save_to_preset(str(root))
    keras_hub.layers.ViTImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1.0).save_to_preset(str(root))
    backbone = load_backbone(_spec(root))
    assert backbone.input_shape == (32, 32, 3) and backbone.preprocessing["mean"] == [1.0]
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    converter = keras_hub.layers.ImageConverter.from_preset(str(root))
    reference = keras_hub.models.Backbone.from_preset(str(root))(converter(pixels))
    np.testing.assert_allclose(backbone.model(pixels), reference, atol=1e-5)
    names = [layer.name for layer in weighted_layers(backbone.model)]
    assert names == ["vit_patching_and_embedding", "transformer_block_1", "transformer_block_2", "ln"]
    assert set_backbone_trainable(backbone.model, parse_strategy("top:2")) == ["transformer_block_2", "ln"]
    block = backbone.model.get_layer("vi_t_backbone").get_layer("vit_encoder").encoder_layers[0]
    assert not block.trainable_weights
    with pytest.raises(UsageError, match="takes 32x32 images only"):
        load_backbone(_spec(root), image_size=64)


def test_audio_models_are_refused_in_one_line(tmp_path):
    from kerastl.backbones import load_backbone

    whisper = keras_hub.models.WhisperBackbone(vocabulary_size=16, num_layers=1, num_heads=2, hidden_dim=8,
                                               intermediate_dim=16, max_encoder_sequence_length=16,
                                               max_decoder_sequence_length=8)
    whisper.save_to_preset(str(tmp_path / "whisper"))
    with pytest.raises(UsageError, match="WhisperBackbone taking .*encoder-decoders") as raised:
        load_backbone(_spec(tmp_path / "whisper"))
    assert "\n" not in str(raised.value)


def test_image_options_and_fixed_sizes_are_checked(resnet_preset):
    from kerastl.backbones import load_backbone
    from kerastl.backbones.kerashub import _image_size

    with pytest.raises(UsageError, match="applies to text presets"):
        load_backbone(_spec(resnet_preset) + "#sequence_length=8")
    with pytest.raises(UsageError, match="takes 224x224 images only"):
        _image_size("kerashub:vit", 96, (224, 224), (224, 224))
    assert _image_size("kerashub:vit", None, None, (224, 224)) == (224, 224)
    assert _image_size("kerashub:vit", None, (256, 256), (224, 224)) == (224, 224)
    assert _image_size("kerashub:resnet", None, (256, 256), (None, None)) == (256, 256)
    with pytest.raises(UsageError, match="--weights applies to keras: backbones only"):
        load_backbone(_spec(resnet_preset), weights="imagenet")


# ------------------------------------------------------------------------------------------------ strategies


def _weights(model, *path):
    layer = model.get_layer("backbone")
    for name in path:
        layer = layer.get_layer(name)
    return [w.numpy().copy() for w in layer.weights]


def _changed(before, after) -> bool:
    return any(not np.allclose(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("strategy,patterns,trained,kept", [
    ("head", None, [], ["transformer_layer_0", "transformer_layer_1", "token_embedding"]),
    # Training BERT's layers on strings takes 25-30 s each on two shared cores.
    pytest.param("full", None, ["transformer_layer_0", "transformer_layer_1", "token_embedding"], [],
                 marks=pytest.mark.slow),
    pytest.param("top:1", None, ["transformer_layer_1"], ["transformer_layer_0", "token_embedding"],
                 marks=pytest.mark.slow),
    pytest.param("full", ["*embedding*", "transformer_layer_1"], ["transformer_layer_0"],
                 ["transformer_layer_1", "token_embedding"], marks=pytest.mark.slow),
])
def test_text_strategies(bert_preset, texts, tmp_path, strategy, patterns, trained, kept):
    """head with cached features, full, top:N (N transformer layers) and layer patterns train what they say."""
    from kerastl.backbones import load_backbone
    from kerastl.train.finetune import FinetuneConfig, finetune

    pretrained = load_backbone(_spec(bert_preset)).model
    encoder = "bert_backbone"
    before = {name: [w.numpy().copy() for w in pretrained.get_layer(encoder).get_layer(name).weights]
              for name in trained + kept}
    config = FinetuneConfig(strategy=strategy, epochs=1, head_epochs=1, batch_size=8, learning_rate=5e-2,
                            frozen_layers=patterns)
    result = finetune(texts, _spec(bert_preset), out=tmp_path / "run", config=config, verbose=0)
    phases = [row["phase"] for row in result.metrics["history"]]
    assert phases == (["head"] if strategy == "head" else ["head", strategy])
    for name in trained:
        assert _changed(before[name], _weights(result.model, encoder, name)), name
    for name in kept:
        assert not _changed(before[name], _weights(result.model, encoder, name)), name
    assert (tmp_path / "run" / "model.keras").is_file()


@pytest.mark.parametrize("strategy,patterns,trained,kept", [
    ("head", None, [], ["conv1_conv", "stack1_block0_2_conv"]),
    ("full", None, ["conv1_conv", "stack1_block0_2_conv"], []),
    ("top:2", None, ["stack1_block0_2_bn"], ["conv1_conv", "stack1_block0_2_conv"]),
    ("full", ["conv1_*"], ["stack1_block0_2_conv"], ["conv1_conv"]),
])
def test_image_strategies(resnet_preset, images, tmp_path, strategy, patterns, trained, kept):
    from kerastl.backbones import load_backbone
    from kerastl.train.finetune import FinetuneConfig, finetune

    pretrained = load_backbone(_spec(resnet_preset)).model
    graph = "res_net_backbone"
    before = {name: [w.numpy().copy() for w in pretrained.get_layer(graph).get_layer(name).weights]
              for name in trained + kept}
    config = FinetuneConfig(strategy=strategy, epochs=1, head_epochs=1, batch_size=8, learning_rate=5e-2,
                            frozen_layers=patterns)
    result = finetune(images, _spec(resnet_preset), config=config, verbose=0)
    for name in trained:
        # BatchNormalization keeps its statistics (gamma and beta train): compare the trainable weights.
        layer = result.model.get_layer("backbone").get_layer(graph).get_layer(name)
        after = [w.numpy() for w in layer.trainable_weights]
        original = before[name][:len(after)]
        assert _changed(original, after), name
    for name in kept:
        assert not _changed(before[name], _weights(result.model, graph, name)), name


# ------------------------------------------------------------------------------------------------ saving, exports


@pytest.fixture(scope="module")
def text_run(bert_preset, texts, tmp_path_factory):
    return finetune_cli(texts, _spec(bert_preset), tmp_path_factory.mktemp("text") / "run", "--strategy", "head",
                        "--epochs", "2", "--batch-size", "8")


@pytest.fixture(scope="module")
def image_run(resnet_preset, images, tmp_path_factory):
    return finetune_cli(images, _spec(resnet_preset), tmp_path_factory.mktemp("image") / "run", "--strategy",
                        "top:4", "--epochs", "1", "--head-epochs", "1", "--batch-size", "8")


_RELOAD = """
import json, sys
import numpy as np
from kerastl.train.evaluate import load_classifier
before = set(sys.modules)
model, labels = load_classifier(sys.argv[1])
inputs = np.load(sys.argv[2], allow_pickle=True)
print(json.dumps({"labels": labels, "probabilities": model.predict(inputs, verbose=0).tolist(),
                  "keras_hub_imported": "keras_hub" in sys.modules, "was_imported": "keras_hub" in before}))
"""


def _reload_in_a_fresh_process(run, inputs, tmp_path) -> dict:
    np.save(tmp_path / "inputs.npy", inputs, allow_pickle=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", _RELOAD, str(run), str(tmp_path / "inputs.npy")],
                            capture_output=True, text=True, timeout=600, cwd=ROOT, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_text_model_reloads_in_safe_mode_in_a_fresh_process(text_run, tmp_path):
    """model.keras holds the tokenizer and its vocabulary: a fresh process loads it in safe mode (keras-hub is
    imported only for it) and gives the same probabilities for raw strings."""
    from kerastl.train.evaluate import load_classifier

    sentences = np.asarray(["Rain and wind today.", "The coach saw a match", "unknown words only"], dtype=object)
    model, labels = load_classifier(text_run)
    reloaded = _reload_in_a_fresh_process(text_run, sentences, tmp_path)
    assert reloaded["labels"] == labels and not reloaded["was_imported"] and reloaded["keras_hub_imported"]
    np.testing.assert_allclose(reloaded["probabilities"], model.predict(sentences, verbose=0), atol=1e-5)
    metrics = json.loads((text_run / "metrics.json").read_text())
    assert metrics["backbone"]["preprocessing"]["mode"] == "keras_hub"


def test_image_model_reloads_without_keras_hub(image_run, tmp_path):
    """An image model holds only Keras layers and kerastl's ImagePreprocessing: it loads without keras-hub."""
    from kerastl.train.evaluate import load_classifier

    pixels = np.random.default_rng(0).uniform(0, 255, (3, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    model, _ = load_classifier(image_run)
    reloaded = _reload_in_a_fresh_process(image_run, pixels, tmp_path)
    assert not reloaded["keras_hub_imported"]
    np.testing.assert_allclose(reloaded["probabilities"], model.predict(pixels, verbose=0), atol=1e-5)


def test_image_export_all(image_run, images, tmp_path):
    out = tmp_path / "exported"
    result = CliRunner().invoke(main, ["export", str(image_run), "--format", "all", "--data", str(images),
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "export_report.json").read_text())
    assert report["modality"] == "image" and set(report["exports"]) == {"saved_model", "tflite"}
    for figures in report["exports"].values():
        assert figures["top1_agreement"] == 1.0 and figures["max_abs_diff"] < 1e-4, figures
    assert report["exports"]["tflite"]["input"]["shape"] == [1, IMAGE_SIZE, IMAGE_SIZE, 3]


def test_text_export_all_strings_in_the_saved_model_packed_ids_in_tflite(text_run, texts, tmp_path):
    """The SavedModel takes raw strings; the TFLite file takes token_ids, padding_mask and segment_ids (int32),
    with the WordPiece vocabulary beside it; framing the words' vocabulary ids by the report's rules and feeding
    them to the file gives Keras' answers."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from kerastl.train.evaluate import load_classifier

    out = tmp_path / "exported"
    result = CliRunner().invoke(main, ["export", str(text_run), "--format", "all", "--data", str(texts),
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "token_ids int32 (1, 16), padding_mask int32 (1, 16), segment_ids int32 (1, 16)" in result.output
    report = json.loads((out / "export_report.json").read_text())
    for figures in report["exports"].values():
        assert figures["top1_agreement"] == 1.0 and figures["max_abs_diff"] < 1e-4, figures
    assert report["exports"]["tflite"]["inputs"] == ["token_ids", "padding_mask", "segment_ids"]
    rules = report["tokenizer"]
    assert rules["vocabulary_file"] == "vocabulary.txt" and rules["sequence_length"] == 16
    assert (rules["start_token"], rules["end_token"], rules["pad_token"]) == ("[CLS]", "[SEP]", "[PAD]")
    vocabulary = (out / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert vocabulary == VOCABULARY
    # The file carries MediaPipe's BertTokenizer metadata, and MediaPipe itself ran it on the held-out texts.
    assert rules["mediapipe"]["supported"] and rules["mediapipe"]["tokenizer"] == "BertTokenizer"
    assert rules["mediapipe"]["vocabulary_file"] == "vocab.txt" and rules["mediapipe"]["vocabulary_lines"] == len(VOCABULARY)
    via = report["exports"]["tflite"]["mediapipe"]
    assert via["tokenizer"] == "BertTokenizer" and via["n"] == report["verified_on"]["n"], via
    assert via["top1_agreement"] == 1.0 and via["same_ids"] == 1.0 and via["max_abs_diff"] < 1e-4, via
    assert "via MediaPipe" in result.output and "its metadata holds a BertTokenizer and vocab.txt" in result.output

    model, _ = load_classifier(text_run)
    sentences = ["rain wind snow", "the team saw a goal", "we saw the storm today"]
    reference = model.predict(np.asarray(sentences, dtype=object), verbose=0)
    serve = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    served = serve(texts=tf.constant(sentences))
    np.testing.assert_allclose(served["probabilities"].numpy(), reference, atol=1e-5)

    # What an app does for lower-case words that are whole vocabulary entries: look each up, frame, pad.
    runner = Interpreter(str(out / "model.tflite")).get_signature_runner()
    for sentence, expected in zip(sentences, reference):
        ids = [rules["start_id"]] + [vocabulary.index(word) for word in sentence.split()] + [rules["end_id"]]
        padding = [rules["pad_id"]] * (rules["sequence_length"] - len(ids))
        feed = {"token_ids": ids + padding, "padding_mask": [1] * len(ids) + [0] * len(padding),
                "segment_ids": [0] * rules["sequence_length"]}
        outputs = runner(**{key: np.asarray([value], np.int32) for key, value in feed.items()})
        np.testing.assert_allclose(next(iter(outputs.values()))[0], expected, atol=1e-4)


def test_text_tflite_refuses_full_integer(text_run, texts, tmp_path):
    result = CliRunner().invoke(main, ["export", str(text_run), "--format", "tflite", "--quantize", "int8",
                                       "--data", str(texts), "--out", str(tmp_path / "m.tflite")])
    one_line_error(result, 2, "int8")


# ------------------------------------------------------------------------------------------------ CLI, offline


def test_backbones_listing_names_the_scheme():
    result = CliRunner().invoke(main, ["backbones"], catch_exceptions=False)
    assert result.exit_code == 0 and "kerashub:<name>|kaggle://...|hf://...|<dir>" in result.output


def test_offline_preset_not_cached_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    handle = keras_hub.models.Backbone.presets["bert_tiny_en_uncased"]["kaggle_handle"]
    result = CliRunner().invoke(main, ["finetune", "--backbone", "kerashub:bert_tiny_en_uncased", "--out",
                                       str(tmp_path / "out")])
    line = one_line_error(result, 1, "offline", handle, str(tmp_path / "kagglehub" / "models" / "keras" / "bert"),
                          "kerashub:<a local copy of the preset directory>")
    assert "kagglehub.model_download" in line


def test_offline_preset_in_the_kagglehub_cache_loads(bert_preset, tmp_path, monkeypatch):
    """A built-in name resolves to its versioned Kaggle handle; offline, kagglehub's cache directory for it is
    loaded as a local preset, without any connection."""
    import shutil

    from kerastl.backbones import load_backbone

    handle = keras_hub.models.Backbone.presets["bert_tiny_en_uncased"]["kaggle_handle"]
    cache = tmp_path / "kagglehub"
    shutil.copytree(bert_preset, cache.joinpath("models", *handle.removeprefix("kaggle://").split("/")))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    monkeypatch.setattr("kerastl.net.reachable", lambda *a, **k: pytest.fail("offline must not connect"))
    backbone = load_backbone("kerashub:bert_tiny_en_uncased")
    assert backbone.modality == "text" and backbone.spec == "kerashub:bert_tiny_en_uncased"


def test_without_network_a_preset_fails_at_once(tmp_path, monkeypatch):
    from kerastl.backbones import load_backbone

    monkeypatch.delenv("KERASTL_OFFLINE", raising=False)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    asked = []
    monkeypatch.setattr("kerastl.net.reachable", lambda host, **k: asked.append(host) and False)
    with pytest.raises(KerastlError, match="cannot reach api.kaggle.com .no network") as raised:
        load_backbone("kerashub:kaggle://keras/bert/keras/bert_tiny_en_uncased/3")
    assert asked == ["api.kaggle.com"] and "\n" not in str(raised.value)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(KerastlError, match="cannot reach huggingface.co .*snapshot_download"):
        load_backbone("kerashub:hf://google-bert/bert-base-uncased")


def test_bad_presets_are_one_line(tmp_path):
    from kerastl.backbones import load_backbone

    with pytest.raises(UsageError, match="Close names: kerashub:bert_tiny_en_uncased"):
        load_backbone("kerashub:bert_tiny_en_uncasd")
    with pytest.raises(KerastlError, match="preset directory not found"):
        load_backbone(f"kerashub:{tmp_path / 'missing'}")
    with pytest.raises(UsageError, match="OWNER/MODEL/FRAMEWORK/VARIATION"):
        load_backbone("kerashub:kaggle://keras/bert")
    with pytest.raises(UsageError, match="hf://OWNER/NAME"):
        load_backbone("kerashub:hf://bert")
    with pytest.raises(UsageError, match="needs a preset"):
        load_backbone("kerashub:")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KerastlError, match="cannot load kerashub:.* with keras-hub: ") as raised:
        load_backbone(f"kerashub:{tmp_path / 'empty'}")
    assert "\n" not in str(raised.value)


def test_missing_extra_is_one_line(text_run, monkeypatch):
    import importlib.util

    from kerastl.backbones import load_backbone, load_keras_file

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "keras_hub" else real(name, *a))
    with pytest.raises(KerastlError, match=r'keras-hub, which is not installed here; run pip install "kerastl\[kerashub\]"'):
        load_backbone("kerashub:bert_tiny_en_uncased")
    with pytest.raises(KerastlError, match=r'holds keras-hub layers.*pip install "kerastl\[kerashub\]"'):
        load_keras_file(text_run / "model.keras")
