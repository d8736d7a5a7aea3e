"""Follow-up questions: what a short message means after the last policy answer.

Pure functions (no database, no knowledge-base calls); the engine stores the context and asks the
knowledge base. After a policy answer the engine keeps a ``Context`` (the question as answered,
the consortium, the language, the quoted clauses, which clause ids were shown) in the user's
``dialog_state`` row under the dialog name ``CONTEXT_DIALOG``; it expires like a dialog. The row is
no dialog: it is never announced as expired, never answers a dialog's question, and any real dialog
replaces it. Group chats neither read nor write it (others read the replies there, and a private
question must not leak into a group answer).

``interpret(message, context, idf)`` sorts the next message into one of:

* ``SOURCE`` — "第二条出自哪里？", "第二条说的是哪个文件？", "where is the first one from?": the
  document and section of a quote of the last answer, straight from the context (no retrieval);
* ``MORE`` — "还有呢？", "还有吗", "anything else?": the next best clauses of the same question that
  were not shown yet;
* ``REWRITE`` — an ellipsis that swaps the subject: "那理事会呢？" after "联席会议多久开一次？" is
  "理事会多久开一次？" (see ``rewrite``);
* ``NONE`` — anything else (a complete question is answered on its own, as without context).

How an ellipsis is recognised and rewritten (word classes, not phrases of known questions):

* it starts with a connective (那/那么/还有/另外/至于/要是…, "what about", "how about", "and") or
  ends with 呢, or it is a bare noun phrase of the same kind as a subject of the last question
  ("理事会？" after a question about 联席会议);
* what remains after the connective has no question word (多久, 什么, 吗, how, does…) and only a
  few content words; "那个联席会议多久开一次" is a complete question and is left alone;
* the new subject replaces the previous question's main subject: the word of the same kind (same
  head morpheme — 理事会/联席会议, 上转/下转, 医联体/医共体 — or both place names), else the rarest
  content word by IDF (nouns before verbs, the sentence-initial topic first; quantities such as
  一次 never count);
* the rewrite keeps the previous question's language: an English subject after a Chinese question
  is mapped to the policy term (council → 理事会) and a Chinese subject after an English question to
  its English phrase; the answer is then in the previous question's language (the knowledge base
  answers in the language of the question it is given). When a subject cannot be mapped, the
  message is answered on its own.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from knowledge.textnorm import is_mostly_latin, truncate_utf8

log = logging.getLogger(__name__)

#: The ``dialog_state.dialog`` name of the context row (never the name of a real dialog).
CONTEXT_DIALOG = "ask_context"
CONTEXT_STEP = "last"

MAX_SHOWN_IDS = 40
MAX_MORE_QUOTES = 3
MORE_MIN_SCORE_RATIO = 0.45  # of the best hit's score: weaker clauses are not "relevant"
MORE_MIN_COVERAGE = 0.4
MORE_QUOTE_BYTES = 450


# ------------------------------------------------------------------------------------------------
# the stored context


@dataclass(frozen=True)
class QuoteRef:
    citation: str  # 《document》 › section › clause
    chunk_id: str


@dataclass(frozen=True)
class Context:
    """The last policy answer of one user (in a private chat)."""

    question: str
    consortium: str | None = None
    language: str = "zh"
    quotes: tuple[QuoteRef, ...] = ()
    shown_ids: tuple[str, ...] = ()

    def to_data(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "consortium": self.consortium,
            "language": self.language,
            "quotes": [{"citation": q.citation, "chunk_id": q.chunk_id} for q in self.quotes],
            "shown_ids": list(self.shown_ids)[-MAX_SHOWN_IDS:],
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Context | None:
        """The context stored in a dialog row's data; None when missing or malformed."""
        if not isinstance(data, Mapping) or not isinstance(data.get("question"), str) or not data["question"].strip():
            return None
        quotes = []
        for q in data.get("quotes") or ():
            if isinstance(q, Mapping) and isinstance(q.get("citation"), str):
                quotes.append(QuoteRef(q["citation"], str(q.get("chunk_id") or "")))
        shown = tuple(str(i) for i in data.get("shown_ids") or () if i)
        consortium = data.get("consortium")
        return cls(
            question=data["question"],
            consortium=consortium if isinstance(consortium, str) else None,
            language="en" if data.get("language") == "en" else "zh",
            quotes=tuple(quotes),
            shown_ids=shown,
        )

    @classmethod
    def of_answer(cls, question: str, consortium: str | None, answer: Any) -> Context:
        """The context after ``answer`` (a ``knowledge.answer.Answer``) to ``question``."""
        quotes = tuple(QuoteRef(q.citation, q.chunk_id) for q in getattr(answer, "quotes", ()) or ())
        return cls(
            question=question,
            consortium=consortium,
            language="en" if getattr(answer, "language", "zh") == "en" else "zh",
            quotes=quotes,
            shown_ids=tuple(q.chunk_id for q in quotes),
        )


