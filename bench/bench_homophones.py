"""Homophone corrector figures: precision and recall, build time and memory, latency.

Run with ``.venv/bin/python bench/bench_homophones.py [--quick] [--details]`` (about 20 s; --quick
skips the 100x corpora). Prints figures; it asserts nothing (the gates live in
tests/test_homophones.py).

- the hand-written lists of tests/test_homophones.py: typos fixed / total (the slips left alone
  on purpose included), false corrections / clean questions;
- the repository's clean questions (tests/data dev, extra, tune; not the held-out sets): false
  corrections; and what the tune set's 'typo' questions become;
- leave-one-document-out: the corrector is built from four sample policies and run over every
  comma-delimited clause of the fifth (policy text has no typos, so every change is a false
  correction, and the text is full of terms and names the other documents never use);
- synthetic slips: a corpus word (jieba's reading of the corpus, ≥ 2 occurrences) in a question
  template, one character replaced by a common same-pinyin character, as an IME would;
- the same with ``fuzzy=True``, on slips of the IME fuzzy pairs (zh/z, n/l, an/ang …) too;
- the same with every pypinyin heteronym reading indexed (a child process), for comparison;
- build time, index size and peak memory (tracemalloc) for the sample corpus and for synthetic
  corpora 100x its size (~2.3M CJK characters, 500 documents): a character-trigram Markov text
  over the samples, and the same with 3 % random substitutions (pessimistic: most 4- and 5-grams
  are new, and the junk makes same-sounding n-grams that real text does not have);
- per-question latency p50/p95 on each.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import random
import re
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import knowledge.homophones as homophones  # noqa: E402
from knowledge.homophones import QUESTION_WORDS, HomophoneCorrector, _fuzzy, char_readings  # noqa: E402

SAMPLES = REPO / "knowledge" / "samples"
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def _load_lists():
    spec = importlib.util.spec_from_file_location("test_homophones", REPO / "tests" / "test_homophones.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.TYPO_QUESTIONS + mod.HARD_TYPOS, mod.CLEAN_QUESTIONS


def _texts() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(SAMPLES.glob("*.txt"))]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def hand_lists(c: HomophoneCorrector, details: bool) -> None:
    typos, clean = _load_lists()
    fixed = [t for t, e in typos if c.correct(t)[0] == e]
    wrong = [(t, c.correct(t)) for t, e in typos if c.correct(t)[1] and c.correct(t)[0] != e]
    false = [(q, c.correct(q)[1]) for q in clean if c.correct(q)[1]]
    print(f"hand lists: typos fixed {len(fixed)}/{len(typos)} (miscorrected {len(wrong)}), "
          f"false corrections {len(false)}/{len(clean)} clean")
    if details:
        for t, e in typos:
            if c.correct(t)[0] != e:
                print("   miss:", t, "→", c.correct(t))
        for q, ch in false:
            print("   false:", q, ch)


def repo_questions(c: HomophoneCorrector, details: bool) -> None:
    clean, typo = [], []
    for name in ("dev.jsonl", "extra.jsonl", "tune.jsonl"):
        for line in (REPO / "tests" / "data" / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                d = json.loads(line)
                (typo if d.get("kind") == "typo" else clean).append(d["question"])
    false = [(q, c.correct(q)[1]) for q in clean if c.correct(q)[1]]
    changed = [(q, c.correct(q)[1]) for q in typo if c.correct(q)[1]]
    print(f"repo questions (dev+extra+tune): false corrections {len(false)}/{len(clean)} clean; "
          f"{len(changed)}/{len(typo)} 'typo' questions changed")
    if details:
        for q, ch in false:
            print("   false:", q, ch)
        for q in typo:
            print("   typo:", q, c.correct(q)[1])


_CLAUSE = re.compile(r"[^。；;！？!?，,：:]+")


def leave_one_out(details: bool) -> None:
    paths = sorted(SAMPLES.glob("*.txt"))
    texts = [p.read_text(encoding="utf-8") for p in paths]
    total = changed = 0
    examples = []
    for k, p in enumerate(paths):
        c = HomophoneCorrector(texts[:k] + texts[k + 1:], extra_words=QUESTION_WORDS)
        joined = re.sub(r"\s+", "", texts[k])  # hard-wrapped lines join up
        for clause in _CLAUSE.findall(joined):
            if sum(1 for ch in clause if CJK.match(ch)) < 4:
                continue
            total += 1
            _, ch = c.correct(clause)
            if ch:
                changed += 1
                examples.append((p.name[:6], clause[:40], ch))
    print(f"leave-one-document-out clauses: false corrections {changed}/{total} "
          f"({100 * changed / max(1, total):.2f} %)")
    if details:
        for e in examples:
            print("   false:", *e)


def _homophone_chars() -> dict[str, list[str]]:
    """primary reading → common characters with it (what an IME offers first)."""
    import jieba

    jieba.dt.check_initialized()
    freq = jieba.dt.FREQ
    by: dict[str, list[str]] = {}
    for ch, f in freq.items():
        if len(ch) == 1 and CJK.match(ch) and f >= 300:
            r = char_readings(ch)
            if r:
                by.setdefault(r[0], []).append(ch)
    return by


def _fuzzy_neighbours(syl: str, by: dict[str, list[str]]) -> list[str]:
    out = []
    for other, chars in by.items():
        if other != syl and _fuzzy(other) == _fuzzy(syl):
            out.extend(chars)
    return out


TEMPLATES = ["{w}是什么？", "请问{w}有哪些要求", "关于{w}有啥规定", "{w}怎么办理？", "咱们的{w}归谁管"]


def synthetic(c: HomophoneCorrector, texts: list[str], fuzzy_pairs: bool, label: str, details: bool,
              n: int = 400) -> None:
    import jieba

    words = Counter()
    for t in texts:
        joined = re.sub(r"\s+", "", t)
        for w in jieba.cut(joined, HMM=False):
            if 2 <= len(w) <= 4 and all(CJK.match(ch) for ch in w):
                words[w] += 1
    vocab = sorted(w for w, k in words.items() if k >= 2)
    by = _homophone_chars()
    rng = random.Random(8)
    cases = []
    tries = 0
    while len(cases) < n and tries < 20 * n:
        tries += 1
        w = rng.choice(vocab)
        k = rng.randrange(len(w))
        r = char_readings(w[k])
        if not r:
            continue
        pool = _fuzzy_neighbours(r[0], by) if fuzzy_pairs else [ch for ch in by.get(r[0], []) if ch != w[k]]
        if not pool:
            continue
        typo = w[:k] + rng.choice(sorted(pool)) + w[k + 1:]
        tpl = rng.choice(TEMPLATES)
        cases.append((tpl.format(w=typo), tpl.format(w=w), typo, w))
    fixed = wrong = as_word = 0
    misses = []
    for typed, expected, typo, w in cases:
        out, ch = c.correct(typed)
        if out == expected:
            fixed += 1
        elif ch:
            wrong += 1
            misses.append(("wrong", typed, ch))
        else:
            misses.append(("miss", typed, ""))
        if jieba.dt.FREQ.get(typo):
            as_word += 1
    print(f"synthetic slips ({label}): fixed {fixed}/{len(cases)} ({100 * fixed / max(1, len(cases)):.0f} %), "
          f"miscorrected {wrong}; {as_word} of the slips are dictionary words themselves")
    if details:
        for m in misses[:60]:
            print("  ", *m)


def synthetic_corpus(texts: list[str], factor: int, noise: float, seed: int = 3) -> list[str]:
    """``factor`` × the sample corpus: a character-trigram Markov text over it, split into
    documents of the samples' size; ``noise`` of the characters replaced at random."""
    rng = random.Random(seed)
    src = re.sub(r"\s+", "", "".join(texts))
    nxt: dict[str, list[str]] = {}
    for i in range(len(src) - 2):
        nxt.setdefault(src[i:i + 2], []).append(src[i + 2])
    chars = [ch for ch in src if CJK.match(ch)]
    docs = []
    size = len(src) // max(1, len(texts))
    state = src[:2]
    for _ in range(factor * len(texts)):
        out = list(state)
        while len(out) < size:
            cand = nxt.get(state)
            ch = rng.choice(cand) if cand else rng.choice(src)
            out.append(ch)
            state = state[1] + ch
        if noise:
            for j in range(len(out)):
                if rng.random() < noise and CJK.match(out[j]):
                    out[j] = rng.choice(chars)
        docs.append("".join(out))
    return docs


