"""Evaluating a finished training run: figures (JSON) and a self-contained HTML report.

Predictions on the run's held-out validation split are written first, as
``predictions.parquet`` (the batch format) and ``scores.parquet`` (every probability); every
figure of the report is computed from those two files and the labels, so anyone can recompute
it. Plots are PNG images embedded in the page: no file or script is fetched to read it.
"""

import base64
import html
import io
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

from classification.registry.multi_task import heads_by_name
from training import figures
from training.dataset import (
    CATEGORIES,
    PREDICTION_SCHEMA,
    TAGS,
    DataSource,
    GarmentLabels,
    datasets_load,
)
from training.exceptions import TrainingError
from training.model import single_head_model
from training.pipeline import _tensorflow, dataset_build
from training.services import MODEL_FILE, training_summary_read

PREDICTIONS_FILE = "predictions.parquet"
SCORES_FILE = "scores.parquet"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"


def scores_columns() -> list[str]:
    return ["uuid", *[f"p {c}" for c in CATEGORIES], *[f"p {t}" for t in TAGS]]


def predictions_tables(
    *, uuids: list[str], category_scores: np.ndarray, tag_scores: np.ndarray, thresholds: list
) -> tuple[pa.Table, pa.Table]:
    """(predictions in the batch format, every probability) for the given rows."""
    ranked = np.argsort(-category_scores, axis=1)
    present = tag_scores >= np.asarray(thresholds)[np.newaxis, :]
    predictions = pa.table(
        {
            "uuid": uuids,
            "category1": [CATEGORIES[row[0]] for row in ranked],
            "category2": [CATEGORIES[row[1]] for row in ranked],
            **{tag: present[:, i].astype(np.int8) for i, tag in enumerate(TAGS)},
        },
        schema=PREDICTION_SCHEMA,
    )
    columns = scores_columns()
    values = np.concatenate([category_scores, tag_scores], axis=1)
    scores = pa.table({"uuid": uuids, **{name: values[:, i] for i, name in enumerate(columns[1:])}})
    return predictions, scores


def figures_from_predictions(
    *, predictions: pa.Table, scores: pa.Table, labels: GarmentLabels, thresholds: list
) -> dict:
    """The model figures of the report, from the two prediction files and the labels alone."""
    index = {uuid: row for row, uuid in enumerate(labels.uuids)}
    rows = np.array([index[uuid] for uuid in predictions.column("uuid").to_pylist()])
    true = labels.categories[rows]
    first = np.array([CATEGORIES.index(c) for c in predictions.column("category1").to_pylist()])
    second = np.array([CATEGORIES.index(c) for c in predictions.column("category2").to_pylist()])
    ranked = np.stack([first, second], axis=1)
    truth = labels.tags[rows]
    majority = int(np.bincount(labels.categories).argmax())
    tags = {}
    for column, tag in enumerate(TAGS):
        predicted = np.asarray(predictions.column(tag).to_pylist())
        tag_scores = np.asarray(scores.column(f"p {tag}").to_pylist())
        tags[tag] = {
            **figures.precision_recall_f1(true=truth[:, column], predicted=predicted),
            "threshold": float(thresholds[column]),
            "pr_curve": figures.pr_curve(true=truth[:, column], scores=tag_scores),
            # Always answering "present": the F1 a model must beat on a rare tag.
            "f1_always_present": figures.precision_recall_f1(
                true=truth[:, column], predicted=np.ones(len(rows))
            )["f1"],
        }
    return {
        "rows": len(rows),
        "top1_accuracy": figures.top_k_accuracy(true=true, ranked=ranked, k=1),
        "top2_accuracy": figures.top_k_accuracy(true=true, ranked=ranked, k=2),
        "chance_top1_accuracy": 1 / len(CATEGORIES),
        "majority_class": CATEGORIES[majority],
        "majority_top1_accuracy": float(np.mean(true == majority)),
        "confusion_matrix": figures.confusion_matrix(
            true=true, predicted=first, size=len(CATEGORIES)
        ).tolist(),
        "tags": tags,
        "tag_macro_f1": float(np.mean([tags[t]["f1"] for t in TAGS])),
    }