# ------------------------------------------------------------------------------------------------
# what the next message means


class Kind(StrEnum):
    NONE = "none"
    REWRITE = "rewrite"
    SOURCE = "source"
    MORE = "more"


@dataclass(frozen=True)
class Followup:
    kind: Kind
    #: NONE: the message itself; REWRITE: the rewritten question; SOURCE/MORE: the last question.
    question: str
    #: SOURCE: which quote (0-based; -1 the last one; None "that one" / all of them).
    index: int | None = None
    #: The language of the new message (replies made here use it).
    english: bool = False


def interpret(message: str, context: Context | None, idf: Mapping[str, float] | None = None) -> Followup:
    """What ``message`` asks, given the last answer's ``context`` (None: no context)."""
    text = (message or "").strip()
    english = is_mostly_latin(text)
    if context is None or not text:
        return Followup(Kind.NONE, text, english=english)
    found, index = source_reference(text)
    if found:
        return Followup(Kind.SOURCE, context.question, index=index, english=english)
    if asks_for_more(text):
        return Followup(Kind.MORE, context.question, english=english)
    try:
        rewritten = rewrite(context.question, text, idf or {})
    except Exception:  # noqa: BLE001 - a follow-up we cannot read is answered as it stands
        log.warning("follow-up rewrite failed", exc_info=True)
        rewritten = None
    if rewritten is not None:
        return Followup(Kind.REWRITE, rewritten, english=english)
    return Followup(Kind.NONE, text, english=english)


# -- "where is the second one from?" --------------------------------------------------------------

_CN_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10}
_ZH_ORDINAL = re.compile(r"第\s*([一二两三四五六七八九十]|\d{1,2})\s*[条个处段点项则句份篇]?|([1-9])\s*号|(最后)\s*一?\s*[条个处段点项句]?")
_ZH_DEMONSTRATIVE = re.compile(r"(?:上面|上述|刚才|刚刚|前面)?(?:这|那)\s*(?:一)?\s*[条个段句处些]?|上面|上述|刚才|它")
_ZH_SOURCE_ANCHORS = ("出自", "来自", "出处", "来源", "引自", "选自", "摘自", "哪个文件", "哪份文件", "什么文件", "哪个文档",
                      "哪份文档", "哪个政策", "哪份政策", "哪个制度", "哪个方案", "哪里", "哪儿", "什么地方", "文件", "文档")
_ZH_SOURCE_WORDS = ("说的是", "讲的是", "指的是", "引用的", "引用", "引文", "条款", "原文", "依据", "根据", "政策", "制度", "方案",
                    "回答", "答案", "上次", "刚才", "你", "请问", "一下", "具体", "来着", "是", "的", "在", "哪", "个", "份",
                    "中", "里", "吗", "呢", "呀", "啊", "么", "什么", "了", "说", "讲", "条", "哪一个", "哪一份", "一")
_EN_ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4,
                "fifth": 5, "5th": 5, "last": -1}
_EN_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_EN_SOURCE_ANCHORS = frozenset({"from", "source", "sources", "document", "documents", "file", "files", "cited",
                                "quoted", "come", "comes", "came", "origin"})
_EN_SOURCE_WORDS = frozenset({"where", "which", "what", "is", "was", "are", "were", "the", "a", "an", "one", "ones",
                              "quote", "quotes", "clause", "clauses", "citation", "does", "did", "do", "of", "in",
                              "for", "please", "and", "say", "it", "that", "this", "these", "those", "number", "no",
                              "s", "policy", "you", "your", "answer", "taken", "part", "item", "point", "st", "nd",
                              "rd", "th"})


