"""Text end to end: reading .txt files, the built-in corpus, pretrain → finetune (head, full) → evaluate →
predict → SavedModel (raw strings) and TFLite (token ids + vocabulary) round trips, TF-Hub text modules, and
the same-input-type errors as one line."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from kerastl.cli import main
from kerastl.errors import KerastlError

from .conftest import finetune_cli, finetune_quick, one_line_error

TOPICS = {
    "weather": ["rain", "sunny", "cloud", "storm", "wind", "forecast", "snow", "cold", "warm", "thunder"],
    "sport": ["goal", "match", "team", "score", "coach", "league", "player", "ball", "win", "referee"],
    "cooking": ["oven", "recipe", "flour", "bake", "salt", "pan", "sauce", "boil", "onion", "butter"],
}
FILLER = ["the", "a", "today", "was", "very", "and", "we", "saw", "some", "it", "is", "for", "our", "with"]


def make_text_folder(root, per_class=10, seed=0):
    """Short sentences mixing a topic's words with filler, one .txt file each."""
    rng = np.random.default_rng(seed)
    for topic, vocabulary in TOPICS.items():
        (root / topic).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            words = list(rng.choice(vocabulary, 3)) + list(rng.choice(FILLER, 5))
            rng.shuffle(words)
            (root / topic / f"{i:02d}.txt").write_text(" ".join(words).capitalize() + ".\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    return make_text_folder(tmp_path_factory.mktemp("texts"))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny text backbone made by `kerastl pretrain` on a folder of other topics' sentences."""
    corpus = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(1)
    for topic in ("music", "travel", "garden"):
        (corpus / topic).mkdir()
        for i in range(20):
            words = [f"{topic}{j}" for j in rng.integers(0, 5, 3)] + list(rng.choice(FILLER + TOPICS["sport"], 5))
            (corpus / topic / f"{i}.txt").write_text(" ".join(words))
    out = tmp_path_factory.mktemp("saved") / "docs-tiny"
    result = CliRunner().invoke(main, [
        "pretrain", "--data", str(corpus), "--arch", "textcnn-s", "--epochs", "1", "--steps-per-epoch", "3",
        "--batch-size", "16", "--validation-steps", "1", "--precision", "float32", "--no-xla",
        "--sequence-length", "16", "--vocabulary-size", "200", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


# ------------------------------------------------------------------------------------------------ pieces


def test_read_text_errors(tmp_path):
    from kerastl.inputs.text import read_text

    (tmp_path / "ok.txt").write_bytes("\ufeffcafé au lait\n".encode("utf-8"))
    assert read_text(tmp_path / "ok.txt") == "café au lait\n"
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(KerastlError, match="not UTF-8"):
        read_text(tmp_path / "latin1.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(KerastlError, match="is empty"):
        read_text(tmp_path / "empty.txt")


def test_undecodable_text_is_skipped_and_listed(tmp_path):
    from kerastl.data import drop_undecodable, scan_folder

    root = make_text_folder(tmp_path / "t", per_class=2)
    (root / "sport" / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    scan = drop_undecodable(scan_folder(root, "text"))
    assert [p for p, _ in scan.skipped] == [str(root / "sport" / "bad.txt")]
    assert scan.counts == {"cooking": 2, "sport": 2, "weather": 2}


def test_python_docs_corpus_is_labelled_by_module():
    from kerastl.pretraining.corpora import corpus_examples

    texts, labels, classes, description = corpus_examples("python-docs")
    assert len(classes) >= 30 and len(texts) == len(labels) > 5000
    assert {"asyncio", "email", "tarfile"} <= set(classes)
    assert all(len(t.split()) >= 5 and ">>>" not in t for t in texts[:500])
    assert "standard library" in description
    # Fixed order: the same call gives the same examples.
    assert corpus_examples("python-docs")[0][:50] == texts[:50]


@pytest.mark.slow
def test_file_and_wide_corpora():
    from kerastl.pretraining.corpora import corpus_examples

    # The stdlib paragraphs by source file: finer topics, more classes.
    _, _, files, _ = corpus_examples("python-docs-files")
    assert len(files) > 84 and "email/message" in files
    _, _, classes, description = corpus_examples("python-docs-wide")
    assert any(c.startswith("tensorflow/") for c in classes) and "asyncio" in classes
    benchmark = ("numpy", "scipy", "matplotlib", "PIL", "click", "sklearn")
    assert not [c for c in classes if c.split("/")[0] in benchmark]
    assert "tensorflow" in description


def test_masked_average_ignores_padding():
    from kerastl.inputs.text import MaskedAveragePooling1D

    features = np.arange(12, dtype="float32").reshape(1, 4, 3)
    ids = np.array([[5, 9, 0, 0]])
    np.testing.assert_allclose(np.asarray(MaskedAveragePooling1D()([features, ids])), [[1.5, 2.5, 3.5]])
    np.testing.assert_allclose(np.asarray(MaskedAveragePooling1D()([features, np.zeros((1, 4))])), [[0, 0, 0]])


def test_zero_padding_makes_features_independent_of_the_padded_length():
    import keras

    from kerastl.inputs.text import MaskedAveragePooling1D, ZeroPadding

    features = np.arange(12, dtype="float32").reshape(1, 4, 3) + 1
    np.testing.assert_allclose(np.asarray(ZeroPadding()([features, np.array([[5, 9, 0, 0]])])),
                               np.concatenate([features[:, :2], np.zeros((1, 2, 3))], axis=1))
    # Embedding → ZeroPadding → convolution → masked mean: padded to 8 ids or cut to the text's 3, the same.
    ids_in = keras.Input((None,), dtype="int64")
    embedded = keras.layers.Embedding(20, 4)(ids_in)
    x = keras.layers.Conv1D(5, 3, padding="same", activation="relu")(ZeroPadding()([embedded, ids_in]))
    x = keras.layers.Conv1D(5, 3, padding="same", dilation_rate=2)(ZeroPadding()([x, ids_in]))
    model = keras.Model(ids_in, MaskedAveragePooling1D()([x, ids_in]))
    ids = np.array([[3, 7, 11, 0, 0, 0, 0, 0]])
    np.testing.assert_allclose(np.asarray(model(ids)), np.asarray(model(ids[:, :3])), rtol=1e-6, atol=1e-7)


def test_textcnn_l_drops_whole_words_only_while_training():
    import keras

    from kerastl.backbones.archs import build_text_backbone
    from kerastl.inputs.text import WORD_DROPOUT

    vocabulary = [f"w{i}" for i in range(50)]
    model = build_text_backbone("textcnn-l", vocabulary, sequence_length=8)
    assert model.output.shape[-1] == 192 + 128 and WORD_DROPOUT["textcnn-l"] == 0.3
    words = keras.Model(model.input, model.get_layer("word_dropout").output)
    texts = np.asarray(["w1 w2 w3 w4 w5 w6 w7 w8"] * 16, dtype=object)
    inference = np.asarray(words(texts, training=False))
    np.testing.assert_allclose(inference, np.asarray(model.get_layer("embedding")(
        model.get_layer("tokenizer")(texts))))  # the identity at inference
    dropped = np.asarray(words(texts, training=True))
    zero = np.all(dropped == 0, axis=-1)  # (texts, tokens): a token's whole vector, or none of it
    assert np.all(np.any(dropped != 0, axis=-1) | zero) and 0.1 < zero.mean() < 0.5
    np.testing.assert_allclose(dropped[~zero], inference[~zero] / 0.7, rtol=1e-5)


# ------------------------------------------------------------------------------------------- end to end


def test_pretrained_text_backbone_manifest(pretrained):
    from kerastl.backbones import load_backbone

    manifest = json.loads((pretrained / "manifest.json").read_text())
    assert manifest["modality"] == "text"
    assert manifest["input"]["dtype"] == "string" and manifest["input"]["shape"] == []
    assert manifest["preprocessing"]["mode"] == "text_vectorization"
    assert manifest["preprocessing"]["sequence_length"] == 16
    backbone = load_backbone(str(pretrained))
    assert backbone.modality == "text" and backbone.input_shape == ()
    # The vocabulary travels in the model: it tokenises words of the pre-training corpus.
    tokenizer = backbone.model.get_layer("tokenizer")
    assert "music0" in tokenizer.get_vocabulary()
    assert manifest["preprocessing"]["vocabulary_size"] == tokenizer.vocabulary_size()


@pytest.mark.parametrize("strategy", ["head", "full"])
def test_finetune_evaluate_predict_on_texts(strategy, pretrained, texts, tmp_path):
    out = tmp_path / strategy
    runner = CliRunner()
    result = runner.invoke(main, ["finetune", "--data", str(texts), "--backbone", str(pretrained), "--strategy",
                                  strategy, "--epochs", "2", "--head-epochs", "1", "--batch-size", "8",
                                  "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == strategy and metrics["backbone"]["modality"] == "text"
    phases = [row["phase"] for row in metrics["history"]]
    assert phases == (["head", "head"] if strategy == "head" else ["head", "full", "full"])
    result = runner.invoke(main, ["evaluate", str(out), "--data", str(texts), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n"] == 30
    sample = min((texts / "sport").iterdir())
    result = runner.invoke(main, ["predict", str(out), str(sample)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.split("\t")[1] in TOPICS


def test_full_strategy_trains_the_embedding(pretrained, texts):
    from kerastl.backbones import load_backbone
    from kerastl.train.finetune import FinetuneConfig, finetune

    before = load_backbone(str(pretrained)).model.get_layer("embedding").embeddings.numpy()
    head = finetune(texts, str(pretrained), config=FinetuneConfig(strategy="head", epochs=1, batch_size=8),
                    verbose=0)
    full = finetune(texts, str(pretrained), config=FinetuneConfig(strategy="full", epochs=1, head_epochs=1,
                                                                  batch_size=8, learning_rate=1e-2), verbose=0)
    embedding = lambda result: result.model.get_layer("backbone").get_layer("embedding").embeddings.numpy()
    np.testing.assert_array_equal(embedding(head), before)
    assert not np.allclose(embedding(full), before)


@pytest.fixture(scope="module")
def finetuned(pretrained, texts, tmp_path_factory):
    return finetune_cli(texts, pretrained, tmp_path_factory.mktemp("finetuned") / "run", "--strategy", "head",
                        "--epochs", "2", "--batch-size", "8")


def test_export_all_saved_model_takes_strings_tflite_takes_token_ids(finetuned, texts, tmp_path):
    """`kerastl export --format all`: the SavedModel's serving_default takes raw strings (two batch sizes); the
    TFLite file takes int32 token ids and the vocabulary is written beside it; tokenizing with that vocabulary
    by the recorded rules reproduces Keras' answers; MediaPipe's TextClassifier runs the same file on raw strings
    with Keras' scores (export measured it too); the report and the printed lines say so."""
    import re

    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from kerastl.inputs import text
    from kerastl.train.evaluate import load_classifier

    out = tmp_path / "exported"
    result = CliRunner().invoke(main, ["export", str(finetuned), "--format", "all", "--data", str(texts),
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "held-out texts" in result.output and "takes token ids" in result.output
    assert "via MediaPipe" in result.output and "MediaPipe's TextClassifier runs it on raw strings" in result.output
    report = json.loads((out / "export_report.json").read_text())
    assert report["modality"] == "text" and report["verified_on"]["held_out"]
    for figures in report["exports"].values():
        assert figures["top1_agreement"] == 1.0 and figures["max_abs_diff"] < 1e-4, figures
    tokenizer = report["tokenizer"]
    assert tokenizer["vocabulary_file"] == "vocabulary.txt" and tokenizer["sequence_length"] == 16
    assert report["files"]["vocabulary"] == str(out / "vocabulary.txt")
    # kerastl pretrain's tokenizer, which MediaPipe's regex tokenizer reproduces: exact, and measured so.
    assert tokenizer["standardize"] == text.FOLD_CASE
    assert tokenizer["mediapipe"]["exact"] and tokenizer["mediapipe"]["vocabulary_file"] == "vocab.txt"
    mediapipe = report["exports"]["tflite"]["mediapipe"]
    assert mediapipe["n"] == report["verified_on"]["n"] and mediapipe["top1_agreement"] == 1.0
    assert mediapipe["same_ids"] == 1.0 and mediapipe["max_abs_diff"] < 1e-5 and "note" not in mediapipe

    model, labels = load_classifier(finetuned)
    # Snake_case, non-ASCII punctuation and capitals: where an app that guesses the rules gets other ids.
    samples = text.load_texts(sorted(texts.glob("*/*.txt"))[::5]).tolist() + [
        "Unseen words, only!", "", "«Rain» — snow_storm, ÉTÉ’s “cloud” goal… RECIPE_bake"]
    reference = model.predict(np.asarray(samples, dtype=object), verbose=0)
    serve = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    for n in (1, len(samples)):
        served = serve(texts=tf.constant(samples[:n]))
        np.testing.assert_allclose(served["probabilities"].numpy(), reference[:n], atol=1e-5)
        assert [name.decode() for name in served["class_name"].numpy()] == [
            labels[i] for i in reference[:n].argmax(-1)]

    # What an app does: tokenize by the report's recorded rule with the vocabulary file, then run the .tflite
    # file. The rule is followed as written (tests/test_text_contract.py checks it character by character).
    vocabulary = (out / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert vocabulary[:2] == ["", "[UNK]"]
    assert tokenizer["steps"] == ["cut_at_nul", "split", "fold_case", "lookup", "truncate", "pad"]
    assert (tokenizer["pad_id"], tokenizer["oov_id"]) == (0, 1)
    ids_of = {token: i for i, token in enumerate(vocabulary)}

    def tokenize(sentence):
        words = [w for w in re.split(tokenizer["split_regex"], sentence.split("\0")[0]) if w][:16]
        words = [re.sub("[A-Z]", lambda m: m.group().lower(), w) if re.fullmatch(tokenizer["fold_case_regex"], w)
                 else w for w in words]
        return np.asarray([ids_of.get(word, 1) for word in words] + [0] * (16 - len(words)), dtype=np.int32)

    interpreter = Interpreter(str(out / "model.tflite"))
    interpreter.allocate_tensors()
    (inp,), (outp,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert tuple(inp["shape"]) == (1, 16) and inp["dtype"] == np.int32
    lite = []
    for sentence in samples:
        interpreter.set_tensor(inp["index"], tokenize(sentence)[None])
        interpreter.invoke()
        lite.append(interpreter.get_tensor(outp["index"])[0])
    np.testing.assert_allclose(np.stack(lite), reference, atol=1e-4)

    # What a MediaPipe app does: hand it the strings.
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.text import TextClassifier, TextClassifierOptions

    options = TextClassifierOptions(base_options=BaseOptions(model_asset_path=str(out / "model.tflite")),
                                    max_results=len(labels))
    with TextClassifier.create_from_options(options) as classifier:
        for sentence, expected in zip(samples, reference):
            categories = classifier.classify(sentence).classifications[0].categories
            scores = {c.category_name: c.score for c in categories}
            assert sorted(scores) == sorted(labels)
            np.testing.assert_allclose([scores[label] for label in labels], expected, atol=1e-5)


def test_legacy_tokenizer_exports_and_says_how_often_mediapipe_agrees(texts, tmp_path):
    """A model with Keras' "lower_and_strip_punctuation" tokenizer (the backbones built before kerastl's own)
    still exports with MediaPipe metadata, the nearest regex; the report lists where the two differ and the
    agreement MediaPipe measured, and one printed line says so. Hyphenated words are where they part: Keras
    joins "rain-storm" into one token, MediaPipe splits it."""
    import keras

    from kerastl.backbones.archs import build_text_backbone
    from kerastl.inputs import text

    data = tmp_path / "hyphens"
    for topic in TOPICS:
        (data / topic).mkdir(parents=True)
        for path in sorted((texts / topic).iterdir()):
            words = path.read_text(encoding="utf-8").split()
            (data / topic / path.name).write_text("-".join(words[:3]) + " " + " ".join(words[3:]), encoding="utf-8")
    vocabulary = sorted({w for vocabulary in TOPICS.values() for w in vocabulary} | set(FILLER))
    keras.utils.set_random_seed(0)
    backbone = build_text_backbone("textcnn-s", vocabulary, sequence_length=16, standardize=text.LEGACY_STANDARDIZE)
    backbone.save(tmp_path / "legacy.keras")
    run = finetune_cli(data, tmp_path / "legacy.keras", tmp_path / "run", "--strategy", "head", "--epochs", "2",
                       "--batch-size", "8")
    result = CliRunner().invoke(main, ["export", str(run), "--format", "tflite", "--data", str(data),
                                       "--out", str(tmp_path / "m.tflite")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m.report.json").read_text())
    mediapipe = report["tokenizer"]["mediapipe"]
    assert mediapipe["supported"] and not mediapipe["exact"] and len(mediapipe["differs_when"]) == 3
    measured = report["exports"]["tflite"]["mediapipe"]
    assert measured["same_ids"] < 1.0 and measured["exact_tokenizer"] is False
    (line,) = [line for line in result.output.splitlines() if "only approximates this model's" in line]
    assert "lower_and_strip_punctuation" in line and f"{measured['top1_agreement']:.2%}" in line


@pytest.mark.parametrize("quantize,max_diff", [("float16", 0.01), ("dynamic", 0.1)])
def test_export_quantized_tflite_and_vocabulary_beside_it(finetuned, texts, tmp_path, quantize, max_diff):
    """Quantized text files keep int32 token ids in. The tiny model's probabilities are close to uniform, so
    top-1 agreement is not meaningful here: the probabilities are compared instead."""
    out = tmp_path / "docs.tflite"
    result = CliRunner().invoke(main, ["export", str(finetuned), "--format", "tflite", "--quantize", quantize,
                                       "--data", str(texts), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "docs.report.json").read_text())
    figures = report["exports"]["tflite"]
    assert figures["input"] == {"dtype": "int32", "shape": [1, 16], "scale": 0.0, "zero_point": 0}
    assert figures["n"] == report["verified_on"]["n"] and figures["max_abs_diff"] < max_diff, figures
    assert (tmp_path / "docs.vocab.txt").read_text(encoding="utf-8").startswith("\n[UNK]\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.report.json", "docs.tflite", "docs.vocab.txt"]


def test_export_refuses_full_integer_text(finetuned, texts, tmp_path):
    result = CliRunner().invoke(main, ["export", str(finetuned), "--format", "tflite", "--quantize", "int8",
                                       "--data", str(texts), "--out", str(tmp_path / "m.tflite")])
    one_line_error(result, 2, "--quantize int8 makes text models lose accuracy", "dynamic")
    assert not list(tmp_path.iterdir())


def test_export_without_data_checks_synthetic_texts(finetuned, tmp_path):
    result = CliRunner().invoke(main, ["export", str(finetuned), "--format", "saved_model", "--out",
                                       str(tmp_path / "sm")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "32 synthetic texts" in result.output
    assert json.loads((tmp_path / "sm.report.json").read_text())["exports"]["saved_model"]["top1_agreement"] == 1.0


def test_export_refuses_images_for_a_text_model(finetuned, image_folder, tmp_path):
    result = CliRunner().invoke(main, ["export", str(finetuned), "--format", "all", "--data", str(image_folder),
                                       "--out", str(tmp_path / "out")])
    one_line_error(result, 1, "holds image files but the model takes text input")
    assert not (tmp_path / "out").exists()


def test_the_whole_text_model_does_not_convert_to_builtin_tflite(pretrained, texts, tmp_path):
    """Why `tokenized_model` exists: string ops have no builtin TFLite kernels."""
    import keras
    import tensorflow as tf

    from kerastl.backbones import load_backbone

    model = load_backbone(str(pretrained)).model
    with pytest.raises(Exception):  # noqa: B017 (the converter's error types are internal to TensorFlow)
        model.export(str(tmp_path / "m.tflite"), format="litert", verbose=False,
                     input_signature=[tf.TensorSpec((1,), tf.string)],
                     target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]})
    assert isinstance(model.get_layer("tokenizer"), keras.layers.TextVectorization)


# ---------------------------------------------------------------------------------------------- TF-Hub


@pytest.fixture(scope="module")
def hub_text_module(tmp_path_factory):
    """A TF-Hub-style text embedding: raw strings (batch,) → the mean of word vectors, with its own
    vocabulary table, saved with tf.saved_model.save."""
    import tensorflow as tf

    words = sorted({w for vocabulary in TOPICS.values() for w in vocabulary})

    class TextEmbedding(tf.Module):
        def __init__(self):
            super().__init__()
            initializer = tf.lookup.KeyValueTensorInitializer(tf.constant(words),
                                                              tf.range(1, len(words) + 1, dtype=tf.int64))
            self.table = tf.lookup.StaticHashTable(initializer, default_value=0)
            self.embeddings = tf.Variable(tf.random.stateless_normal((len(words) + 1, 6), seed=(1, 2)))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, texts):
            tokens = tf.strings.split(tf.strings.lower(tf.strings.regex_replace(texts, r"[^\w\s]", "")))
            vectors = tf.ragged.map_flat_values(tf.nn.embedding_lookup, self.embeddings,
                                                tf.ragged.map_flat_values(self.table.lookup, tokens))
            return tf.reduce_mean(vectors, axis=1)

    path = tmp_path_factory.mktemp("hub") / "text_embedding"
    tf.saved_model.save(TextEmbedding(), str(path))
    return path


def test_hub_text_module_is_a_text_backbone(hub_text_module, texts):
    from kerastl.backbones import load_backbone
    from kerastl.train.finetune import FinetuneConfig, finetune

    backbone = load_backbone(f"hub:{hub_text_module}")
    assert backbone.modality == "text" and backbone.input_shape == () and backbone.feature_width == 6
    result = finetune(texts, backbone, config=FinetuneConfig(strategy="full", epochs=1, head_epochs=1,
                                                             batch_size=8), verbose=0)
    assert result.metrics["backbone"]["modality"] == "text" and result.metrics["n"] > 0


def test_hub_text_classifier_exports_as_saved_model_only(hub_text_module, texts, tmp_path):
    """A hub module tokenises inside itself: the SavedModel takes raw strings and agrees with Keras; TFLite is
    refused in one line, before anything is written."""
    runner = CliRunner()
    result = runner.invoke(main, ["finetune", "--data", str(texts), "--backbone", f"hub:{hub_text_module}",
                                  "--strategy", "head", "--epochs", "1", "--batch-size", "8", "--out",
                                  str(tmp_path / "run")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # --trust: the .keras file embeds the module's SavedModel, whose graph runs when it loads.
    result = runner.invoke(main, ["export", str(tmp_path / "run"), "--format", "saved_model", "--data", str(texts),
                                  "--trust", "--out", str(tmp_path / "sm")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "sm.report.json").read_text())["exports"]["saved_model"]
    assert figures["top1_agreement"] == 1.0 and figures["max_abs_diff"] < 1e-5
    result = runner.invoke(main, ["export", str(tmp_path / "run"), "--format", "all", "--data", str(texts), "--trust",
                                  "--out", str(tmp_path / "all")])
    one_line_error(result, 1, "tokenises inside a TF-Hub module", "--format saved_model")
    assert not (tmp_path / "all").exists()


# --------------------------------------------------------------------------------- same input type rule


def test_text_backbone_on_wav_folder(pretrained, saved_models, tmp_path):
    for word in ("yes", "no"):
        (tmp_path / "wavs" / word).mkdir(parents=True)
        (tmp_path / "wavs" / word / "a.wav").write_bytes(b"RIFF....WAVE")
    one_line_error(finetune_quick(tmp_path / "wavs", pretrained, tmp_path / "out"), 1, "holds audio files",
                    "a text backbone", "saved_models/pseudowords-x")
    assert not (tmp_path / "out").exists()


def test_image_backbone_on_text_folder(texts, tiny_backbone_path, saved_models, tmp_path):
    one_line_error(finetune_quick(texts, tiny_backbone_path, tmp_path / "out"), 1, "holds text files",
                    "an image backbone", "saved_models/docs-x")


def test_text_backbone_on_images(pretrained, image_folder, saved_models, tmp_path):
    one_line_error(finetune_quick(image_folder, pretrained, tmp_path / "out"), 1, "holds image files",
                    "a text backbone", "saved_models/glyphs-x")


def test_channel_mismatch_is_one_line(image_folder, saved_models, tmp_path):
    """An image backbone taking 4 channels cannot be fed kerastl's 1- or 3-channel images."""
    import keras

    inputs = keras.Input((16, 16, 4))
    path = tmp_path / "rgba.keras"
    keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs)).save(path)
    one_line_error(finetune_quick(image_folder, path, tmp_path / "out"), 1, "shape (16, 16, 4)",
                    "(height, width, 1 or 3)", "saved_models/glyphs-x")


def test_finetune_without_backbone_picks_the_default_of_the_data_type(texts, saved_models, tmp_path):
    # saved_models/docs-x has a manifest but no weights: the default text backbone was chosen (not the image one).
    one_line_error(CliRunner().invoke(main, ["finetune", "--data", str(texts), "--out", str(tmp_path / "o")],
                                       catch_exceptions=False), 1, "docs-x has a manifest but no backbone.keras")


def test_backbones_listing_shows_text(pretrained, monkeypatch):
    monkeypatch.setenv("KERASTL_SAVED_MODELS", str(pretrained.parent))
    result = CliRunner().invoke(main, ["backbones"], catch_exceptions=False)
    row = next(line for line in result.output.splitlines() if "docs-tiny" in line)
    assert "text" in row and "string" in row
