"""Pinyin-IME homophone typos, corrected by sound against the corpus vocabulary (issue #8).

Physicians type on phone pinyin IMEs, which put other characters with the same pinyin in place of
a word: 连席会议 for 联席会议, 近修 for 进修, 理事汇 for 理事会, 双向专诊 for 双向转诊, 多就 for 多久.
Nothing here lists typos. A span of the question is replaced only when it does not occur in the
corpus, a same-sounding n-gram does, and nothing in the question says the span was meant.

Index (built once per knowledge snapshot): every CJK n-gram of the corpus (2..5 characters, white
space removed so hard-wrapped lines join up) under each toneless pinyin reading, with its count
and whether it is *closed* — on each side it meets a boundary, or no single neighbouring character
takes 90 % of its occurrences: 进修, 理事会, “三基三严” are closed; 转诊绿 (of 转诊绿色通道) and
医疗机 (of 医疗机构) are not. Four flat numpy arrays sorted by a packed key (10 bits a syllable,
the length above them): about 17 bytes an (n-gram, reading) pair; all spans of a question are
looked up with one ``searchsorted``.

Readings: pypinyin's heteronym lists are long and mostly archaic (需: xu, nuo, ru, ruan). A
character keeps its usual reading and those of its other readings that pypinyin's own phrase
dictionary uses in at least ``_MIN_PHRASES`` words (会: hui, kuai; 行: xing, hang; 长: zhang,
chang). With every heteronym reading the index is 2.7 times larger and makes more false
corrections (bench/bench_homophones.py).

A correction (each rule was measured on the bench, false corrections cost more than misses):

- changes one character of a 2..5-character span that occurs neither in the corpus nor in
  ``extra_words``, into a same-pinyin n-gram that is a unit of the corpus (closed, or a word of
  jieba's dictionary) or an extra word; Latin text, digits, punctuation and any span the corpus
  contains (names of consortia and places included) never change;
- prefers the longest span (连席会议 → 联席会议 rests on the 4-gram), then the most frequent
  candidate; when the likeliest reading of a span is no unit, or two readings are about as
  frequent, that span is left alone, and a shorter span may not read its characters otherwise
  (三鸡三严 is never 三级三严);
- reads the question with jieba's dictionary (the one the BM25 tokenizer loads; no HMM) and may
  not cut one of its words (统一吗 → 统一码), replace a whole dictionary word (手术室, 停车场,
  卫生员 and 事实 stay; a question word far more common may replace a rare variant: 甚么 → 什么),
  or change a word the corpus uses unless the result is a dictionary word (联系会议 → 联席会议);
  a dictionary word inside a longer corrected span may change (乡镇卫生员 → 乡镇卫生院);
- leaves free characters alone: in a 2-character span the changed character may not be a
  grammar word or a very common stand-alone character (年的 → 年底, 人是 → 人事), nor may the kept
  one be a grammar word whose partner belongs with its other neighbour (在治未病 → 在职); in any
  span a grammar character swapped next to intact words stays (在培训 → 再培训, 专家团对 →
  专家团队, 及危重症 → 急危重症);
- in spans shorter than 4, must leave the changed characters inside dictionary words of the
  corrected question.

``fuzzy=True`` also matches the IME fuzzy pairs (zh/z, ch/c, sh/s, n/l, an/ang, en/eng, in/ing):
it fixes slips of that kind but doubles the false corrections on policy text, so it is off.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["HomophoneCorrector", "QUESTION_WORDS", "char_readings"]

MIN_SPAN, MAX_SPAN = 2, 5
_SYL_BITS = 10
_LEN_SHIFT = _SYL_BITS * MAX_SPAN
_MAX_KEYS_PER_SPAN = 64

# A heteronym reading is kept when pypinyin's phrase dictionary uses it in this many words.
_MIN_PHRASES = 3
# Single characters at least this frequent in jieba's dictionary stand alone as words so often
# (是 有 会 年 上 …) that a two-character span is not read as a typo through them.
_FREE_CHAR_FREQ = 60_000
# A corpus n-gram that is not closed (always extended the same way) is still a unit when jieba's
# dictionary has it with at least this frequency (its very rare entries are noise: 转病 3).
_UNIT_WORD_FREQ = 5
# Two candidates for one span whose counts are within this ratio are ambiguous: no change.
_AMBIGUOUS_RATIO = 0.5
# An extra (question) word may replace a whole dictionary word that is a common written variant
# of it: at least this frequent in jieba's dictionary and this many times rarer (甚么 → 什么; not
# 那家 → 哪家 or 多张 → 多长, which are rare there and mean something else).
_VARIANT_FREQ = 1_000
_VARIANT_RATIO = 3.0
# jieba part-of-speech tags of grammar characters (p c u* y r d) and how common they must be.
_FUNCTION_POS = frozenset("pcuyrd")
_FUNCTION_POS_FREQ = 10_000
# A corpus n-gram is closed (a unit) when on each side it meets a boundary or no single
# neighbour takes this share of its occurrences.
_CLOSED_SHARE = 0.9
# Characters a correction may change in one span (IME slips come one at a time).
_MAX_CHANGED = 1
# From this length on, a corrected span need not be read as dictionary words (三基三严).
_STRONG_SPAN = 4

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")
_BLANKS = re.compile(r"\s+")

# Question words of the written register: correct in a question whatever the corpus says. Pass
# them (or your own) as ``extra_words``.
QUESTION_WORDS: tuple[str, ...] = (
    "什么", "为什么", "什么时候", "多久", "多长时间", "多长", "多少", "几次", "几个", "几年", "几天",
    "怎么", "怎么办", "怎样", "怎么样", "如何", "哪些", "哪个", "哪里", "哪儿", "哪家", "何时", "是否",
    "能否", "可否", "有没有", "是不是", "能不能", "可不可以", "要不要", "请问", "我们", "咱们",
)


# --------------------------------------------------------------------------------------------
# Readings


@lru_cache(maxsize=1)
def _phrase_reading_counts() -> dict[str, dict[str, int]]:
    """char → toneless reading → number of pypinyin phrase-dictionary words using it."""
    try:
        from pypinyin.constants import PHRASES_DICT
    except Exception:  # pragma: no cover - pypinyin layout changed: fall back to usual readings
        return {}
    counts: dict[str, dict[str, int]] = {}
    for word, readings in PHRASES_DICT.items():
        if len(readings) != len(word):
            continue
        for ch, r in zip(word, readings):
            if not r:
                continue
            syl = _toneless(r[0])
            per = counts.setdefault(ch, {})
            per[syl] = per.get(syl, 0) + 1
    return counts


def _toneless(s: str) -> str:
    s = unicodedata.normalize("NFD", s)
    return "".join(c for c in s if not unicodedata.combining(c)).replace("ü", "v").lower()


_READINGS: dict[str, tuple[str, ...]] = {}
#: The readings of every character pypinyin knows, precomputed by ``write_readings_table`` (so
#: that answering never loads pypinyin's dictionaries: about 55 MB a worker).
READINGS_TABLE = Path(__file__).parent / "data" / "char_readings.txt"
_TABLE: dict[str, str] | None = None
_TABLE_LOCK = threading.Lock()


def _table() -> dict[str, str]:
    """char → space-separated readings, from the shipped table (empty if it is missing)."""
    global _TABLE
    if _TABLE is None:
        with _TABLE_LOCK:
            if _TABLE is None:
                table: dict[str, str] = {}
                try:
                    for line in READINGS_TABLE.read_text(encoding="utf-8").splitlines():
                        ch, _, readings = line.partition("\t")
                        table[ch] = readings
                except OSError:  # pragma: no cover - a source checkout without the table
                    pass
                _TABLE = table
    return _TABLE


def pypinyin_readings(ch: str) -> tuple[str, ...]:
    """What ``char_readings`` means, computed from pypinyin: its usual reading, plus the other
    readings its phrase dictionary uses in at least ``_MIN_PHRASES`` words."""
    from pypinyin import Style, pinyin

    hets = pinyin(ch, style=Style.NORMAL, heteronym=True)[0] if ch else []
    if not hets or hets[0] == ch or not hets[0].isascii() or not hets[0].isalpha():
        return ()
    used = _phrase_reading_counts().get(ch, {})
    keep = [hets[0].lower()]
    for r in hets[1:]:
        r = r.lower()
        if r not in keep and used.get(r, 0) >= _MIN_PHRASES:
            keep.append(r)
    return tuple(keep)


def char_readings(ch: str) -> tuple[str, ...]:
    """The toneless readings of one character used for matching (usual one first); cached."""
    got = _READINGS.get(ch)
    if got is not None:
        return got
    table = _table()
    if table:
        readings = table.get(ch, "")
        got = tuple(readings.split()) if readings else ()
    else:
        got = pypinyin_readings(ch)
    _READINGS[ch] = got
    return got


def readings_table_lines() -> list[str]:
    """The table's lines, computed from the installed pypinyin (every character it knows)."""
    from pypinyin.pinyin_dict import pinyin_dict

    lines = []
    for code in sorted(pinyin_dict):
        ch = chr(code)
        readings = pypinyin_readings(ch)
        if readings:
            lines.append(f"{ch}\t{' '.join(readings)}")
    return lines