def source_reference(text: str) -> tuple[bool, int | None]:
    """(asks where a quote of the last answer comes from, which one: 0-based, -1 last, None)."""
    if is_mostly_latin(text):
        words = re.findall(r"[a-z]+|\d+", unicodedata.normalize("NFKC", text).lower())
        if not words or len(words) > 12 or not any(w in _EN_SOURCE_ANCHORS for w in words):
            return False, None
        index: int | None = None
        for i, w in enumerate(words):
            if w in _EN_ORDINALS:
                index = _EN_ORDINALS[w]
            elif w.isdigit() and 0 < int(w) < 10:
                index = int(w)
            elif w in _EN_NUMBERS and i > 0 and words[i - 1] in ("quote", "clause", "number", "no", "item", "point"):
                index = _EN_NUMBERS[w]
            elif w not in _EN_SOURCE_ANCHORS and w not in _EN_SOURCE_WORDS and w not in _EN_NUMBERS:
                return False, None
        return True, (index - 1 if index and index > 0 else index)
    bare = _squeeze(text)
    if not bare or len(bare) > 24 or not any(a in bare for a in _ZH_SOURCE_ANCHORS):
        return False, None
    index = None
    m = _ZH_ORDINAL.search(bare)
    if m:
        if m.group(3):
            index = -1
        else:
            raw = m.group(1) or m.group(2)
            index = int(raw) if raw.isdigit() else _CN_DIGITS.get(raw)
        bare = bare[: m.start()] + " " + bare[m.end():]
    bare = _ZH_DEMONSTRATIVE.sub(" ", bare)
    if _residual(bare, _ZH_SOURCE_ANCHORS + _ZH_SOURCE_WORDS):
        return False, None
    return True, (index - 1 if index and index > 0 else index)


# -- "还有呢？" ---------------------------------------------------------------------------------

_ZH_MORE_ANCHORS = ("还有", "其他", "其它", "别的", "更多", "另外", "继续", "下一", "再")
_ZH_MORE_WORDS = ("相关", "条款", "规定", "内容", "政策", "文件", "一些", "些", "点", "说说", "讲讲", "看看", "说", "讲", "看",
                  "给我", "给", "我", "显示", "列出", "一下", "没有", "有", "的", "了", "吗", "呢", "么", "吧", "啊", "呀",
                  "什么", "啥", "也", "条", "个", "请", "来", "嘛", "就", "这些", "那", "那么")
_EN_MORE_ANCHORS = frozenset({"else", "more", "other", "others", "another", "continue", "next", "further",
                              "additional"})
_EN_MORE_WORDS = frozenset({"anything", "something", "any", "what", "is", "there", "are", "the", "please", "show",
                            "me", "give", "tell", "clauses", "clause", "rules", "rule", "quotes", "quote", "results",
                            "ones", "one", "and", "ok", "okay", "so", "do", "you", "have", "got", "besides", "that",
                            "this", "in", "policies", "documents", "relevant", "related", "s", "found", "can", "find"})


def asks_for_more(text: str) -> bool:
    """"还有呢？", "还有别的规定吗", "anything else?": the next clauses of the same question."""
    if is_mostly_latin(text):
        words = re.findall(r"[a-z]+", unicodedata.normalize("NFKC", text).lower())
        return bool(words) and len(words) <= 8 and any(w in _EN_MORE_ANCHORS for w in words) and all(
            w in _EN_MORE_ANCHORS or w in _EN_MORE_WORDS for w in words)
    bare = _squeeze(text)
    return 0 < len(bare) <= 12 and any(a in bare for a in _ZH_MORE_ANCHORS) and not _residual(
        bare, _ZH_MORE_ANCHORS + _ZH_MORE_WORDS)


# -- "那理事会呢？" --------------------------------------------------------------------------------

# Connectives that open an elliptical follow-up (longest first when stripped).
_ZH_LEADS = ("那如果是", "那要是", "那如果", "那假如", "如果是", "换成是", "那么", "要是", "假如", "换成", "换作", "换做", "至于",
             "还有", "另外", "那", "而")