def data_analysis(
    *, labels: GarmentLabels, images_dir: Path | None = None, sample: int = 2000
) -> dict:
    """Category, colour and tag balance, tag co-occurrence and image sizes (of up to
    ``sample`` images, read from their headers only)."""
    counts = np.bincount(labels.categories, minlength=len(CATEGORIES))
    colours: dict[str, int] = {}
    for colour in labels.colours:
        colours[colour] = colours.get(colour, 0) + 1
    tags = labels.tags.astype(np.int64)
    widths, heights = [], []
    for row in range(min(sample, len(labels))):
        with Image.open(labels.image(row, images_dir=images_dir)) as image:
            widths.append(image.width)
            heights.append(image.height)
    per_item = np.bincount(tags.sum(axis=1), minlength=len(TAGS) + 1)
    return {
        "rows": len(labels),
        "categories": dict(zip(CATEGORIES, counts.tolist(), strict=True)),
        "colours": dict(sorted(colours.items(), key=lambda item: -item[1])),
        "tag_frequencies": dict(zip(TAGS, tags.sum(axis=0).tolist(), strict=True)),
        "tags_per_item": {str(k): int(v) for k, v in enumerate(per_item.tolist())},
        "tag_cooccurrence": (tags.T @ tags).tolist(),
        "image_sizes": {
            "sampled": len(widths),
            "width": {"min": min(widths), "median": statistics.median(widths), "max": max(widths)},
            "height": {
                "min": min(heights),
                "median": statistics.median(heights),
                "max": max(heights),
            },
        },
    }


def litert_latencies_ms(
    *, contents: dict[str, bytes], input_size: int, batch: int, runs: int = 20, threads: int = 2
) -> dict[str, float]:
    """Median LiteRT invoke time per image, in milliseconds, of each model at batch ``batch``.

    The models are timed in turns (one invoke of each per round, ``runs`` rounds): on a shared
    machine a burst of load then weighs on every model alike, instead of on whichever one was
    being timed, so their ratios hold.
    """
    pixels = np.random.default_rng(0).uniform(-1, 1, (batch, input_size, input_size, 3))
    interpreters = {}
    for name, content in contents.items():
        interpreter = Interpreter(model_content=content, num_threads=threads)
        (details,) = interpreter.get_input_details()
        interpreter.resize_tensor_input(details["index"], (batch, input_size, input_size, 3))
        interpreter.allocate_tensors()
        interpreter.set_tensor(details["index"], pixels.astype(np.float32))
        interpreter.invoke()  # warm-up
        interpreters[name] = interpreter
    timings: dict[str, list[float]] = {name: [] for name in contents}
    for _ in range(runs):
        for name, interpreter in interpreters.items():
            started = time.perf_counter()
            interpreter.invoke()
            timings[name].append((time.perf_counter() - started) * 1000 / batch)
    return {name: statistics.median(values) for name, values in timings.items()}


