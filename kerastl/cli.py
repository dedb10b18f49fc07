"""`kerastl`: the command line, a thin layer over the library.

Each command parses its options, calls one library function and prints the lines `kerastl.reporting.text`
makes of the result (the library itself never prints). TensorFlow is imported inside the commands,
so that `kerastl --help` and `kerastl COMMAND --help` stay instant. Every error is one line on stderr: exit
code 2 for bad usage, 1 for a runtime problem, never a traceback unless `--debug` is given.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import traceback

import click

from kerastl.errors import KerastlError, UsageError
from kerastl.reporting import text

# `--strategy` names two different things, kept for compatibility: in `finetune` which layers train, in
# `pretrain` the tf.distribute strategy. Each help text says which, and points at the other.
STRATEGY_HELP = ("Which layers train (not a tf.distribute strategy; that is pretrain's --strategy): head (Option 1: "
                 "train only the new layer), full (Option 2: then every layer), top:N, or auto")
DISTRIBUTION_HELP = ("tf.distribute strategy, how training spreads over devices and machines (not which layers "
                     "train; that is finetune's --strategy); multiworker reads TF_CONFIG.")


class _NonEmptyPath(click.Path):
    """click.Path refusing "", which Python reads as the current directory: `--out "$DIR"` with DIR unset would
    otherwise write into it."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value == "":
            self.fail("empty path; give a file or directory name", param, ctx)
        return super().convert(value, param, ctx)


class _NumberRange(click.FloatRange):
    """click.FloatRange refusing nan, which passes its bounds check (every comparison with nan is false)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number.", param, ctx)
        return number


class _RateOrAuto(_NumberRange):
    """A learning rate in (0, 10], or "auto" (the learning-rate range test's suggestion, each phase)."""

    name = "rate"

    def convert(self, value, param, ctx):
        if value == "auto":
            return value
        return super().convert(value, param, ctx)


def _quiet_tensorflow() -> None:
    """Keeps TensorFlow's start-up chatter out of the user's terminal.

    TensorFlow 2.21 writes absl log lines (oneDNN, CUDA probing) to stderr before any log level applies, so
    stderr is silenced at the file-descriptor level while TensorFlow imports and initialises its devices.
    `--debug` keeps everything.
    """
    if _debug_requested(sys.argv[1:]):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging
    import warnings

    if "tensorflow" not in sys.modules:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"keras(\..*)?")


def _debug_requested(argv) -> bool:
    """Whether the group's --debug flag is given. The group's options are all flags and come before the command,
    so only that leading run counts: a later "--debug" is another option's value (`--out --debug`) or an
    unknown option, and must not turn tracebacks on."""
    return "--debug" in itertools.takewhile(lambda arg: arg.startswith("-"), argv)


