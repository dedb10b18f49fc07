"""Layer tables: a model's layers as rows (`layer_table`) and any rows as aligned text (`format_table`). Pure
presentation: they take a model or rows and load nothing (`kerastl.inspection` loads what is inspected)."""

from __future__ import annotations


def layer_table(model) -> list[tuple[str, str, str, int, bool]]:
    """Rows `(name, type, output shape, parameters, trainable)`, nested models expanded as `outer/inner`.

    A layer counts as trainable when it and every model containing it are trainable.
    """
    import keras

    rows = []

    def visit(container, prefix, parent_trainable):
        for layer in container.layers:
            trainable = parent_trainable and layer.trainable
            name = f"{prefix}{layer.name}"
            try:
                shape = str(tuple(layer.output.shape))
            except (AttributeError, ValueError):
                shape = "?"
            params = int(sum(int(w.numpy().size) for w in layer.weights))
            rows.append((name, type(layer).__name__, shape, params, trainable))
            if isinstance(layer, keras.Model):
                visit(layer, f"{name}/", trainable)

    visit(model, "", model.trainable)
    return rows


def format_table(rows, header) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()
    return [line(header), line(["-" * w for w in widths]), *[line(r) for r in rows]]