def write_readings_table() -> int:
    """Regenerate ``READINGS_TABLE`` (after upgrading pypinyin): ``python -m knowledge.homophones``."""
    lines = readings_table_lines()
    READINGS_TABLE.parent.mkdir(exist_ok=True)
    READINGS_TABLE.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def _fuzzy(syl: str) -> str:
    """Common IME fuzzy pairs folded: zh/z ch/c sh/s, n/l, an/ang en/eng in/ing."""
    if syl[:2] in ("zh", "ch", "sh"):
        syl = syl[0] + syl[2:]
    if syl.startswith("n") and syl != "ng":
        syl = "l" + syl[1:]
    for long, short in (("ang", "an"), ("eng", "en"), ("ing", "in")):
        if syl.endswith(long):
            syl = syl[: -len(long)] + short
            break
    return syl


_SYL_IDS: dict[str, int] = {}
_SYL_LOCK = threading.Lock()


def _syl_id(syl: str) -> int:
    got = _SYL_IDS.get(syl)
    if got is None:
        with _SYL_LOCK:
            got = _SYL_IDS.setdefault(syl, len(_SYL_IDS) + 1)
        if got >= 1 << _SYL_BITS:  # pragma: no cover - pinyin has ~410 syllables
            raise RuntimeError("too many distinct syllables")
    return got