# After 那 these make it a demonstrative ("那个联席会议…"), not "then".
_ZH_DEMONSTRATIVE_AFTER_NA = "个些种样里边儿时次位份条项家所天年段"
_ZH_TAIL_PARTICLES = "呢呀啊吧嘞咧"
_ZH_QUESTION = re.compile(
    r"多久|多长|多少|几|什么|啥|怎么|怎样|如何|哪|谁|是否|能否|可否|吗|么|为何|为什么|何时|有没有|是不是|能不能|可不可以|"
    r"要不要|会不会|需不需要|有无"
)
# Words that split a follow-up into separate subjects ("张店的理事会" → 张店 / 理事会).
_ZH_JOINERS = re.compile(r"[的之和与及跟、，,；;\s]+")
_ZH_NUMERAL_START = re.compile(r"^[0-9０-９一二两三四五六七八九十百千几每第各该本此这那]")
# jieba POS tags that never name a subject: numerals, measure words, pronouns, prepositions,
# conjunctions, particles, auxiliaries, adverbs, interjections, onomatopoeia.
_NON_SUBJECT_TAGS = ("m", "q", "r", "p", "c", "u", "y", "e", "o", "d", "f", "t", "z")
_PROPER_TAGS = frozenset({"ns", "nr", "nt", "nrt", "nrfg"})
# Thanks and acknowledgements (jieba tags some of them as names): never a subject.
_ZH_NON_SUBJECTS = frozenset({"谢谢", "多谢", "感谢", "谢了", "明白", "知道", "收到", "了解", "懂了", "好的", "好吧", "可以", "没事",
                              "客气", "辛苦", "麻烦", "不用", "算了", "再见", "你好", "您好"})
# Nouns, noun-like verbs, idioms, abbreviations and the consortium glossary (tagged x by jieba).
_NOMINAL_TAGS = ("n", "vn", "an", "l", "i", "j", "x")

_EN_LEADS = re.compile(
    r"^(?:(?:and|so|ok|okay|then)\s*,?\s+)?(?:(?:what|how)\s+about|what\s+of|same\s+(?:for|with|question\s+for)|"
    r"and\s+for|and|for|regarding|as\s+for)\s+",
    re.IGNORECASE,
)
_EN_TAILS = re.compile(r"\s+(?:then|too|as\s+well|instead)$", re.IGNORECASE)
_EN_DETERMINERS = frozenset({"the", "a", "an", "our", "my", "your", "their", "its", "this", "that", "these", "those"})
# Pronouns, deictics and courtesy words: never what a question is about.
_EN_NON_SUBJECTS = frozenset({"it", "them", "him", "her", "me", "us", "you", "i", "we", "they", "now", "then", "today",
                              "tomorrow", "there", "here", "so", "ok", "okay", "thanks", "thank", "yes", "no", "yeah",
                              "great", "good", "fine", "cool", "too", "also", "else", "more", "other", "others"})
_EN_QUESTION = frozenset({"how", "what", "when", "where", "who", "whom", "which", "why", "does", "do", "did", "is",
                          "are", "was", "were", "can", "could", "should", "must", "will", "would", "has", "have",
                          "may", "need", "needs", "much", "many", "often"})
_TRIM = " \t\r\n?？。.!！~～,，;；:：…'\"“”‘’"


@dataclass(frozen=True)
class _Subject:
    """One subject of the new message: its words, and the text that goes into the question."""

    text: str
    words: tuple[str, ...]
    english: bool
    #: The policy terms of an English subject (council → 理事会): what "kind" is judged on.
    terms: tuple[str, ...] = ()


@dataclass
class _Candidate:
    """A content word (Chinese) or concept (English) of the previous question."""

    surface: str  # as it is found in the question (for the replacement)
    key: str  # the word, or an English phrase
    score: float
    tag: str = ""
    terms: tuple[str, ...] = ()  # the Chinese policy terms of an English concept
    used: bool = field(default=False)


