"""kerastl.reporting.text: the lines the CLI prints, made by the library without printing anything."""

from types import SimpleNamespace

from kerastl.reporting import text


def _metrics(**extra):
    per_class = {"cat": dict(precision=1.0, recall=0.5, f1=0.667, support=2),
                 "a-long-name": dict(precision=0.5, recall=1.0, f1=0.667, support=1)}
    return dict(accuracy=2 / 3, n=3, per_class=per_class, skipped=[], **extra)


def test_finetune_summary_is_lines_and_prints_nothing(capsys):
    metrics = _metrics(backbone=dict(spec="keras:MobileNetV2", weights="imagenet", feature_width=1280),
                       strategy="head", train_examples=12)
    lines = text.finetune_summary_lines(SimpleNamespace(metrics=metrics, files={"model": "out/model.keras"}))
    assert capsys.readouterr().out == ""
    assert all(isinstance(line, str) and "\n" not in line for line in lines)
    assert lines[0] == "" and "accuracy  66.67%" in lines and lines[-1] == "model     out/model.keras"


def test_per_class_table_aligns_on_the_longest_name():
    header, *rows = text.per_class_lines(_metrics()["per_class"])
    assert header == "  class        precision  recall  f1     support"
    assert {len(row) for row in rows} == {len(header)}


def test_evaluate_lines_name_one_skipped_file():
    metrics = _metrics()
    metrics["skipped"] = [{"path": "d/x.png", "reason": "damaged"}, {"path": "d/y.png", "reason": "damaged"}]
    assert text.evaluate_lines(metrics)[-1] == "skipped 2 files (--json lists them), e.g. d/x.png: damaged"
    assert len(text.evaluate_json_lines(metrics)) == 1


def test_export_lines_end_with_the_files():
    report = {"verified_on": {"source": "synthetic", "n": 4}, "keras": {"accuracy": None},
              "exports": {"tflite": dict(quantize="none", bytes=2048, accuracy=None, top1_agreement=1.0,
                                         max_abs_diff=1e-7)},
              "files": {"tflite": "m.tflite"}}
    lines = text.export_lines(report)
    assert lines[:-1] == text.report_lines(report)
    assert "2.0 KB" in lines[2] and lines[-1] == "tflite        m.tflite"