def build_figures(label: str, texts: list[str], questions: list[str]) -> HomophoneCorrector:
    cjk = sum(1 for t in texts for ch in t if CJK.match(ch))
    t0 = time.perf_counter()
    HomophoneCorrector(texts[:1], extra_words=QUESTION_WORDS)  # one-time loads (jieba, pypinyin) out of the way
    first = time.perf_counter() - t0
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    c = HomophoneCorrector(texts, extra_words=QUESTION_WORDS)
    build = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    for q in questions:
        c.correct(q)
    lat = []
    for _ in range(5):
        for q in questions:
            t = time.perf_counter()
            c.correct(q)
            lat.append((time.perf_counter() - t) * 1000)
    print(f"{label}: {cjk:,} CJK chars, build {build:.2f} s (first in the process +{first:.2f} s), "
          f"index {c.nbytes / 2**20:.1f} MiB ({len(c):,} entries), build peak {peak / 2**20:.0f} MiB (tracemalloc); "
          f"latency over {len(lat)} questions p50 {statistics.median(lat):.3f} ms, p95 {pct(lat, 0.95):.3f} ms, "
          f"max {max(lat):.2f} ms")
    return c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the 100x corpora")
    ap.add_argument("--details", action="store_true", help="print every miss and false correction")
    ap.add_argument("--all-readings", action="store_true",
                    help="index every pypinyin heteronym reading (for comparison)")
    args = ap.parse_args()

    import pypinyin

    if args.all_readings:
        homophones._MIN_PHRASES = 0
    texts = _texts()
    typos, clean = _load_lists()
    questions = [t for t, _ in typos] + clean
    if args.all_readings:
        c = build_figures("sample corpus, every heteronym reading", texts, questions)
        hand_lists(c, args.details)
        repo_questions(c, args.details)
        leave_one_out(args.details)
        synthetic(c, texts, False, "same pinyin", args.details)
        return
    print(f"pypinyin {pypinyin.__version__}")
    c = build_figures("sample corpus", texts, questions)
    hand_lists(c, args.details)
    repo_questions(c, args.details)
    leave_one_out(args.details)
    synthetic(c, texts, False, "same pinyin", args.details)
    synthetic(c, texts, True, "fuzzy-pair slips, fuzzy off", False, n=200)
    print("fuzzy=True:")
    cf = HomophoneCorrector(texts, extra_words=QUESTION_WORDS, fuzzy=True)
    hand_lists(cf, args.details)
    repo_questions(cf, args.details)
    _fuzzy_leave_one_out(args.details)
    synthetic(cf, texts, True, "fuzzy-pair slips, fuzzy on", args.details, n=200)
    synthetic(cf, texts, False, "same pinyin, fuzzy on", False)
    print("every heteronym reading (pypinyin heteronym=True unfiltered):")
    sys.stdout.flush()
    subprocess.run([sys.executable, __file__, "--all-readings"] + (["--details"] if args.details else []), check=True)
    if not args.quick:
        for label, noise in (("100x markov corpus", 0.0), ("100x markov corpus, 3% noise", 0.03)):
            big = synthetic_corpus(texts, 100, noise)
            cb = build_figures(label, big, questions)
            hand_lists(cb, args.details)
            repo_questions(cb, False)
            del cb, big
            gc.collect()


def _fuzzy_leave_one_out(details: bool) -> None:
    global HomophoneCorrector
    plain = HomophoneCorrector

    class Fuzzy(plain):
        def __init__(self, texts, *, extra_words=()):
            super().__init__(texts, extra_words=extra_words, fuzzy=True)

    HomophoneCorrector = Fuzzy
    try:
        leave_one_out(details)
    finally:
        HomophoneCorrector = plain


if __name__ == "__main__":
    main()