def rewrite(previous: str, message: str, idf: Mapping[str, float]) -> str | None:
    """``previous`` with its subject replaced by the subject of the elliptical ``message``.

    ``rewrite("联席会议多久开一次？", "那理事会呢？", idf) == "理事会多久开一次？"``. None when
    ``message`` is not such a follow-up (a complete question, a greeting…) or its subject cannot
    be put into the previous question (``idf``: token → IDF of the indexed policies).
    """
    previous = (previous or "").strip()
    message = (message or "").strip()
    if not previous or not message:
        return None
    subjects, marked = _subjects_of(message, idf)
    if not subjects:
        return None
    prev_english = is_mostly_latin(previous)
    candidates = _english_candidates(previous, idf) if prev_english else _chinese_candidates(previous, idf)
    if not candidates:
        return None
    # words the follow-up repeats from the previous question are context, not a new subject
    subjects = [s for s in (_without_repeats(s, candidates, previous) for s in subjects) if s is not None]
    if not subjects:
        return None
    pairs: list[tuple[_Subject, _Candidate]] = []
    pending: list[_Subject] = []
    for subject in subjects:
        match = _same_kind(subject, candidates)
        if match is None:
            pending.append(subject)
        else:
            match.used = True
            pairs.append((subject, match))
    if pending and not marked:
        return None  # a bare noun phrase is a follow-up only when it is of the kind just asked about
    for subject in pending:
        free = [c for c in candidates if not c.used]
        if not free:
            return None
        best = max(free, key=lambda c: c.score)
        best.used = True
        pairs.append((subject, best))
    out = previous
    for subject, candidate in pairs:
        replacement = _in_language(subject, english=prev_english)
        if replacement is None:
            return None
        out = _replace(out, candidate, replacement, english=prev_english)
        if out is None:
            return None
    return out if out != previous else None


def _subjects_of(message: str, idf: Mapping[str, float]) -> tuple[list[_Subject], bool]:
    """The new subjects of an elliptical follow-up, and whether it had a connective (or 呢)."""
    if is_mostly_latin(message):
        return _english_subjects(message)
    return _chinese_subjects(message, idf)


def _chinese_subjects(message: str, idf: Mapping[str, float]) -> tuple[list[_Subject], bool]:
    text = unicodedata.normalize("NFKC", message).strip(_TRIM)
    marked = False
    for lead in _ZH_LEADS:
        if text.startswith(lead):
            rest = text[len(lead):]
            if lead == "那" and rest[:1] and rest[0] in _ZH_DEMONSTRATIVE_AFTER_NA:
                break  # 那个 / 那些: "that", not "then"
            text, marked = rest.lstrip(_TRIM), True
            break
    while text and text[-1] in _ZH_TAIL_PARTICLES + _TRIM:
        marked = marked or text[-1] == "呢"
        text = text[:-1]
    text = text.strip(_TRIM)
    if not text or len(text) > (16 if marked else 8) or _ZH_QUESTION.search(text):
        return [], marked
    if re.search(r"[A-Za-z]{2,}", text):
        return [], marked  # mixed scripts: too unsure to rewrite
    subjects = []
    for part in _ZH_JOINERS.split(text):
        part = part.strip()
        if not part:
            continue
        tagged = [(w, tag) for w, tag in _tagged(part) if _is_subject_word(w, tag)]
        words = tuple(w for w, _ in tagged)
        # a thing the policies speak of, or at least a noun: "那谢谢了", "那我知道了" name nothing
        if words and any(tag.startswith(_NOMINAL_TAGS) or w in idf for w, tag in tagged):
            subjects.append(_Subject(text=_trim_function_words(part, words), words=words, english=False))
    if not subjects or sum(len(s.words) for s in subjects) > (4 if marked else 2):
        return [], marked
    return subjects, marked