_CHAR_SYLS: dict[tuple[str, bool], tuple[int, ...]] = {}


def _char_syls(ch: str, fuzzy: bool) -> tuple[int, ...]:
    got = _CHAR_SYLS.get((ch, fuzzy))
    if got is None:
        readings = char_readings(ch)
        if fuzzy:
            readings = tuple(dict.fromkeys(_fuzzy(r) for r in readings))
        got = tuple(_syl_id(r) for r in readings)
        _CHAR_SYLS[(ch, fuzzy)] = got
    return got


def _word_keys(word: str, fuzzy: bool) -> list[int]:
    keys = [0]
    for ch in word:
        syls = _char_syls(ch, fuzzy)
        keys = [(k << _SYL_BITS) | s for k in keys for s in syls]
        if not keys or len(keys) > _MAX_KEYS_PER_SPAN:
            return []
    n = len(word)
    return [k | (n << _LEN_SHIFT) for k in keys]


# --------------------------------------------------------------------------------------------
# The lexicon used to read the question: jieba's default dictionary with the consortium glossary,
# exactly as the BM25 tokenizer (knowledge/tokenize.py) uses it


class _Lexicon:
    def __init__(self) -> None:
        import logging

        import jieba

        from knowledge.tokenize import tokenize

        jieba.setLogLevel(logging.WARNING)
        tokenize("")  # the BM25 tokenizer's consortium glossary (双向转诊, 上转, 下派 …) joins the dictionary
        jieba.dt.check_initialized()
        self._dt = jieba.dt
        # part of speech of the single characters (one pass over the dictionary file)
        self._pos: dict[str, str] = {}
        try:
            with jieba.dt.get_dict_file() as fh:
                for raw in fh:
                    parts = raw.decode("utf-8", "replace").split()
                    if len(parts) >= 3 and len(parts[0]) == 1:
                        self._pos[parts[0]] = parts[2]
        except Exception:  # pragma: no cover - a custom dictionary without tags
            pass

    def function_char(self, ch: str) -> bool:
        """A common grammar character: preposition, conjunction, particle, pronoun or adverb
        (在 和 的 及 与 就 这 …), by jieba's dictionary."""
        return self._pos.get(ch, "")[:1] in _FUNCTION_POS and self.freq(ch) >= _FUNCTION_POS_FREQ

    def freq(self, word: str) -> int:
        return self._dt.FREQ.get(word) or 0

    def words(self, run: str) -> list[tuple[int, int]]:
        """(start, end) of the dictionary words of ≥ 2 characters in jieba's reading of ``run``."""
        out, at = [], 0
        for w in self._dt.cut(run, HMM=False):
            if len(w) >= 2:
                out.append((at, at + len(w)))
            at += len(w)
        return out