# click >= 8.2 raises this for a group run without arguments; older versions print the help themselves.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class KerastlGroup(click.Group):
    """Turns every exception into one line and an exit code (2: usage, 1: runtime, 130: interrupted)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        debug = _debug_requested(sys.argv[1:] if args is None else list(args))
        try:
            result = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                  standalone_mode=False, **extra)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except _NO_ARGS_IS_HELP as error:  # bare `kerastl`: the help, as click shows it, not squeezed into a line
            error.show()
            sys.exit(error.exit_code)
        except click.UsageError as error:
            command = f" {error.ctx.command_path}" if error.ctx is not None else ""
            hint = f" (see `{command.strip() or 'kerastl'} --help`)"
            _fail(f"{error.format_message()}{hint}", 2, debug)
        except UsageError as error:
            _fail(str(error), 2, debug)
        except KerastlError as error:
            _fail(str(error), 1, debug)
        except (click.exceptions.Abort, KeyboardInterrupt):
            _fail("interrupted; outputs already in place are untouched", 130, debug)
        except click.ClickException as error:
            _fail(error.format_message(), error.exit_code, debug)
        except Exception as error:  # noqa: BLE001  (anything unforeseen still gets one line)
            message = str(error).strip().splitlines()
            detail = message[-1] if message else ""
            _fail(f"unexpected {type(error).__name__}: {detail[:300]} (rerun with --debug for the traceback)",
                  1, debug)
        if isinstance(result, int) and result:
            sys.exit(result)
        sys.exit(0)


def _echo(lines) -> None:
    """Prints lines from `kerastl.reporting`, one by one, to stdout."""
    for line in lines:
        click.echo(line)


def _fail(message: str, code: int, debug: bool):
    if debug:
        traceback.print_exc()
    click.echo(f"Error: {' '.join(message.split())}", err=True)
    sys.exit(code)


@click.group(cls=KerastlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("--offline", is_flag=True,
              help="Never download: use cached weights and modules only (same as KERASTL_OFFLINE=1).")
@click.version_option(package_name="kerastl")
def main(debug, offline):
    """Transfer learning with Keras 3: pretrain, fine-tune, evaluate and export image, audio and text classifiers.

    Downloads (Keras ImageNet weights, TF-Hub modules) go to $KERASTL_CACHE (default ~/.cache/kerastl),
    verified and resumable. KERASTL_TRUSTED_HUB_HOSTS=host1,host2 restricts hub: URLs to those hosts.
    """
    if offline:
        os.environ["KERASTL_OFFLINE"] = "1"


@main.command()
@click.option("--data", type=_NonEmptyPath(file_okay=False), default=None,
              help="Class-per-folder images, WAV files or .txt files. Default: scikit-learn's bundled "
                   "handwritten digits.")
@click.option("--backbone", default=None, metavar="SPEC",
              help="keras:<Name>, hub:<url-or-dir>, kerashub:<preset-or-dir>, a .keras file, a SavedModel dir or "
                   "saved_models/NAME. Default: the shipped pretrained backbone.")
@click.option("--weights", default=None, metavar="imagenet|none|PATH",
              help="Weights of a keras: backbone (none: random, only with --from-scratch).")
@click.option("--cut", default=None, metavar="LAYER",
              help="Cut the backbone at this layer's output (outer/inner inside a nested model).")
@click.option("--strategy", default="auto", show_default=True, help=STRATEGY_HELP)
@click.option("--shots", type=click.IntRange(min=1), default=None, help="Train on N images per class.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs per phase, an override. Default: a budget of at least --min-steps optimizer steps and "
                   "10 epochs.")
@click.option("--head-epochs", type=click.IntRange(min=0), default=None,
              help="Epochs of the head phase before full/top:N fine-tuning. Default: as --epochs.")
@click.option("--min-steps", type=click.IntRange(min=1), default=300, show_default=True,
              help="The fewest optimizer steps of a phase without --epochs (small sets train this long).")
@click.option("--schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True,
              help="Learning rate over a phase: a short warmup, then a half cosine to 0; or constant.")
@click.option("--early-stopping/--no-early-stopping", default=True, show_default=True,
              help="Stop a phase when the validation loss stops improving, and keep its best epoch.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--learning-rate", type=_RateOrAuto(min=0, min_open=True, max=10), default=1e-3,
              show_default=True, help="Head learning rate; full/top:N fine-tuning uses a tenth of it. auto: each "
              "phase runs the learning-rate range test first and takes its suggestion (see kerastl lr-find).")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True,
              help="adam, or sgd with momentum 0.9.")
@click.option("--head-solver", type=click.Choice(["steps", "probe"]), default="steps", show_default=True,
              help="How the head is fitted on cached features: --epochs of the optimizer, or solved as a "
                   "logistic regression with its L2 penalty chosen by cross-validation.")
@click.option("--label-smoothing", type=_NumberRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Train on (1 - S) * label + S / classes instead of the hard labels, in every optimizer phase.")
@click.option("--layer-decay", type=_NumberRange(0, 1, min_open=True), default=None,
              help="full/top:N: the head keeps the fine-tuning rate, each backbone unit below it gets it times "
                   "DECAY**depth (the top unit at depth 1). Default: one rate for all.")
@click.option("--mixup", type=_NumberRange(min=0), default=0.0, show_default=True, metavar="ALPHA",
              help="Images: blend training pairs and their labels, shares drawn from Beta(ALPHA, ALPHA); 0 is off.")
@click.option("--cutmix", type=_NumberRange(min=0), default=0.0, show_default=True, metavar="ALPHA",
              help="Images: paste a box of another training image, labels weighted by its area; 0 is off.")
@click.option("--image-size", type=click.IntRange(8, 1024), default=None,
              help="Input size for keras:, hub: and kerashub: image backbones (others have a fixed input; another size is refused).")
@click.option("--augment", is_flag=True, help="Images: random shifts, rotations, zooms and contrast; audio: "
              "time shifts and gain. Text has none.")
@click.option("--augment-views", type=click.IntRange(min=1), default=8, show_default=True,
              help="With --augment: the views of each training example (the first unaugmented) whose features "
                   "the head trains on, computed once.")
@click.option("--from-scratch", is_flag=True, help="Same architecture with random weights: the no-transfer baseline.")
@click.option("--validation-split", type=_NumberRange(0, 1, max_open=True), default=None,
              help="Hold out this share of each class (a fixed split). Default: 0.2, or none with "
                   "--cross-validation.")
@click.option("--cross-validation", is_flag=True,
              help="k-fold cross-validation chooses the strategy (auto: head, top:N or full), the training "
                   "length and the learning rate on your labels, then the model is refit on all of them.")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Folds of cross-validation (fewer when the smallest class has fewer examples).")
@click.option("--budget", type=_NumberRange(min=0, min_open=True), default=600.0, show_default=True,
              metavar="SECONDS", help="Time cross-validation and auto's comparison may take; candidates that "
                                       "would not fit are skipped and reported.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--deterministic", is_flag=True,
              help="TensorFlow op determinism: with --seed, a run resumed after a crash ends with the weights of "
                   "an uninterrupted one (a killed run resumes from its last epoch either way).")
@click.option("--trust", is_flag=True, help="Allow model files that run code (Lambda layers). See SECURITY.md.")
@click.option("--distribute", type=click.Choice(["mirrored", "multiworker"]), default=None,
              help="tf.distribute strategy (not which layers train; that is --strategy): mirrored over this "
                   "machine's devices, multiworker over the machines TF_CONFIG names; --batch-size is then per "
                   "replica. Default: one device.")
@click.option("--out", required=True, type=_NonEmptyPath(), help="Output directory.")
def finetune(data, backbone, weights, cut, strategy, shots, epochs, head_epochs, min_steps, schedule,
             early_stopping, batch_size, learning_rate,
             optimizer, head_solver, label_smoothing, layer_decay, mixup, cutmix, image_size, augment,
             augment_views, from_scratch, validation_split, cross_validation, folds, budget, seed, deterministic,
             trust, distribute, out):
    """Fine-tune a pretrained backbone with a new output layer on your classes.

    Writes OUT/model.keras, OUT/labels.txt, OUT/metrics.json and OUT/report.png.
    """
    _quiet_tensorflow()
    from kerastl.train.finetune import finetune as run
    from kerastl.train.options import HParams, ModelOptions

    hparams = HParams(epochs=epochs, head_epochs=head_epochs, batch_size=batch_size, learning_rate=learning_rate,
                      optimizer=optimizer, augment=augment, shots=shots, validation_fraction=validation_split,
                      seed=seed, deterministic=deterministic, head_solver=head_solver,
                      min_steps=min_steps, schedule=schedule, early_stopping=early_stopping, distribute=distribute,
                      augment_views=augment_views, label_smoothing=label_smoothing, layer_decay=layer_decay,
                      mixup=mixup, cutmix=cutmix, cross_validation=cross_validation, folds=folds,
                      budget=budget)
    model_options = ModelOptions(strategy=strategy, from_scratch=from_scratch)
    # Checked before the digits note, and the strategy first, as finetune checks them.
    model_options.validate()
    hparams.validate()
    if data is None:
        _echo(text.no_data_lines())
    result = run(data, backbone, out=out, hparams=hparams, model_options=model_options, weights=weights, cut=cut,
                 image_size=image_size, trust=trust, verbose=1 if sys.stdout.isatty() else 2)
    _echo(text.finetune_summary_lines(result))


@main.command("lr-find")
@click.argument("data", type=_NonEmptyPath(file_okay=False))
@click.option("--backbone", default=None, metavar="SPEC", help="As finetune's --backbone. Default: the shipped "
              "pretrained backbone that suits the data.")
@click.option("--weights", default=None, metavar="imagenet|none|PATH",
              help="Weights of a keras: backbone (none: random, only with --from-scratch).")
@click.option("--strategy", default="auto", show_default=True,
              help="The finetune strategy whose last phase is tested: head (the new layer on cached features), "
                   "full or top:N (after the head is trained), or auto.")
@click.option("--from-scratch", is_flag=True, help="Test the whole network from random weights.")
@click.option("--shots", type=click.IntRange(min=1), default=None, help="Train on N examples per class.")
@click.option("--validation-split", type=_NumberRange(0, 1, max_open=True), default=None,
              help="As finetune's: the examples held out are not tested. Default: as finetune splits.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option("--augment", is_flag=True, help="As finetune's --augment (the head then trains on the whole model).")
@click.option("--lr-min", type=_NumberRange(min=0, min_open=True, max=10), default=1e-7, show_default=True)
@click.option("--lr-max", type=_NumberRange(min=0, min_open=True, max=100), default=10.0, show_default=True)
@click.option("--steps", type=click.IntRange(10, 10_000), default=100, show_default=True,
              help="The most steps (the test stops earlier once the loss diverges).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--trust", is_flag=True, help="Allow model files that run code (Lambda layers). See SECURITY.md.")
@click.option("--out", type=_NonEmptyPath(), default=None, help="Directory for lr_find.json and lr_find.png "
              "(other files in it are kept). Default: print only.")
def lr_find(data, backbone, weights, strategy, from_scratch, shots, validation_split, batch_size, optimizer, augment,
            lr_min, lr_max, steps, seed, trust, out):
    """The learning-rate range test: train briefly with the rate rising from --lr-min to --lr-max, and suggest
    a rate (fastai's valley rule) for the phase finetune would train last with these options.
    """
    _quiet_tensorflow()
    from kerastl.train.lr_find import lr_find as run
    from kerastl.train.options import HParams, ModelOptions
    from kerastl.train.range_test import check_range

    hparams = HParams(batch_size=batch_size, optimizer=optimizer, augment=augment, shots=shots,
                      validation_fraction=validation_split, seed=seed)
    model_options = ModelOptions(strategy=strategy, from_scratch=from_scratch)
    model_options.validate()
    hparams.validate()
    check_range(lr_min, lr_max, steps)
    _echo(text.lr_find_lines(run(data, backbone, out=out, hparams=hparams, model_options=model_options,
                                 weights=weights, trust=trust, lr_min=lr_min, lr_max=lr_max, steps=steps)))


@main.command()
@click.argument("model", type=_NonEmptyPath())
@click.option("--data", required=True, type=_NonEmptyPath(), help="Class-per-folder images, WAV or .txt files.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--json", "as_json", is_flag=True, help='Print {"accuracy", "n", "per_class", "skipped"} as JSON.')
@click.option("--trust", is_flag=True, help="Allow model files that run code. See SECURITY.md.")
def evaluate(model, data, batch_size, as_json, trust):
    """Evaluate MODEL (a finetune output directory or a .keras file) on a class-per-folder directory."""
    _quiet_tensorflow()
    from kerastl.train.evaluate import evaluate as run

    metrics = run(model, data, batch_size=batch_size, trust=trust)
    _echo(text.evaluate_json_lines(metrics) if as_json else text.evaluate_lines(metrics))


@main.command()
@click.argument("model", type=_NonEmptyPath())
@click.argument("files", nargs=-1, required=True, type=_NonEmptyPath())
@click.option("--trust", is_flag=True, help="Allow model files that run code. See SECURITY.md.")
def predict(model, files, trust):
    """Classify FILES (images, WAV or .txt, as the model takes): one line per file with path, label and
    probability."""
    _quiet_tensorflow()
    from kerastl.train.evaluate import predict as run

    _echo(text.predict_lines(run(model, files, trust=trust)))


@main.command()
@click.argument("target", metavar="MODEL|SPEC")
@click.option("--image-size", type=click.IntRange(8, 1024), default=None, help="Input size for keras:/hub:/kerashub: specs.")
@click.option("--trust", is_flag=True, help="Allow model files that run code. See SECURITY.md.")
def inspect(target, image_size, trust):
    """Print a table of layers: name, type, output shape, parameters, trainable."""
    _quiet_tensorflow()
    from kerastl.inspection import describe_target

    _echo(describe_target(target, image_size=image_size, trust=trust))


@main.command()
def backbones():
    """List the backbone specs kerastl knows: our saved_models/ entries and the Keras applications."""
    _quiet_tensorflow()
    from kerastl.inspection import describe_backbones

    _echo(describe_backbones())


@main.command()
@click.option("--data", "source", required=True, metavar="SOURCE", type=_NonEmptyPath(),
              help="A class-per-folder directory (images, WAV or .txt files), tfds:NAME[:SPLIT], synthetic:NAME "
                   "(images: glyphs, fractals; audio: pseudowords) or corpus:NAME (text: python-docs, "
                   "python-docs-files, python-docs-wide, python-docs-wide-files).")
@click.option("--arch", required=True, help="A keras.applications name (e.g. MobileNetV2) or smallnet-s|m|l; "
              "smallnet-s|m|l for audio (on the log-mel spectrogram); textcnn-s|m|l for text.")
@click.option("--image-size", type=click.IntRange(8, 1024), default=28, show_default=True)
@click.option("--channels", type=click.Choice(["1", "3"]), default=None,
              help="Input channels. Default: 1 for synthetic sources, 3 otherwise.")
@click.option("--classes", type=click.IntRange(min=2), default=1000, show_default=True,
              help="Classes of a synthetic source.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Total steps instead of --epochs.")
@click.option("--steps-per-epoch", type=click.IntRange(min=1), default=500, show_default=True,
              help="Steps per epoch of an endless source.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--learning-rate", type=_NumberRange(min=0, min_open=True, max=10), default=2e-3,
              show_default=True)
@click.option("--precision", type=click.Choice(["auto", "float32", "mixed"]), default="auto", show_default=True,
              help="auto measures float32 against mixed (float16 on GPU, bfloat16 on CPU) and XLA on/off.")
@click.option("--xla/--no-xla", "xla", default=None, help="Force XLA on or off (default: measured).")
@click.option("--strategy", "distribution", type=click.Choice(["auto", "mirrored", "multiworker"]),
              default="auto", show_default=True, help=DISTRIBUTION_HELP)
@click.option("--validation-steps", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--description", default="", help="Free text for the manifest.")
@click.option("--default", "is_default", is_flag=True, help="Mark as `kerastl finetune`'s default backbone.")
@click.option("--deterministic", is_flag=True,
              help="TensorFlow op determinism and no timed precision/XLA choice: a run resumed after a crash "
                   "ends with the weights of an uninterrupted one.")
@click.option("--logdir", type=_NonEmptyPath(), default=None, help="TensorBoard logs. Default: beside --out.")
@click.option("--sample-rate", type=click.IntRange(8000, 96000), default=16000, show_default=True,
              help="Audio: the backbone's sample rate (mono waveforms).")
@click.option("--clip-seconds", type=_NumberRange(0.25, 30), default=1.0, show_default=True,
              help="Audio: the clip length the backbone takes.")
@click.option("--sequence-length", type=click.IntRange(4, 4096), default=64, show_default=True,
              help="Text: tokens per text (longer texts are truncated).")
@click.option("--vocabulary-size", type=click.IntRange(100, 1_000_000), default=16000, show_default=True,
              help="Text: the most frequent tokens of the training texts kept in the vocabulary.")
@click.option("--out", required=True, type=_NonEmptyPath(), help="Output directory, e.g. saved_models/NAME.")
def pretrain(source, arch, image_size, channels, classes, epochs, steps, steps_per_epoch, batch_size,
             learning_rate, precision, xla, distribution, validation_steps, seed, description, is_default,
             deterministic, logdir, sample_rate, clip_seconds, sequence_length, vocabulary_size, out):
    """Supervised pre-training of a backbone (Step 1), written with a manifest to OUT."""
    _quiet_tensorflow()
    from kerastl.pretraining.run import PretrainConfig
    from kerastl.pretraining.run import pretrain as run

    config = PretrainConfig(source=source, arch=arch, image_size=image_size,
                            channels=int(channels) if channels else None, classes=classes, epochs=epochs,
                            steps=steps, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                            learning_rate=learning_rate, precision=precision, jit_compile=xla,
                            distribution=distribution, validation_steps=validation_steps, seed=seed,
                            description=description, default=is_default, deterministic=deterministic,
                            sample_rate=sample_rate,
                            clip_seconds=clip_seconds, sequence_length=sequence_length,
                            vocabulary_size=vocabulary_size)
    import shlex

    result = run(config, out, verbose=1 if sys.stdout.isatty() else 2, log_dir=logdir,
                 command=" ".join(shlex.quote(a) for a in ["kerastl", *sys.argv[1:]]))
    _echo(text.pretrain_summary_lines(result))


@main.command()
@click.argument("model", type=_NonEmptyPath())
@click.option("--format", "fmt", required=True, type=click.Choice(["saved_model", "tflite", "all"]),
              help="saved_model (TF Serving), tflite (LiteRT/MediaPipe, phones) or all.")
@click.option("--quantize", type=click.Choice(["none", "float16", "dynamic", "int8", "int8-per-tensor"]),
              default="none", show_default=True,
              help="TFLite weights: none (float32), float16, dynamic (int8 weights), int8 (everything; images take "
                   "uint8; needs --data to calibrate) or int8-per-tensor (smaller, usually less accurate).")
@click.option("--data", type=_NonEmptyPath(), default=None,
              help="The model's class-per-folder data (images, WAVs or .txt): exports are checked on the held-out "
                   "part (the split recorded in metrics.json, as finetune made it) and int8 calibrates on the rest. "
                   "Default: synthetic inputs, agreement only.")
@click.option("--max-accuracy-drop", type=_NumberRange(0, 1), default=None, metavar="X",
              help="Fail (exit 1, nothing written) if an export's accuracy is more than X below Keras' "
                   "(a fraction: 0.01 = one point). Needs --data.")
@click.option("--trust", is_flag=True, help="Allow model files that run code. See SECURITY.md.")
@click.option("--out", required=True, type=_NonEmptyPath(),
              help="tflite: the .tflite file; saved_model: the SavedModel directory; all: a directory receiving "
                   "saved_model/, model.tflite and export_report.json.")
def export(model, fmt, quantize, data, max_accuracy_drop, trust, out):
    """Export MODEL (a finetune output directory or a .keras file) for serving or phones, checked against Keras.

    Both formats take raw inputs (preprocessing is inside). The SavedModel's serving_default signature takes
    uint8 `images` (serving_float: float32 0-255), float32 `waveforms` or string `texts`, and returns
    probabilities, class_index and class_name; labels travel as assets/labels.txt. The .tflite files have
    MediaPipe metadata (labels included); a grayscale model's .tflite takes RGB; a text model's .tflite takes
    token ids, with its vocabulary written beside it, and its metadata lets MediaPipe's TextClassifier take
    raw strings (the report says how often it agrees with Keras). Each export is run against Keras; the
    report is printed and written as JSON (m.tflite: m.report.json; DIR: DIR.report.json; all:
    OUT/export_report.json). Files appear only when complete and, with --max-accuracy-drop, only when
    accurate enough.
    """
    _quiet_tensorflow()
    from kerastl.export import ExportRejected, check_options
    from kerastl.export import export as run

    check_options(fmt, quantize, data, max_accuracy_drop)  # before the slow imports and model loading
    try:
        report = run(model, format=fmt, quantize=quantize, data=data, max_accuracy_drop=max_accuracy_drop,
                     out=out, trust=trust)
    except ExportRejected as rejected:
        _echo(text.report_lines(rejected.report))
        raise
    _echo(text.export_lines(report))


if __name__ == "__main__":
    main()