def _english_subjects(message: str) -> tuple[list[_Subject], bool]:
    from knowledge.tokenize import english_concepts

    text = unicodedata.normalize("NFKC", message).strip(_TRIM)
    m = _EN_LEADS.match(text)
    marked = bool(m)
    if m:
        text = text[m.end():]
    text = _EN_TAILS.sub("", text.strip(_TRIM)).strip(_TRIM)
    words = re.findall(r"[A-Za-z][A-Za-z\-']*", text)
    while words and words[0].lower() in _EN_DETERMINERS:
        text = text[len(words[0]):].lstrip()
        words = words[1:]
    if not words or len(words) > (5 if marked else 3) or any(w.lower() in _EN_QUESTION for w in words):
        return [], marked
    if all(w.lower() in _EN_NON_SUBJECTS or w.lower() in _EN_DETERMINERS for w in words):
        return [], marked  # "what about now?", "and you?"
    if re.search(r"[\u3400-\u9fff]", text):
        return [], marked
    lowered = text.lower()
    units = english_concepts(text)
    units.sort(key=lambda u: lowered.find(u[0]) if u[0] in lowered else len(lowered))
    terms = tuple(zh.split()[0] if zh else "" for _, zh in units)
    return [_Subject(text=text, words=tuple(w.lower() for w in words), english=True, terms=terms)], marked


def _chinese_candidates(question: str, idf: Mapping[str, float]) -> list[_Candidate]:
    from knowledge.tokenize import words as content_words

    folded = unicodedata.normalize("NFKC", question)
    tags = dict(_tagged(folded))
    top = max(idf.values(), default=1.0)
    out: list[_Candidate] = []
    for word in content_words(folded):
        tag = tags.get(word, "x")
        if not _is_subject_word(word, tag):
            continue
        score = _idf_of(word, idf, top)
        if tag.startswith("v") and tag != "vn":
            score *= 0.75  # 享受, 具备, 实行: a predicate more often than a subject
        out.append(_Candidate(surface=word, key=word, score=score, tag=tag))
    if out:
        out[0].score *= 1.3  # Chinese puts the topic first ("联席会议多久开一次", "进修人员需要…")
    return out


def _english_candidates(question: str, idf: Mapping[str, float]) -> list[_Candidate]:
    from knowledge.tokenize import english_concepts
    from knowledge.tokenize import words as content_words

    top = max(idf.values(), default=1.0)
    out: list[_Candidate] = []
    for phrase, zh in english_concepts(question):
        if any(w in _EN_QUESTION for w in phrase.split()):
            continue  # "how often" says what kind of answer is wanted, not what it is about
        terms = tuple(zh.split())
        scores = [_idf_of(w, idf, top) for t in terms for w in (content_words(t) or [t])]
        score = max(scores, default=0.0) if terms else 0.1  # an unmapped word ("meet") is rarely the subject
        out.append(_Candidate(surface=phrase, key=phrase, score=score, terms=terms))
    return out


def _without_repeats(subject: _Subject, candidates: list[_Candidate], previous: str) -> _Subject | None:
    """"下转患者" after "上转患者享受…": 患者 is already there, the new subject is 下转."""
    if subject.english:
        if subject.text.lower() in previous.lower():
            return None
        return subject
    keys = {c.key for c in candidates}
    kept = [w for w in subject.words if w not in keys and w not in previous]
    if not kept:
        return None
    if len(kept) == len(subject.words):
        return subject
    text = subject.text
    for w in subject.words:
        if w not in kept and (text.startswith(w) or text.endswith(w)):
            text = text[len(w):] if text.startswith(w) else text[: -len(w)]
    return _Subject(text=text or "".join(kept), words=tuple(kept), english=False)


def _same_kind(subject: _Subject, candidates: list[_Candidate]) -> _Candidate | None:
    """The candidate of the same kind as ``subject`` (the best by score), or None."""
    best: _Candidate | None = None
    for c in candidates:
        if c.used or not _kindred(subject, c):
            continue
        if best is None or c.score > best.score:
            best = c
    return best


def _kindred(subject: _Subject, candidate: _Candidate) -> bool:
    if subject.english and candidate.terms:  # English after English: the same head word, or kindred terms
        if subject.words and subject.words[-1].rstrip("s") == candidate.key.split()[-1].rstrip("s"):
            return True
    new_terms = subject.terms if subject.english else subject.words
    old_terms = candidate.terms if candidate.terms else (candidate.key,)
    for new in new_terms:
        for old in old_terms:
            if new and old and new != old and _same_head(new, old):
                return True
    if not subject.english and not candidate.terms:
        new_tags = {tag for w in subject.words for _, tag in _tagged(w)}
        if candidate.tag in _PROPER_TAGS and new_tags & _PROPER_TAGS:
            return True  # 张店 / 德阳
    return False