def model_costs(*, model: Any, input_size: int, batch: int = 16, runs: int = 20) -> dict:
    """Size and LiteRT latency of the multi-task model, of a category-only and a tags-only
    model over the same backbone, and of the two separate models together."""
    tf = _tensorflow()
    variants = {
        "multi_task": model,
        "category_only": single_head_model(model=model, head="category"),
        "tags_only": single_head_model(model=model, head="tags"),
    }
    contents = {
        name: tf.lite.TFLiteConverter.from_keras_model(variant).convert()
        for name, variant in variants.items()
    }
    single = litert_latencies_ms(contents=contents, input_size=input_size, batch=1, runs=runs)
    batched = litert_latencies_ms(
        contents=contents, input_size=input_size, batch=batch, runs=max(3, runs // 4)
    )
    costs: dict[str, dict] = {
        name: {
            "size_mb": len(content) / 1e6,
            "latency_ms_batch1": single[name],
            f"latency_ms_per_image_batch{batch}": batched[name],
        }
        for name, content in contents.items()
    }
    costs["two_separate_models"] = {
        key: costs["category_only"][key] + costs["tags_only"][key] for key in costs["multi_task"]
    }
    multi, category = costs["multi_task"], costs["category_only"]
    costs["comparison"] = {
        "latency_ratio_vs_category_only": multi["latency_ms_batch1"]
        / category["latency_ms_batch1"],
        "latency_ratio_vs_two_models": multi["latency_ms_batch1"]
        / costs["two_separate_models"]["latency_ms_batch1"],
        "size_ratio_vs_two_models": multi["size_mb"] / costs["two_separate_models"]["size_mb"],
        "goal_latency_ratio_at_most": 1.2,
    }
    costs["comparison"]["goal_met"] = bool(
        costs["comparison"]["latency_ratio_vs_category_only"] <= 1.2
    )
    return costs


# --- The report ------------------------------------------------------------------------------


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _plots(*, analysis: dict, summary: dict, model_figures: dict, examples: dict) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    figure, axes = plt.subplots(1, 3, figsize=(15, 3.5))
    axes[0].bar(list(analysis["categories"]), list(analysis["categories"].values()))
    axes[0].set_title("Categories")
    axes[0].tick_params(axis="x", rotation=30)
    axes[1].bar(list(analysis["colours"]), list(analysis["colours"].values()))
    axes[1].set_title("Colours")
    axes[1].tick_params(axis="x", rotation=90, labelsize=7)
    axes[2].bar(list(analysis["tag_frequencies"]), list(analysis["tag_frequencies"].values()))
    axes[2].set_title("Tag frequencies")
    plots["balance"] = _png(figure)

    figure, axis = plt.subplots(figsize=(4, 3.5))
    axis.imshow(np.asarray(analysis["tag_cooccurrence"]), cmap="Blues")
    for (i, j), value in np.ndenumerate(np.asarray(analysis["tag_cooccurrence"])):
        axis.text(j, i, str(value), ha="center", va="center")
    axis.set_xticks(range(len(TAGS)), TAGS)
    axis.set_yticks(range(len(TAGS)), TAGS)
    axis.set_title("Tag co-occurrence")
    plots["cooccurrence"] = _png(figure)

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    offset = 0
    for phase, rows in summary["history"].items():
        epochs = [offset + row["epoch"] + 1 for row in rows]
        for key, axis in (("loss", axes[0]), ("category_accuracy", axes[1])):
            axis.plot(epochs, [row.get(key) for row in rows], marker="o", label=f"{phase} train")
            axis.plot(
                epochs, [row.get(f"val_{key}") for row in rows], marker="s", label=f"{phase} val"
            )
            axis.set_title(key)
            axis.set_xlabel("epoch")
            axis.legend(fontsize=7)
        offset = epochs[-1] if epochs else offset
    plots["curves"] = _png(figure)

    matrix = np.asarray(model_figures["confusion_matrix"])
    figure, axis = plt.subplots(figsize=(5, 4.5))
    axis.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        axis.text(j, i, str(value), ha="center", va="center")
    axis.set_xticks(range(len(CATEGORIES)), CATEGORIES, rotation=45, ha="right")
    axis.set_yticks(range(len(CATEGORIES)), CATEGORIES)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("Confusion matrix (top-1)")
    plots["confusion"] = _png(figure)

    figure, axes = plt.subplots(1, len(TAGS), figsize=(12, 3.5))
    for axis, tag in zip(axes, TAGS, strict=True):
        curve = model_figures["tags"][tag]["pr_curve"]
        axis.plot(curve["recall"], curve["precision"])
        figures_at = model_figures["tags"][tag]
        axis.scatter([figures_at["recall"]], [figures_at["precision"]], color="red", zorder=3)
        axis.set_title(f"{tag} (threshold {figures_at['threshold']:.2f})")
        axis.set_xlabel("recall")
        axis.set_ylabel("precision")
        axis.set_xlim(0, 1.02)
        axis.set_ylim(0, 1.02)
    plots["pr_curves"] = _png(figure)

    rows = [images for images in examples.values() if images]
    if rows:
        columns = max(len(images) for images in rows)
        figure, axes = plt.subplots(
            len(examples), columns, figsize=(1.6 * columns, 1.8 * len(examples)), squeeze=False
        )
        for r, (category, images) in enumerate(examples.items()):
            for c in range(columns):
                axis = axes[r][c]
                axis.axis("off")
                if c < len(images):
                    axis.imshow(images[c])
                if c == 0:
                    axis.set_title(category, fontsize=8, loc="left")
        plots["examples"] = _png(figure)
    return plots


def _table_html(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(value)}</td>" for value in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def report_html(*, report: dict, plots: dict) -> str:
    """The report page: every plot inline as a data: URL, no external resource."""
    model, costs = report["model"], report["costs"]

    def image(key: str, alt: str) -> str:
        if key not in plots:
            return ""
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{plots[key]}">'

    tag_rows = [
        [tag, f["threshold"], f["precision"], f["recall"], f["f1"], f["support"]]
        for tag, f in model["tags"].items()
    ]
    cost_rows = [
        [name, *[values[key] for key in costs["multi_task"]]]
        for name, values in costs.items()
        if name != "comparison"
    ]
    comparison = costs["comparison"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Garment model report</title>
<style>body{{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse;margin:.5rem 0 1rem}}
td,th{{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head>
<body>
<h1>Garment listing model: evaluation</h1>
<p>Run <code>{html.escape(report["run_dir"])}</code>, backbone weights
{html.escape(report["backbone"])}, input {report["input_size"]} px; {model["rows"]} held-out
validation rows (stratified by category). Figures recomputable from
<code>{PREDICTIONS_FILE}</code>, <code>{SCORES_FILE}</code> and the labels.</p>
<h2>Data</h2>
<p>{report["data"]["rows"]} labelled rows; image sizes (sampled
{report["data"]["image_sizes"]["sampled"]}): width {report["data"]["image_sizes"]["width"]},
height {report["data"]["image_sizes"]["height"]}; tags per item
{report["data"]["tags_per_item"]}.</p>
{image("balance", "Category, colour and tag balance")}
{image("cooccurrence", "Tag co-occurrence")}
<h3>Examples per category</h3>{image("examples", "Example images per category")}
<h2>Training</h2>{image("curves", "Training curves")}
<h2>Category</h2>
<p>Top-1 accuracy <b>{model["top1_accuracy"]:.3f}</b>, top-2 accuracy
<b>{model["top2_accuracy"]:.3f}</b> (chance {model["chance_top1_accuracy"]:.3f}; always
answering the majority class {html.escape(model["majority_class"])}:
{model["majority_top1_accuracy"]:.3f}).</p>
{image("confusion", "Confusion matrix")}
<h2>Tags</h2>
{_table_html(tag_rows, ["tag", "threshold", "precision", "recall", "F1", "support"])}
{image("pr_curves", "Precision-recall curves")}
<h2>Size and speed (LiteRT, 2 threads)</h2>
{_table_html(cost_rows, ["model", *costs["multi_task"]])}
<p>The multi-task model takes {comparison["latency_ratio_vs_category_only"]:.2f}x the latency
of the category model alone (goal: at most 1.2x; met: {comparison["goal_met"]}),
{comparison["latency_ratio_vs_two_models"]:.2f}x the latency and
{comparison["size_ratio_vs_two_models"]:.2f}x the size of two separate models.</p>
</body></html>
"""


def validation_predictions_write(
    *, labels: GarmentLabels, images_dir: Path, run_dir: Path, output_dir: Path
) -> Any:
    """Predict the finished run's validation rows into ``output_dir``'s ``predictions.parquet``
    (the batch format) and ``scores.parquet`` (every probability). Returns the loaded model.
    Raises TrainingError when the run is not finished."""
    summary = training_summary_read(run_dir=run_dir)
    index = {uuid: row for row, uuid in enumerate(labels.uuids)}
    absent = [uuid for uuid in summary["split"]["validation"] if uuid not in index]
    if absent:
        raise TrainingError(
            f"{len(absent)} validation rows of the run are in none of the data sets given "
            f"(uuid {absent[0]}, ...): give every data set it was trained on."
        )
    rows = np.array([index[uuid] for uuid in summary["split"]["validation"]])
    keras = _tensorflow().keras
    model = keras.models.load_model(str(Path(run_dir) / MODEL_FILE))
    validation = dataset_build(
        labels=labels,
        rows=rows,
        images_dir=Path(images_dir),
        input_size=summary["input_size"],
        preprocessing=summary["preprocessing"],
        batch_size=32,
    )
    scores = heads_by_name(
        model=model, outputs=model.predict(validation.map(lambda image, _: image), verbose=0)
    )
    predictions, score_table = predictions_tables(
        uuids=[labels.uuids[row] for row in rows],
        category_scores=np.asarray(scores["category"]),
        tag_scores=np.asarray(scores["tags"]),
        thresholds=summary["tag_thresholds"],
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(predictions, output_dir / PREDICTIONS_FILE)
    pq.write_table(score_table, output_dir / SCORES_FILE)
    return model


def model_evaluate(
    *,
    run_dir: Path,
    output_dir: Path,
    data_path: Path | None = None,
    images_dir: Path | None = None,
    datasets: Sequence[DataSource] = (),
    latency_runs: int = 20,
) -> dict:
    """Evaluate the finished run in ``run_dir`` on its validation split, read from
    ``data_path`` / ``images_dir`` or the data sets it was trained on (``datasets``); write
    ``predictions.parquet``, ``scores.parquet``, ``report.json`` and ``report.html`` into
    ``output_dir``. Returns the report. Raises TrainingError / DatasetError."""
    if data_path is not None and images_dir is not None:
        datasets = [DataSource(data_path=Path(data_path), images_dir=Path(images_dir))]
    output_dir = Path(output_dir)
    summary = training_summary_read(run_dir=run_dir)
    labels = datasets_load(sources=list(datasets))
    images_dir = datasets[0].images_dir
    model = validation_predictions_write(
        labels=labels, images_dir=images_dir, run_dir=run_dir, output_dir=output_dir
    )
    # Recomputed from the files just written, as a reader of the report would.
    model_figures = figures_from_predictions(
        predictions=pq.read_table(output_dir / PREDICTIONS_FILE),
        scores=pq.read_table(output_dir / SCORES_FILE),
        labels=labels,
        thresholds=summary["tag_thresholds"],
    )
    report = {
        "run_dir": str(run_dir),
        "backbone": summary["backbone"],
        "input_size": summary["input_size"],
        "labels": summary["labels"],
        "tag_labels": summary["tag_labels"],
        "tag_thresholds": summary["tag_thresholds"],
        "data": data_analysis(labels=labels),
        "training": {"history": summary["history"], "epoch_seconds": summary["epoch_seconds"]},
        "model": model_figures,
        "costs": model_costs(model=model, input_size=summary["input_size"], runs=latency_runs),
    }
    examples: dict[str, list] = {}
    for category_index, category in enumerate(CATEGORIES):
        found = np.flatnonzero(labels.categories == category_index)[:6]
        examples[category] = [np.asarray(Image.open(labels.image(int(r)))) for r in found]
    plots = _plots(
        analysis=report["data"], summary=summary, model_figures=model_figures, examples=examples
    )
    (output_dir / REPORT_JSON).write_text(json.dumps(report, indent=1))
    (output_dir / REPORT_HTML).write_text(report_html(report=report, plots=plots))
    return report