_LEXICON: _Lexicon | None = None
_LEXICON_LOCK = threading.Lock()


def _lexicon() -> _Lexicon:
    global _LEXICON
    if _LEXICON is None:
        with _LEXICON_LOCK:
            if _LEXICON is None:
                _LEXICON = _Lexicon()
    return _LEXICON


# --------------------------------------------------------------------------------------------


class HomophoneCorrector:
    """Index of the corpus n-grams by toneless pinyin; ``correct`` fixes IME homophone typos.

    ``texts``: the corpus (all clause texts); white space inside them is ignored, so hard-wrapped
    lines join up. ``extra_words``: words that are correct even if the corpus never uses them
    (question words, see ``QUESTION_WORDS``); they are candidates too. ``fuzzy``: also match the
    IME fuzzy pairs (zh/z, ch/c, sh/s, n/l, an/ang, en/eng, in/ing); off by default, see the bench.
    """

    def __init__(self, texts: Iterable[str], *, extra_words: Iterable[str] = (), fuzzy: bool = False) -> None:
        self._fuzzy = fuzzy
        runs: list[str] = []
        for t in texts:
            runs.extend(_CJK_RUN.findall(_BLANKS.sub("", t)))
        self._corpus = "\x00" + "\x00".join(runs) + "\x00"
        self._key, self._pos, self._cnt, self._closed = self._build(self._corpus, fuzzy)
        self._extra = frozenset(w for w in extra_words if w and _CJK_RUN.fullmatch(w))
        self._extra_by_key: dict[int, list[str]] = {}
        for w in sorted(self._extra):
            if MIN_SPAN <= len(w) <= MAX_SPAN:
                for k in _word_keys(w, fuzzy):
                    self._extra_by_key.setdefault(k, []).append(w)
        self._lex = _lexicon()

    # ---- index -------------------------------------------------------------------------------

    @staticmethod
    def _build(corpus: str, fuzzy: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sorted pinyin keys, and per key the first position of the n-gram in ``corpus``, its
        count and whether it is closed (a unit of the corpus, not always extended the same way)."""
        cp = np.frombuffer(corpus.encode("utf-32-le"), dtype=np.uint32)
        uniq, inv = np.unique(cp, return_inverse=True)  # uniq[0] is the separator \x00
        del cp
        ids = inv.astype(np.int32).ravel()  # dense character ids, 0 = separator
        del inv
        syls = [()] + [_char_syls(chr(c), fuzzy) for c in uniq[1:].tolist()]
        width = max(1, max(len(s) for s in syls))
        nread = np.array([len(s) for s in syls], dtype=np.int64)
        table = np.zeros((len(syls), width), dtype=np.uint64)
        for c, s in enumerate(syls):
            table[c, : len(s)] = s
        nchars = len(uniq)
        bits = max(1, int(nchars).bit_length())
        is_sep = ids == 0
        keys_out, pos_out, cnt_out, closed_out = [], [], [], []
        for n in range(MIN_SPAN, MAX_SPAN + 1):
            count = len(ids) - n + 1
            if count <= 1:
                break
            # start positions of the n-grams with no separator inside
            ok = ~is_sep[:count]
            for j in range(1, n):
                ok &= ~is_sep[j : j + count]
            valid = np.flatnonzero(ok).astype(np.int32)
            del ok
            if not len(valid):
                continue
            ident = np.zeros(len(valid), dtype=np.uint64)
            exact = n * bits <= 64
            for j in range(n):
                col = ids[valid + j].astype(np.uint64)
                if exact:
                    ident <<= np.uint64(bits)
                    ident |= col
                else:  # polynomial hash; a collision only merges two rare n-grams
                    ident *= np.uint64(0x9E3779B97F4A7C15)
                    ident += col + np.uint64(j + 1)
            del col
            order = np.argsort(ident, kind="stable")
            ident = ident[order]
            starts = np.flatnonzero(np.concatenate(([True], ident[1:] != ident[:-1])))
            del ident
            counts = np.diff(np.append(starts, len(order))).astype(np.uint32)
            valid = valid[order]
            del order
            gpos = valid[starts]  # first occurrence (stable sort)
            # closed: on each side a boundary, or no single neighbour in _CLOSED_SHARE of the
            # occurrences (转诊绿 of 转诊绿色通道 is not closed, nor 医疗机 of 医疗机构)
            ngrams = len(starts)
            group = np.repeat(np.arange(ngrams, dtype=np.uint64), counts)
            closed = np.ones(ngrams, dtype=bool)
            for side in (ids[valid - 1], ids[valid + n]):
                pairs = np.sort(group * np.uint64(nchars) + side.astype(np.uint64))
                run_starts = np.flatnonzero(np.concatenate(([True], pairs[1:] != pairs[:-1])))
                run_len = np.diff(np.append(run_starts, len(pairs)))
                run_group = pairs[run_starts] // np.uint64(nchars)
                first_run = np.flatnonzero(np.concatenate(([True], run_group[1:] != run_group[:-1])))
                boundary = pairs[run_starts[first_run]] % np.uint64(nchars) == 0  # the separator sorts first
                top = np.maximum.reduceat(run_len, first_run)
                closed &= boundary | (top < _CLOSED_SHARE * counts)
            del valid, side, pairs, group, run_starts, run_len, run_group, first_run
            # one entry per combination of the characters' readings
            gi = np.arange(len(starts), dtype=np.int64)
            pk = np.zeros(len(starts), dtype=np.uint64)
            for j in range(n):
                c = ids[gpos[gi] + j]
                m = nread[c]
                if (m == 1).all():
                    pk = (pk << np.uint64(_SYL_BITS)) | table[c, 0]
                    continue
                gi = np.repeat(gi, m)
                pk = np.repeat(pk, m)
                c = np.repeat(c, m)
                k = np.arange(len(gi), dtype=np.int64) - np.repeat(np.cumsum(m) - m, m)
                pk = (pk << np.uint64(_SYL_BITS)) | table[c, k]
            keys_out.append(pk | np.uint64(n << _LEN_SHIFT))
            pos_out.append(gpos[gi].astype(np.uint32))
            cnt_out.append(counts[gi])
            closed_out.append(closed[gi])
        if not keys_out:
            return np.zeros(0, np.uint64), np.zeros(0, np.uint32), np.zeros(0, np.uint32), np.zeros(0, bool)
        key = np.concatenate(keys_out)
        del keys_out
        order = np.argsort(key, kind="stable")
        return (key[order], np.concatenate(pos_out)[order], np.concatenate(cnt_out)[order],
                np.concatenate(closed_out)[order])

    @property
    def nbytes(self) -> int:
        """Memory held by the index (arrays and the joined corpus text)."""
        import sys

        arrays = (self._key, self._pos, self._cnt, self._closed)
        return sum(int(a.nbytes) for a in arrays) + sys.getsizeof(self._corpus)

    def __len__(self) -> int:
        return len(self._key)

    def count(self, word: str) -> int:
        """How often ``word`` (2..5 CJK characters) occurs in the corpus."""
        return self._entry(word)[0]

    def _entry(self, word: str) -> tuple[int, bool]:
        """(count, closed) of a corpus n-gram; (0, False) if it does not occur."""
        if not (MIN_SPAN <= len(word) <= MAX_SPAN):
            return 0, False
        for k in _word_keys(word, self._fuzzy):
            lo = int(np.searchsorted(self._key, np.uint64(k), "left"))
            hi = int(np.searchsorted(self._key, np.uint64(k), "right"))
            for p, c, u in zip(self._pos[lo:hi].tolist(), self._cnt[lo:hi].tolist(), self._closed[lo:hi].tolist()):
                if self._corpus[p : p + len(word)] == word:
                    return c, u
        return 0, False

    def _known(self, word: str) -> bool:
        return word in self._extra or self.count(word) > 0

    # ---- romanised names ------------------------------------------------------------------------

    def romanised(self, latin: str) -> str | None:
        """The corpus's Chinese for a word written in toneless pinyin ("Hadashan" → 哈达山).

        English questions name places and hospitals as they are romanised; no dictionary holds
        every township. The word is split into syllables the corpus uses (all the ways it can be
        split), and the corpus n-gram of that reading is taken if it is a unit (closed) of the
        corpus: the spelling says how many characters there are, the corpus says which. Fewer
        syllables are preferred ("xian" is 先, not xi-an), then the most frequent n-gram; a
        reading two n-grams share about equally is left alone.
        """
        word = latin.lower()
        if not (4 <= len(word) <= 30) or not word.isascii() or not word.isalpha() or not len(self._key):
            return None
        known = {syl: sid for syl, sid in list(_SYL_IDS.items()) if 1 <= len(syl) <= 6}
        splits: list[list[int]] = []

        def split(at: int, acc: list[int]) -> None:
            if len(acc) > MAX_SPAN or len(splits) > _MAX_KEYS_PER_SPAN:
                return
            if at == len(word):
                if len(acc) >= MIN_SPAN:
                    splits.append(list(acc))
                return
            for end in range(min(len(word), at + 6), at, -1):
                sid = known.get(word[at:end])
                if sid is not None:
                    acc.append(sid)
                    split(end, acc)
                    acc.pop()

        split(0, [])
        for syls in sorted(splits, key=len):
            key = 0
            for sid in syls:
                key = (key << _SYL_BITS) | sid
            key |= len(syls) << _LEN_SHIFT
            lo = int(np.searchsorted(self._key, np.uint64(key), "left"))
            hi = int(np.searchsorted(self._key, np.uint64(key), "right"))
            # the most frequent n-gram of that reading, closed or not: a name always followed by
            # the same suffix (哈达山 of 哈达山卫生院, 德阳 of 德阳市) is not closed but is the name
            found = sorted(
                ((c, u, self._corpus[p : p + len(syls)]) for p, c, u in
                 zip(self._pos[lo:hi].tolist(), self._cnt[lo:hi].tolist(), self._closed[lo:hi].tolist())),
                reverse=True,
            )
            if found:
                if len(found) > 1 and found[1][0] >= found[0][0] * _AMBIGUOUS_RATIO:
                    return None  # two n-grams of that sound, about as frequent: no guess
                return found[0][2]
        return None

    # ---- correction ----------------------------------------------------------------------------

    def correct(self, text: str) -> tuple[str, list[tuple[str, str]]]:
        """The text with homophone typos replaced, and the replacements [(typed, corrected)]."""
        changes: list[tuple[str, str]] = []
        if not text or len(self._key) == 0 and not self._extra:
            return text, changes
        out: list[str] = []
        last = 0
        for m in _CJK_RUN.finditer(text):
            run = m.group()
            if len(run) < MIN_SPAN:
                continue
            fixed = self._correct_run(run, changes)
            if fixed != run:
                out.append(text[last : m.start()])
                out.append(fixed)
                last = m.end()
        if not changes:
            return text, changes
        out.append(text[last:])
        return "".join(out), changes

    def _spans(self, run: str) -> Iterator[tuple[int, int, list[int]]]:
        fuzzy = self._fuzzy
        for i in range(len(run)):
            keys = [0]
            for n in range(1, min(MAX_SPAN, len(run) - i) + 1):
                syls = _char_syls(run[i + n - 1], fuzzy)
                keys = [(k << _SYL_BITS) | s for k in keys for s in syls]
                if not keys or len(keys) > _MAX_KEYS_PER_SPAN:
                    break
                if n >= MIN_SPAN:
                    yield i, n, [k | (n << _LEN_SHIFT) for k in keys]

    def _correct_run(self, run: str, changes: list[tuple[str, str]]) -> str:
        spans = list(self._spans(run))
        if not spans:
            return run
        flat = [k for _, _, ks in spans for k in ks]
        arr = np.fromiter(flat, dtype=np.uint64, count=len(flat))
        lo = np.searchsorted(self._key, arr, "left").tolist()
        hi = np.searchsorted(self._key, arr, "right").tolist()
        corpus, extra_by_key = self._corpus, self._extra_by_key
        proposals = []
        at = 0
        for i, n, ks in spans:
            typed = run[i : i + n]
            found: dict[str, tuple[int, bool]] = {}
            for j in range(at, at + len(ks)):
                a, b = lo[j], hi[j]
                if a < b:
                    for p, c, u in zip(self._pos[a:b].tolist(), self._cnt[a:b].tolist(), self._closed[a:b].tolist()):
                        found[corpus[p : p + n]] = (c, u)
                for w in extra_by_key.get(flat[j], ()):
                    found.setdefault(w, (0, True))
            at += len(ks)
            if not found or typed in found or typed in self._extra:
                continue
            best = self._best(typed, found)
            if best is not None:
                proposals.append((n, best[1], i, best[0], best[2]))
        if not proposals:
            return run
        # longest span first, then the most frequent candidate, then the leftmost
        proposals.sort(key=lambda p: (-p[0], -p[1], p[2]))
        words: list[tuple[int, int]] | None = None
        taken = [False] * len(run)
        refused: list[tuple[int, str]] = []
        chosen = []
        for n, _, i, cand, ok in proposals:
            if any(taken[i : i + n]):
                continue
            if any(len(r) > n and _disagree(run, i, cand, ri, r) for ri, r in refused):
                continue  # a longer same-sounding span read these characters otherwise (三鸡三严 ≠ 三级)
            if ok:
                if words is None:
                    words = self._lex.words(run)
                ok = self._safe(run, i, cand, words)
            if not ok:
                refused.append((i, cand))
                continue
            for k in range(i, i + n):
                taken[k] = True
            chosen.append((i, cand))
        if not chosen:
            return run
        chars = list(run)
        for i, cand in chosen:
            chars[i : i + len(cand)] = cand
        fixed = "".join(chars)
        fixed_words = self._lex.words(fixed)
        for i, cand in sorted(chosen):
            a, b = self._reported(run, fixed_words, i, cand)
            changes.append((run[a:b], fixed[a:b]))
        return fixed

    @staticmethod
    def _reported(run: str, fixed_words: list[tuple[int, int]], i: int, cand: str) -> tuple[int, int]:
        """The part of a replaced span to report: the corrected words holding the changed
        characters (联系会议由 → 联席会议由 is reported as 联系会议 → 联席会议), or the whole span."""
        end = i + len(cand)
        changed = [i + k for k in range(len(cand)) if run[i + k] != cand[k]]
        spans = [(a, b) for a, b in fixed_words if any(a <= c < b for c in changed)]
        if len(spans) and all(any(a <= c < b for a, b in spans) for c in changed):
            a = max(i, min(a for a, _ in spans))
            b = min(end, max(b for _, b in spans))
            if b - a >= MIN_SPAN:
                return a, b
        return i, end

    def _best(self, typed: str, found: dict[str, tuple[int, bool]]) -> tuple[str, int, bool] | None:
        """The best candidate for ``typed``, its count, and whether it may be used at all: a unit
        of the corpus (closed, or a dictionary word) with no rival about as frequent."""
        lex = self._lex
        ranked = []
        top_count = max(c for c, _ in found.values()) or 1
        for cand, (count, closed) in found.items():
            diff = sum(1 for a, b in zip(typed, cand) if a != b)
            if not 1 <= diff <= _MAX_CHANGED:
                continue
            exact = 1
            if self._fuzzy:
                exact = int(all(set(char_readings(a)) & set(char_readings(b)) for a, b in zip(typed, cand)))
            extra = cand in self._extra
            if extra:  # an extra word: as good as the commonest candidate
                count = max(count, top_count)
            freq = lex.freq(cand)
            # a dictionary word beats an n-gram that straddles two words of the corpus (作诊 of 合作诊疗)
            word = int(extra or freq > 0)
            unit = closed or extra or freq >= _UNIT_WORD_FREQ
            ranked.append((exact, -diff, word, count, cand, unit))
        if not ranked:
            return None
        ranked.sort(reverse=True)
        best = ranked[0]
        if not best[5]:
            # the likeliest reading is no unit of the corpus (城市医疗集 of 城市医疗集团): this span
            # is not the one to correct; a shorter one may be (医疗急团 → 医疗集团)
            return best[4], best[3], False
        for other in ranked[1:]:
            if other[5] and other[:3] == best[:3] and other[3] >= best[3] * _AMBIGUOUS_RATIO:
                return best[4], best[3], False  # two readings about as likely
        return best[4], best[3], True

    def _safe(self, run: str, i: int, cand: str, words: list[tuple[int, int]]) -> bool:
        """Whether replacing ``run[i:i+len(cand)]`` by ``cand`` is safe; ``words`` is jieba's
        reading of ``run`` (words of ≥ 2 characters)."""
        lex, extra = self._lex, cand in self._extra
        n = len(cand)
        end = i + n
        typed = run[i:end]
        changed = [i + k for k in range(n) if run[i + k] != cand[k]]
        inner_words = []
        for a, b in words:
            if b <= i or a >= end:
                continue
            if a < i or b > end:
                return False  # the span would cut a word of the question (统一吗 → 一码)
            if (a, b) == (i, end):
                # the typed span is a dictionary word: keep it, unless it is a common written
                # variant of a question word (甚么 → 什么)
                if not (extra and _VARIANT_FREQ <= lex.freq(typed) <= lex.freq(cand) / _VARIANT_RATIO):
                    return False
            inner_words.append((a, b))
            if any(a <= c < b for c in changed) and self._known(run[a:b]) and not (extra or lex.freq(cand) > 0):
                return False  # a word the corpus uses changes only into a dictionary word (联系会议)
        if extra:
            return True

        def free(ch: str) -> bool:
            return lex.freq(ch) >= _FREE_CHAR_FREQ or lex.function_char(ch)

        if n == 2:
            if any(free(run[c]) for c in changed):
                return False  # 年的 → 年底, 人是 → 人事: a free character is meant as typed
            c = changed[0]
            kept = i if c == i + 1 else i + 1
            if lex.function_char(run[kept]):
                outer = run[c : c + 2] if c > kept else run[c - 1 : c + 1]
                if len(outer) == 2 and (self._known(outer) or lex.freq(outer) > 0):
                    return False  # 在治未病 → 在职: a grammar character kept, the other one bound outward
        in_word = {c for a, b in inner_words for c in range(a, b)}
        loose = [c for c in changed if c not in in_word and (free(run[c]) or lex.function_char(cand[c - i]))]
        unchanged = [c for c in range(i, end) if c not in changed]
        if loose and len(loose) == len(changed) and unchanged and all(c in in_word for c in unchanged):
            return False  # 在培训 → 再培训, 及危重症 → 急危重症: a grammar character next to intact words
        # the corrected characters must make words of the question (转诊率 → 转诊绿 is refused); a
        # longer corrected span is evidence enough (三鸡三严 → 三基三严, a closed corpus unit)
        if n < _STRONG_SPAN:
            fixed = run[:i] + cand + run[end:]
            good = {c for a, b in lex.words(fixed) for c in range(a, b)}
            if not all(c in good for c in changed):
                return False
        return True


def _disagree(run: str, i: int, cand: str, j: int, other: str) -> bool:
    """Whether two readings of overlapping spans of ``run`` give some character differently."""
    lo, hi = max(i, j), min(i + len(cand), j + len(other))
    return any(cand[k - i] != other[k - j] for k in range(lo, hi))


if __name__ == "__main__":
    print(f"{write_readings_table()} characters written to {READINGS_TABLE}")
