"""The settings of a fine-tuning run in two parts (`HParams`, `ModelOptions`) and in one (`FinetuneConfig`):
their checks, the round trip between the forms, and that both forms make the same run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import pytest

import kerastl
from kerastl.errors import UsageError
from kerastl.train.options import FinetuneConfig, HParams, ModelOptions

# FinetuneConfig's fields in the order they always had (positional arguments keep their meaning).
CONFIG_FIELDS = ["strategy", "epochs", "head_epochs", "batch_size", "learning_rate", "fine_tune_factor", "optimizer",
                 "momentum", "dropout", "pooling", "augment", "from_scratch", "shots", "validation_fraction", "seed",
                 "cache_features", "shuffle", "validate_each_epoch", "deterministic", "balance_classes",
                 "trainable_layers", "frozen_layers", "head_solver", "min_steps", "schedule", "early_stopping",
                 "baseline", "distribute", "augment_views", "label_smoothing", "layer_decay", "mixup", "cutmix", "cross_validation", "folds", "budget"]


def _names(cls) -> list[str]:
    return [field.name for field in dataclasses.fields(cls)]


# ---------------------------------------------------------------------------------------------------------
# Checks


@pytest.mark.parametrize("change, message", [
    (dict(epochs=0), "--epochs must be an integer >= 1. Received: 0"),
    (dict(epochs=2.5), "--epochs must be an integer >= 1. Received: 2.5"),
    (dict(head_epochs=-1), "--head-epochs must be an integer >= 0. Received: -1"),
    (dict(batch_size=0), "--batch-size must be an integer >= 1. Received: 0"),
    (dict(learning_rate=0), "--learning-rate must be in (0, 10], or auto. Received: 0"),
    (dict(learning_rate=11), "--learning-rate must be in (0, 10], or auto. Received: 11"),
    (dict(fine_tune_factor=1.5), "fine_tune_factor must be in (0, 1]. Received: 1.5"),
    (dict(optimizer="rmsprop"), "--optimizer must be one of ('adam', 'sgd'). Received: rmsprop"),
    (dict(momentum=1.0), "--momentum must be in [0, 1). Received: 1.0"),
    (dict(head_solver="sgd"), "--head-solver must be one of ('steps', 'probe'). Received: sgd"),
    (dict(distribute="sideways"), ("--distribute must be one of ('mirrored', 'multiworker') (or None: the default "
     "strategy). Received: sideways")),
    (dict(head_solver="probe", cache_features=False), ("--head-solver probe fits the head on cached features, "
     "which cache_features=False turns off; drop it, or use --head-solver steps")),
    (dict(augment_views=0), "--augment-views must be an integer >= 1. Received: 0"),
])
def test_hparams_name_the_invalid_value(change, message):
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        HParams(**change).validate()
    # The flat config says the same, word for word (the CLI and older callers show these messages).
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        FinetuneConfig(**change).validate()


@pytest.mark.parametrize("change, message", [
    (dict(strategy="top:0"), "--strategy must be head, full, top:N (N >= 1) or auto. Received: top:0"),
    (dict(strategy="everything"), "--strategy must be head, full, top:N (N >= 1) or auto. Received: everything"),
    (dict(pooling="sum"), "pooling must be one of ('avg', 'max'). Received: pooling=sum"),
    (dict(dropout=1.0), "dropout must be in [0, 1). Received: dropout=1.0"),
    (dict(dropout=-0.1), "dropout must be in [0, 1). Received: dropout=-0.1"),
])
def test_model_options_name_the_invalid_value(change, message):
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        ModelOptions(**change).validate()
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        FinetuneConfig(**change).validate()


def test_the_first_invalid_value_is_named():
    with pytest.raises(UsageError, match="--epochs"):
        HParams(epochs=0, batch_size=0, optimizer="x").validate()
    # FinetuneConfig: the strategy first (as before the split), then the hyperparameters, then the head.
    with pytest.raises(UsageError, match="--strategy"):
        FinetuneConfig(strategy="x", epochs=0).validate()
    with pytest.raises(UsageError, match="--epochs"):
        FinetuneConfig(epochs=0, dropout=2.0).validate()


def test_defaults_are_valid():
    HParams().validate()
    ModelOptions().validate()
    FinetuneConfig().validate()


# ---------------------------------------------------------------------------------------------------------
# One form and the other


def test_the_parts_split_the_config_fields_exactly():
    hparams, options = _names(HParams), _names(ModelOptions)
    assert not set(hparams) & set(options)
    assert _names(FinetuneConfig) == CONFIG_FIELDS
    assert sorted(hparams + options) == sorted(CONFIG_FIELDS)
    # The same defaults in both forms.
    assert dataclasses.asdict(FinetuneConfig()) == {**dataclasses.asdict(HParams()),
                                                     **dataclasses.asdict(ModelOptions())}


def test_config_and_parts_round_trip():
    config = FinetuneConfig(strategy="top:2", epochs=3, head_epochs=1, batch_size=8, learning_rate=0.01,
                            optimizer="sgd", dropout=0.1, pooling="max", augment=True, shots=4, seed=5,
                            deterministic=True, trainable_layers=["conv*"], frozen_layers=["bn1"])
    hparams, options = config.hparams, config.model_options
    assert isinstance(hparams, HParams) and isinstance(options, ModelOptions)
    assert (hparams.epochs, hparams.optimizer, hparams.seed, hparams.shots) == (3, "sgd", 5, 4)
    assert (options.strategy, options.pooling, options.trainable_layers) == ("top:2", "max", ["conv*"])
    assert FinetuneConfig.from_parts(hparams, options) == config
    assert FinetuneConfig.from_parts(hparams, options).hparams == hparams
    assert FinetuneConfig.from_parts(hparams, options).model_options == options
    # Either part left out takes its defaults.
    assert FinetuneConfig.from_parts() == FinetuneConfig()
    assert FinetuneConfig.from_parts(HParams(epochs=2)) == FinetuneConfig(epochs=2)
    assert FinetuneConfig.from_parts(model_options=ModelOptions(strategy="head")) == FinetuneConfig(strategy="head")


def test_the_parts_are_copies_and_the_flat_config_stays_a_plain_dataclass():
    config = FinetuneConfig()
    config.hparams.epochs = 99
    assert config.epochs is None  # the step budget
    config.epochs = 3  # attribute writes, as before
    assert config.hparams.epochs == 3
    assert dataclasses.replace(config, strategy="full").model_options.strategy == "full"
    assert FinetuneConfig("head", 2).epochs == 2  # positional, in the old order


def test_from_parts_refuses_swapped_parts():
    with pytest.raises(UsageError, match="hparams must be a kerastl.HParams. Received: ModelOptions"):
        FinetuneConfig.from_parts(ModelOptions(), HParams())


def test_the_resume_fingerprint_of_the_settings_is_pinned():
    """`run_fingerprint` hashes `dataclasses.asdict(config)`. The split into parts kept the hashes; the recipe's
    settings (head_solver, min_steps, schedule, early_stopping, baseline) changed them once, and the settings
    added since (distribute, augment_views, the regularisers, cross-validation with its folds and budget) once more each (a backup of an older kerastl is then not resumed,
    and the run says so). These pins catch any other change. Built from the parts, the same settings hash the same."""
    def sha(config):
        return hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str).encode()
                              ).hexdigest()

    from kerastl.train.resume import run_fingerprint

    assert sha(FinetuneConfig()) == "f00eb61c3dc4d0fa0fa9f1f7bf4d679df2e1e6d3d7665060fa566184dc252b6c"
    config = FinetuneConfig(strategy="top:2", epochs=3, head_epochs=1, batch_size=8, learning_rate=0.01,
                            optimizer="sgd", dropout=0.1, pooling="max", augment=True, shots=4, seed=5,
                            deterministic=True, trainable_layers=["conv*"], frozen_layers=["bn1"])
    assert sha(config) == "bac5f6da8c50318f5433d373a5f29bc473e4e4a266fe750841c7465fa06bffea"
    rebuilt = FinetuneConfig.from_parts(config.hparams, config.model_options)
    assert run_fingerprint("finetune", options={}, config=dataclasses.asdict(rebuilt)) == run_fingerprint(
        "finetune", options={}, config=dataclasses.asdict(config))


def test_exported_from_kerastl():
    assert kerastl.HParams is HParams and kerastl.ModelOptions is ModelOptions
    assert kerastl.FinetuneConfig is FinetuneConfig
    assert {"HParams", "ModelOptions", "FinetuneConfig"} <= set(kerastl.__all__)
    from kerastl.train.finetune import FinetuneConfig as old_path

    assert old_path is FinetuneConfig


# ---------------------------------------------------------------------------------------------------------
# finetune


def test_finetune_refuses_config_together_with_parts():
    for parts in (dict(hparams=HParams()), dict(model_options=ModelOptions()),
                  dict(hparams=HParams(), model_options=ModelOptions())):
        with pytest.raises(UsageError, match="either config=.* not both"):
            kerastl.finetune(config=FinetuneConfig(), **parts)
    with pytest.raises(UsageError, match=re.escape("give HParams(...) as hparams= instead")):
        kerastl.finetune(config=HParams())


def test_parts_and_config_give_the_same_run_on_the_digits():
    """The embedded digits and the shipped backbone, both phases of `full`: the two forms of the same settings
    train the same model."""
    digits = kerastl.digits_folder()
    hparams = HParams(epochs=1, head_epochs=1, shots=2, batch_size=8, seed=3)
    options = ModelOptions(strategy="full", dropout=0.1)
    parts = kerastl.finetune(digits, hparams=hparams, model_options=options, verbose=0).metrics
    flat = kerastl.finetune(digits, config=FinetuneConfig(strategy="full", dropout=0.1, epochs=1, head_epochs=1,
                                                          shots=2, batch_size=8, seed=3), verbose=0).metrics
    assert parts["config"] == flat["config"]
    assert parts["strategy"] == flat["strategy"] == "full"
    assert [row["phase"] for row in parts["history"]] == ["head", "full"]
    assert parts["accuracy"] == flat["accuracy"] and parts["confusion_matrix"] == flat["confusion_matrix"]
    for mine, theirs in zip(parts["history"], flat["history"], strict=True):
        assert (mine.pop("phase"), mine.pop("epoch")) == (theirs.pop("phase"), theirs.pop("epoch"))
        assert mine == pytest.approx(theirs, rel=1e-5), (mine, theirs)


class Killed(BaseException):
    """Stands for a kill after training, before the outputs are written."""


def test_a_run_killed_with_config_resumes_with_the_parts(tmp_path, image_folder, tiny_backbone_path, monkeypatch):
    import kerastl.train.finetune as module

    real = module.save_outputs

    def kill(*args, **kwargs):
        raise Killed()

    monkeypatch.setattr(module, "save_outputs", kill)
    out = tmp_path / "run"
    with pytest.raises(Killed):
        kerastl.finetune(image_folder, str(tiny_backbone_path), out=out, verbose=0,
                         config=FinetuneConfig(strategy="head", epochs=2, batch_size=8))
    monkeypatch.setattr(module, "save_outputs", real)
    resumed = kerastl.finetune(image_folder, str(tiny_backbone_path), out=out, verbose=0,
                               hparams=HParams(epochs=2, batch_size=8), model_options=ModelOptions(strategy="head"))
    # Both epochs were in the backup: nothing trains again, and no "not resuming" note.
    assert resumed.metrics["history"] == [] and resumed.metrics["notes"] == []