def _same_head(a: str, b: str) -> bool:
    """Chinese compounds end in their head morpheme: 理事会/联席会议 (会), 上转/下转, 医联体/医共体."""
    if not (re.match(r"^[\u3400-\u9fff]+$", a) and re.match(r"^[\u3400-\u9fff]+$", b)):
        return False
    return a[-1] in b[-2:] or b[-1] in a[-2:]


def _in_language(subject: _Subject, *, english: bool) -> str | None:
    """The subject's text for a question in English (``english``) or Chinese."""
    if subject.english == english:
        return subject.text
    if not english:  # an English subject in a Chinese question: its policy terms
        if not subject.terms or not all(subject.terms):
            return None
        terms: list[str] = []
        for term in subject.terms:  # "downward referrals": 下转 says it all, not 下转转诊
            if term not in terms and not any(_same_head(t, term) or term in t for t in terms):
                terms.append(term)
        return "".join(terms)
    phrases = []
    for word in subject.words:  # a Chinese subject in an English question
        phrase = _english_phrase(word)
        if phrase is None:
            return None
        phrases.append(phrase)
    return " ".join(phrases)


def _english_phrase(term: str) -> str | None:
    from knowledge import tokenize

    found = [en for en, zh in getattr(tokenize, "EN_ZH", {}).items() if term in zh.split()]
    return max(found, key=len) if found else None


def _replace(question: str, candidate: _Candidate, replacement: str, *, english: bool) -> str | None:
    if english:
        pattern = re.compile(rf"\b{re.escape(candidate.surface)}[a-z']*", re.IGNORECASE)
        out, n = pattern.subn(replacement, question, count=1)
        return out if n else None
    for text in (question, unicodedata.normalize("NFKC", question)):
        pattern = re.compile(r"\s*".join(map(re.escape, candidate.surface)), re.IGNORECASE)
        out, n = pattern.subn(lambda _: replacement, text, count=1)
        if n:
            return out
    return None


def _tagged(text: str) -> list[tuple[str, str]]:
    from knowledge.tokenize import words as content_words

    content_words("")  # loads jieba with the consortium glossary
    import jieba.posseg

    return [(p.word, p.flag) for p in jieba.posseg.lcut(text)]


def _is_subject_word(word: str, tag: str) -> bool:
    from knowledge.tokenize import EN_STOPWORDS, STOPWORDS

    word = word.strip()
    if len(word) < 2 or word in _ZH_NON_SUBJECTS or word in STOPWORDS or word.lower() in EN_STOPWORDS:
        return False
    if not re.search(r"\w", word):
        return False
    if _ZH_NUMERAL_START.match(word) and tag not in _PROPER_TAGS:
        return False  # 一次, 每届, 两年, 这个
    return not tag.startswith(_NON_SUBJECT_TAGS)


def _trim_function_words(part: str, words: Sequence[str]) -> str:
    """The stretch of ``part`` from its first to its last subject word."""
    start = min((part.find(w) for w in words if w in part), default=0)
    end = max((part.find(w) + len(w) for w in words if w in part), default=len(part))
    return part[start:end] or part


def _idf_of(word: str, idf: Mapping[str, float], top: float) -> float:
    """The IDF of a word, of its rarest inner bigram when jieba never kept it whole, or the
    top IDF for a word the policies never use (the subject of an off-topic question)."""
    if word in idf:
        return float(idf[word])
    grams = [idf["#" + word[i:i + 2]] for i in range(len(word) - 1) if "#" + word[i:i + 2] in idf]
    return float(max(grams)) if grams else top


def _squeeze(text: str) -> str:
    return re.sub(r"[\s?？。.!！~～,，;；:：…'\"“”‘’()（）]+", "", unicodedata.normalize("NFKC", text))


def _residual(text: str, vocabulary: Sequence[str]) -> str:
    for word in sorted(vocabulary, key=len, reverse=True):
        text = text.replace(word, " ")
    return re.sub(r"\s+", "", text)


# ------------------------------------------------------------------------------------------------
# replies made from the context


