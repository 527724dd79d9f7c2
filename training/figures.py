"""The figures the marketplace judges the model by, in plain numpy (recomputable anywhere)."""

import numpy as np


def top_k_accuracy(*, true: np.ndarray, ranked: np.ndarray, k: int) -> float:
    """Share of rows whose true index is among the first ``k`` of ``ranked`` (N, >= k)."""
    if len(true) == 0:
        return 0.0
    return float(np.mean([t in row[:k] for t, row in zip(true, ranked, strict=True)]))


def confusion_matrix(*, true: np.ndarray, predicted: np.ndarray, size: int) -> np.ndarray:
    """Counts of (true row, predicted column)."""
    matrix = np.zeros((size, size), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return matrix


def precision_recall_f1(*, true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Binary precision, recall and F1 (0 where undefined), with the counts."""
    true, predicted = true.astype(bool), predicted.astype(bool)
    tp = int(np.sum(true & predicted))
    fp = int(np.sum(~true & predicted))
    fn = int(np.sum(true & ~predicted))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": int(true.sum()),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
    }


def pr_curve(*, true: np.ndarray, scores: np.ndarray) -> dict[str, list[float]]:
    """Precision and recall at every distinct score taken as the threshold (score >= t)."""
    thresholds = np.unique(scores)[::-1]
    precision, recall = [], []
    for threshold in thresholds:
        figures = precision_recall_f1(true=true, predicted=scores >= threshold)
        precision.append(figures["precision"])
        recall.append(figures["recall"])
    return {
        "thresholds": [float(t) for t in thresholds],
        "precision": precision,
        "recall": recall,
    }


def threshold_tune(*, true: np.ndarray, scores: np.ndarray, default: float = 0.5) -> float:
    """The decision threshold with the best F1 on (``true``, ``scores``).

    Candidates are midpoints between consecutive distinct scores, so the threshold does not
    sit on a validation example; ties go to the threshold nearest ``default``. Without any
    positive example the F1 is 0 everywhere and ``default`` is kept.
    """
    if not true.any():
        return default
    distinct = np.unique(scores)
    candidates = np.concatenate([(distinct[:-1] + distinct[1:]) / 2, [default]])
    best, best_f1 = default, -1.0
    for threshold in candidates:
        f1 = precision_recall_f1(true=true, predicted=scores >= threshold)["f1"]
        if f1 > best_f1 + 1e-12 or (
            abs(f1 - best_f1) <= 1e-12 and abs(threshold - default) < abs(best - default)
        ):
            best, best_f1 = float(threshold), f1
    return round(best, 6)
