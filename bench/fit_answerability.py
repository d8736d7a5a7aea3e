"""Fit the answerability model (knowledge/answerability.py) and report it honestly.

    .venv/bin/python bench/fit_answerability.py [--write]

1. Builds a knowledge base of the five sample policies in a temporary directory.
2. Computes the features of every question of the *tuning* sets (tests/data/tune, dev, extra,
   holdout), each asked as its ``consortium`` would.
3. 5-fold cross-validation: for each fold a logistic regression (numpy, L2) is fitted on the other
   folds; the threshold is the one that, over the out-of-fold probabilities, refuses the most
   unanswerable questions while refusing at most ``MAX_FALSE_REFUSALS`` of the answerable ones.
4. Fits the final model on all tuning questions, prints it (``--write`` puts it into
   knowledge/answerability.py) and, separately, the figures on tests/data/heldout.jsonl, which
   takes no part in fitting.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.config import Settings  # noqa: E402
from bot.context import build_context  # noqa: E402
from knowledge.answerability import FEATURES, Model, features  # noqa: E402
from knowledge.evaluation import load_questions  # noqa: E402
from knowledge.samples import sample_policies  # noqa: E402

TUNING = ["tune", "dev", "extra", "holdout"]
HELD_OUT = "heldout"
MAX_FALSE_REFUSALS = float(__import__("os").environ.get("MAX_FALSE_REFUSALS", "0.03"))
L2 = 0.05
SEED = 7


def matrix(kb, names: list[str]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    rows, labels, questions = [], [], []
    for name in names:
        for q in load_questions(REPO / "tests" / "data" / f"{name}.jsonl"):
            query, hits = kb._retrieve(q["question"], consortium=q.get("consortium"), k=10)
            values = features(query, hits)
            rows.append([values[f] for f in FEATURES])
            labels.append(1 if q.get("answerable", True) else 0)
            questions.append(q)
    return np.array(rows, dtype=float), np.array(labels), questions


def fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logistic regression with class weights (the sets hold fewer unanswerable questions)."""
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = np.c_[(x - mean) / scale, np.ones(len(x))]
    weights = np.where(y == 1, 0.5 / max(y.mean(), 1e-6), 0.5 / max(1 - y.mean(), 1e-6))
    w = np.zeros(z.shape[1])
    for _ in range(4000):
        p = 1 / (1 + np.exp(-z @ w))
        grad = z.T @ (weights * (p - y)) / len(y) + L2 * np.r_[w[:-1], 0.0]
        w -= 0.3 * grad
    return mean, scale, w


def predict(model: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    mean, scale, w = model
    return 1 / (1 + np.exp(-(np.c_[(x - mean) / scale, np.ones(len(x))] @ w)))


def pick_threshold(p: np.ndarray, y: np.ndarray) -> float:
    best, best_refused = 0.5, -1.0
    for t in np.unique(np.r_[p, 0.5]):
        false_refusals = ((p < t) & (y == 1)).sum() / max((y == 1).sum(), 1)
        refused = ((p < t) & (y == 0)).sum() / max((y == 0).sum(), 1)
        if false_refusals <= MAX_FALSE_REFUSALS and refused > best_refused:
            best, best_refused = float(t), refused
    return best


def rates(p: np.ndarray, y: np.ndarray, t: float) -> dict:
    return {
        "answerable_refused": round(float(((p < t) & (y == 1)).sum() / max((y == 1).sum(), 1)), 3),
        "unanswerable_refused": round(float(((p < t) & (y == 0)).sum() / max((y == 0).sum(), 1)), 3),
        "n": int(len(y)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true", help="write the fitted model into knowledge/answerability.py")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = build_context(Settings(_env_file=None, data_dir=Path(tmp)))
        for path, consortium in sample_policies():
            ctx.kb.ingest_path(path, uploaded_by="bench", consortium=consortium)
        x, y, _ = matrix(ctx.kb, TUNING)
        xh, yh, _ = matrix(ctx.kb, [HELD_OUT])
        ctx.close()

    rng = np.random.default_rng(SEED)
    folds = rng.permutation(len(y)) % 5
    oof = np.zeros(len(y))
    for k in range(5):
        train, test = folds != k, folds == k
        oof[test] = predict(fit(x[train], y[train]), x[test])
    threshold = pick_threshold(oof, y)
    for t in (0.2, 0.3, 0.4, 0.5, 0.6):
        print(f"  out-of-fold at threshold {t}: {rates(oof, y, t)}", file=sys.stderr)
    final = fit(x, y)
    mean, scale, w = final
    model = Model(tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in scale),
                  tuple(round(float(v), 4) for v in w[:-1]), round(float(w[-1]), 4), round(threshold, 4))
    print(json.dumps({
        "features": FEATURES,
        "cross_validated_on_tuning_sets": rates(oof, y, threshold),
        "fitted_on_tuning_sets": rates(predict(final, x), y, threshold),
        "held_out_never_fitted": rates(predict(final, xh), yh, threshold),
        "coverage_cut_0.5_on_held_out": rates(xh[:, 0], yh, 0.5),
    }, ensure_ascii=False, indent=2))
    print(f"MODEL = {model!r}")
    if args.write:
        path = REPO / "knowledge" / "answerability.py"
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"MODEL = Model\((.|\n)*?\n\)\n", f"MODEL = {_pretty(model)}\n", text, count=1)
        path.write_text(text, encoding="utf-8")
        print(f"written to {path}")


def _pretty(model: Model) -> str:
    return (f"Model(\n    mean={model.mean},\n    scale={model.scale},\n    coef={model.coef},\n"
            f"    bias={model.bias},\n    threshold={model.threshold},\n)")


if __name__ == "__main__":
    main()