def source_reply(context: Context, index: int | None, *, english: bool) -> str:
    """Where a quote of the last answer comes from: its document and section (no retrieval)."""
    quotes = context.quotes
    if not quotes:
        return ("My last answer quoted no policy clause, so there is no source to show. Please ask your question again."
                if english else "上次的回答没有引用任何政策条款，所以没有出处可查。请重新提问。")
    if index is None and len(quotes) > 1:
        lines = [f"{k + 1}. {_describe(q, english)}" for k, q in enumerate(quotes)]
        head = "The clauses quoted in my last answer come from:" if english else "上次回答引用的条款出自："
        return "\n".join([head, *lines])
    if index is None:
        index = 0
    if index == -1:
        index = len(quotes) - 1
    if not 0 <= index < len(quotes):
        lines = [f"{k + 1}. {_describe(q, english)}" for k, q in enumerate(quotes)]
        head = (f"My last answer quoted {len(quotes)} clause{'s' if len(quotes) > 1 else ''}:" if english
                else f"上次回答只引用了 {len(quotes)} 条条款：")
        return "\n".join([head, *lines])
    number = index + 1
    head = (f"Quote {number} of my last answer is from:" if english and len(quotes) > 1
            else "The clause in my last answer is from:" if english
            else f"上次回答中的第 {number} 条引文出自：" if len(quotes) > 1 else "上次回答引用的条款出自：")
    return f"{head}\n{_describe(quotes[index], english)}"


def _describe(quote: QuoteRef, english: bool) -> str:
    document, _, section = quote.citation.partition(" › ")
    if not section:
        return document
    return f"{document}, section: {section}" if english else f"{document}，位置：{section}"


def more_reply(context: Context, hits: Sequence[Any], *, refused: bool, english: bool) -> tuple[str, Context]:
    """The next best clauses of the last question that were not shown yet (from ``hits``, the
    knowledge base's hits for ``context.question``), and the context after showing them."""
    shown = set(context.shown_ids)
    shown_citations = [q.citation for q in context.quotes]
    shown_citations += [_citation(h.chunk) for h in hits if h.chunk.id in shown]
    picked: list[Any] = []
    if not refused and hits:
        top = max(h.score for h in hits) or 1.0
        for hit in hits:
            if len(picked) == MAX_MORE_QUOTES:
                break
            citation = _citation(hit.chunk)
            if hit.chunk.id in shown or hit.score < MORE_MIN_SCORE_RATIO * top:
                continue
            if getattr(hit, "coverage", 1.0) < MORE_MIN_COVERAGE:
                continue
            if any(_nested(citation, c) for c in shown_citations + [_citation(p.chunk) for p in picked]):
                continue  # a list clause and one of its items say the same
            picked.append(hit)
    if not picked:
        text = ("I found no further clauses on “{q}” in the indexed policy documents." if english
                else "关于“{q}”，已收录的政策文件中没有更多相关条款了。").format(q=context.question)
        return text, context
    quotes = tuple(QuoteRef(_citation(h.chunk), h.chunk.id) for h in picked)
    head = ("Further clauses that may be relevant to “{q}” (quoted in the original Chinese):" if english
            else "关于“{q}”，其他可能相关的条款：").format(q=context.question)
    source = "Source: " if english else "出处："
    parts = [head]
    for k, (hit, quote) in enumerate(zip(picked, quotes, strict=True)):
        body = truncate_utf8(" ".join(str(getattr(hit.chunk, "body", "")).split()), MORE_QUOTE_BYTES)
        parts.append(f"{k + 1}. “{body}”\n—— {source}{quote.citation}")
    after = Context(context.question, context.consortium, context.language, quotes,
                    tuple(dict.fromkeys([*context.shown_ids, *(q.chunk_id for q in quotes)])))
    return "\n\n".join(parts), after


def _citation(chunk: Any) -> str:
    return " › ".join([f"《{chunk.document_title}》", *chunk.heading_path])


def _nested(a: str, b: str) -> bool:
    return a == b or a.startswith(b + " › ") or b.startswith(a + " › ")


__all__ = [
    "CONTEXT_DIALOG",
    "CONTEXT_STEP",
    "Context",
    "Followup",
    "Kind",
    "QuoteRef",
    "asks_for_more",
    "interpret",
    "more_reply",
    "rewrite",
    "source_reference",
    "source_reply",
]
