"""Do the policies answer this question? One calibrated score instead of one coverage cut.

A single cut on lexical coverage refuses colloquial and English questions whose right clause is
ranked first (their words are not the policy's words), and answers on-topic questions the
policies do not settle (a named hospital's bed count: the hospital is there, the beds are not).
Several signals together separate the two better:

* ``coverage`` — IDF-weighted share of the question's concepts in the best clause;
* ``coverage5`` — the best such share among the top five clauses;
* ``dense`` / ``dense_max`` — multilingual sentence-vector similarity of the best / any candidate;
* ``heading`` — share of the question's concepts in the best clause's own title;
* ``unknown`` / ``unknown_max`` — share of the question's weight on words no policy uses (停车场,
  Wi-Fi), in all / of the heaviest such word;
* ``unknown_subject`` — how much more specific (in general Chinese) the most specific word no
  policy uses is than the most specific word they do use: "停车场" in 停车场收费标准 is what the
  question is about, 收费 and 标准 are how;
* ``missing`` / ``missing3`` — the heaviest single concept the best clause / all of the three best
  clauses lack (the "bed count" of an on-topic question the policies do not settle);
* ``scatter`` — how much more of the question the top five clauses cover together than the best
  one alone: the hospital in one clause, the beds in another, none that says both;
* ``cue_missing`` — the question wants a kind of answer (who, how much money, how many) that the
  best clause does not hold (it names the 总院长 but not who it is);
* ``gap`` — how far the best clause is ahead of the second;
* ``english``, ``named`` — the question is English / names one of the documents.

They are combined by logistic regression. The coefficients and the threshold below are *fitted*
by ``bench/fit_answerability.py``: 5-fold cross-validation on the tuning sets (tests/data: tune,
dev, extra, holdout) picks the threshold; the held-out set (tests/data/heldout.jsonl) is never
used for fitting. Re-run the script after changing a feature and paste its output here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FEATURES: tuple[str, ...] = (
    "coverage", "coverage5", "dense", "dense_max", "heading", "unknown", "unknown_max", "unknown_subject", "missing",
    "missing3", "scatter", "cue_missing", "gap", "english", "named",
)


@dataclass(frozen=True)
class Model:
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    bias: float
    threshold: float

    def probability(self, values: dict[str, float]) -> float:
        z = self.bias + sum(
            c * (values[name] - m) / s for name, m, s, c in zip(FEATURES, self.mean, self.scale, self.coef)
        )
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def answerable(self, values: dict[str, float]) -> bool:
        return self.probability(values) >= self.threshold


# --- fitted by bench/fit_answerability.py (see its output for the cross-validated figures) ---
MODEL = Model(
    mean=(0.7436, 0.7555, 0.3434, 0.3942, 0.2065, 0.1648, 0.1074, 0.0867, 0.1702, 0.0455, 0.0594, 0.1211, 0.1955, 0.1579, 0.3526),
    scale=(0.2938, 0.2944, 0.1789, 0.1457, 0.2909, 0.2809, 0.1729, 0.2369, 0.1747, 0.0995, 0.1216, 0.3262, 0.181, 0.3646, 0.4778),
    coef=(0.2758, 0.4799, 0.3914, 0.2475, 0.1388, -0.2631, -0.1591, -0.4593, -0.3862, 0.0708, -0.177, -0.5695, 0.2246, 0.3334, 0.4662),
    bias=0.9248,
    threshold=0.2439,
)


def features(query, hits: list) -> dict[str, float]:
    """The signals of ``FEATURES`` for a parsed question and its ranked hits (best first)."""
    if not hits:
        return dict.fromkeys(FEATURES, 0.0)
    top = hits[0]
    second = hits[1].score if len(hits) > 1 else 0.0
    missing = missing3 = unknown_max = unknown_subject = scatter = 0.0
    if query is not None and query.concepts:
        rarity = getattr(query, "rarity", None) or [1.0] * len(query.concepts)
        unknown_r = [r for r, k in zip(rarity, query.known) if not k]
        known_r = [r for r, k in zip(rarity, query.known) if k]
        if unknown_r and not getattr(query, "english", False):
            unknown_subject = max(0.0, max(unknown_r) - max(known_r, default=0.0))
        unknown_max = max((w / query.total for w, k in zip(query.weights, query.known) if not k), default=0.0)
        tokens = top.chunk.tokens
        missing = max(
            (w / query.total for c, w in zip(query.concepts, query.weights) if not any(f <= tokens for f in c)),
            default=0.0,
        )
        union = frozenset().union(*(h.chunk.tokens for h in hits[:5]))
        scatter = max(0.0, query.share(union) - top.coverage)
        near = [h.chunk.tokens for h in hits[:3]]
        missing3 = max(
            (w / query.total for c, w, k in zip(query.concepts, query.weights, query.known)
             if k and not any(f <= t for f in c for t in near)),
            default=0.0,
        )
    return {
        "coverage": top.coverage,
        "coverage5": max(h.coverage for h in hits[:5]),
        "dense": top.dense,
        "dense_max": max(h.dense for h in hits),
        "heading": top.heading,
        "unknown": top.unknown_share,
        "unknown_max": unknown_max,
        "unknown_subject": unknown_subject,
        "missing": missing,
        "missing3": missing3,
        "scatter": scatter,
        "cue_missing": 1.0 if getattr(query, "cue", None) is not None and not query.cue.search(top.chunk.body) else 0.0,
        "gap": (top.score - second) / top.score if top.score > 0 else 0.0,
        "english": 1.0 if getattr(query, "english", False) else 0.0,
        "named": 1.0 if top.named else 0.0,
    }


def is_answerable(values: dict[str, float], model: Model = MODEL) -> bool:
    return model.answerable(values)


__all__ = ["FEATURES", "MODEL", "Model", "features", "is_answerable"]
