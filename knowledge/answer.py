"""Extractive answers: the one to three best clauses, quoted, each with where it comes from.

Pure functions over retrieval hits. The answer never says anything the quoted clauses do not:
its only own words are the framing ("根据…" / "According to…") and the refusal. It always fits in
one WeCom message (2048 bytes of UTF-8).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from knowledge.textnorm import fold, split_sentences, truncate_utf8, utf8_len

MAX_ANSWER_BYTES = 2048
MAX_QUOTES = 3
# Evidence strength (IDF-weighted share of the question's terms found in one clause) below which
# the policies are taken not to cover the question.
MIN_COVERAGE = 0.5
MIN_COVERAGE_NAMED = 0.3
MAX_UNKNOWN_SHARE = 0.3
SECONDARY_RATIO = 0.85  # a second/third clause is quoted only when nearly as relevant
TOP_SHARE = 0.55  # of the byte budget, for the best clause when several are quoted
TOP_QUOTE_BYTES = 600  # ~200 Chinese characters: a short clause whole, else its most relevant sentences
OTHER_QUOTE_BYTES = 360
LIST_QUOTE_BYTES = 1200
# Other sentences of a long clause are quoted beside the best one when nearly as relevant; a
# sentence with the kind of answer asked for (每季度…) outranks ones that merely name the subject.
NEIGHBOUR_RATIO = 0.85


@dataclass(frozen=True)
class Quote:
    citation: str
    text: str
    chunk_id: str


@dataclass
class Answer:
    question: str
    text: str
    refused: bool
    language: str  # "zh" | "en"
    quotes: list[Quote] = field(default_factory=list)
    hits: list = field(default_factory=list)
    ms: float = 0.0
    synthesized: bool = False

    @property
    def citations(self) -> list[str]:
        return [q.citation for q in self.quotes]


REFUSAL_ZH = (
    "抱歉，在已收录的医联体政策文件中没有找到与此问题直接相关的规定，我不能凭空作答。\n"
    "建议咨询本院医务科或医联体办公室（联络员），或请管理员上传相关文件后再问。\n"
    "发送“帮助”可查看我能做什么。"
)
REFUSAL_EN = (
    "Sorry, I could not find a rule on this in the consortium's indexed policy documents, and I will "
    "not guess. Please ask your hospital's medical affairs office or the consortium liaison officer, "
    "or ask an admin to upload the relevant document. Send \"help\" to see what I can do."
)
EN_HEADER = "According to the policy documents (quoted in the original Chinese):"
EMPTY_KB_ZH = "知识库中还没有任何政策文件。请管理员先上传文件（PDF、DOCX、TXT 或 MD）。"
EMPTY_KB_EN = "The knowledge base has no policy documents yet. Please ask an admin to upload some."


def evidence_strength(hits: list) -> float:
    return max((h.coverage for h in hits[:5]), default=0.0)


def is_covered(hits: list) -> bool:
    """Do the policies speak about this question at all?

    The question's words are weighed by rarity. It is covered when the best clauses contain
    most of that weight, and little of it is on words no policy uses at all (停车场, 年终奖,
    Wi-Fi): those are the subject of an off-topic question, whatever generic words (医院, 标准)
    it shares with the policies. A question naming one of our documents ("临沧…", "油田医院…")
    is very likely about it and may use its own words for what the policy says ("口号").
    """
    if not hits:
        return False
    strength = evidence_strength(hits)
    if hits[0].named:
        return strength >= MIN_COVERAGE_NAMED
    return strength >= MIN_COVERAGE and hits[0].unknown_share < MAX_UNKNOWN_SHARE


def compose(question: str, hits: list, *, language: str, relevance: Callable[[str], float],
            covered: bool | None = None, consortium: str | None = None) -> Answer:
    """Quote the best clauses for ``question``, or refuse when the policies do not answer it.

    ``covered`` is the answerability decision (``knowledge.answerability``); without it the
    plain coverage cut ``is_covered`` decides. ``relevance(text)`` scores a sentence against the
    question (``Query.relevance``); it picks what to quote from a clause too long to quote whole.
    ``consortium`` is the asker's: a rule quoted from another consortium's document says so.
    """
    if not (is_covered(hits) if covered is None else covered):
        return Answer(question, REFUSAL_EN if language == "en" else REFUSAL_ZH, True, language, hits=hits)
    chosen = _choose(hits)
    header = EN_HEADER if language == "en" else ""
    budget = MAX_ANSWER_BYTES - utf8_len(header) - 8
    quotes: list[Quote] = []
    for i, hit in enumerate(chosen):
        remaining = budget - sum(utf8_len(_format_quote(q, language, len(chosen) > 1, k)) for k, q in enumerate(quotes))
        # the best clause gets the larger share; the others split what is left
        share = remaining * (TOP_SHARE if i == 0 and len(chosen) > 1 else 1.0 / (len(chosen) - i))
        citation = hit.chunk.citation
        cap = TOP_QUOTE_BYTES if i == 0 else OTHER_QUOTE_BYTES
        if "\n" in hit.chunk.body:  # a list clause with its items: the items are the answer
            cap = max(cap, LIST_QUOTE_BYTES)
        text_budget = min(cap, int(share) - utf8_len(citation) - 24)
        if text_budget < 60:
            break
        quotes.append(Quote(citation, _excerpt(hit.chunk.body, relevance, text_budget), hit.chunk.id))
    parts = [header] if header else []
    foreign = _foreign_note(chosen[: len(quotes)], consortium, language)
    if foreign:
        parts.append(foreign)
    parts += [_format_quote(q, language, len(quotes) > 1, k) for k, q in enumerate(quotes)]
    text = "\n\n".join(parts)
    return Answer(question, truncate_utf8(text, MAX_ANSWER_BYTES), False, language, quotes, hits)


def _foreign_note(chosen: list, consortium: str | None, language: str) -> str:
    """Say so when the quoted rules are another consortium's (the asker's own documents rank
    first whenever they say something relevant, so theirs had nothing closer)."""
    if not consortium:
        return ""
    # a document the question names itself ("张店的…") needs no warning
    others = [h.chunk for h in chosen
              if h.chunk.consortium and h.chunk.consortium != consortium and not getattr(h, "named", False)]
    if not others:
        return ""
    titles = "、".join(dict.fromkeys(f"《{c.document_title}》" for c in others))
    if len(others) == len(chosen):
        return (f"Your consortium's documents have no rule on this; the closest is another consortium's ({titles}), "
                "for reference only:" if language == "en" else
                f"本医联体的文件中没有找到直接相关的规定。以下是其他医联体文件{titles}中的规定，仅供参考：")
    return (f"Note: {titles} is another consortium's document." if language == "en" else
            f"注意：{titles}是其他医联体的文件，仅供参考。")


def _choose(hits: list) -> list:
    """The best hit, plus up to two nearly-as-good ones that add something new.

    When several chosen clauses are items of one list and the list clause itself (which carries
    all its items) was retrieved too, the list clause is quoted instead of its items.
    """
    chosen = [hits[0]]
    for hit in hits[1:]:
        if len(chosen) == MAX_QUOTES or hit.score < SECONDARY_RATIO * hits[0].score:
            break
        if not any(_overlaps(hit.chunk, c.chunk) for c in chosen):
            chosen.append(hit)
    for parent in hits[:10]:
        items = [c for c in chosen if c is not parent and _is_item_of(c.chunk, parent.chunk)]
        if len(items) >= 2 or (items and items[0] is chosen[0] and len(chosen) == 1):
            first = chosen.index(items[0])
            chosen = [c for c in chosen if c not in items and c is not parent]
            chosen.insert(min(first, len(chosen)), parent)
            break
    return chosen


def _is_item_of(child, parent) -> bool:
    depth = len(parent.heading_path)
    return (
        child.document_title == parent.document_title
        and len(child.heading_path) > depth
        and child.heading_path[:depth] == parent.heading_path
        and fold(child.body) in fold(parent.body)
    )


def _format_quote(quote: Quote, language: str, numbered: bool, index: int) -> str:
    prefix = f"{index + 1}. " if numbered else ""
    source = "Source: " if language == "en" else "出处："
    return f"{prefix}“{quote.text}”\n—— {source}{quote.citation}"


def _overlaps(a, b) -> bool:
    """Two chunks that quote the same words (a list clause and one of its items)."""
    fa, fb = fold(a.body), fold(b.body)
    return fa in fb or fb in fa


def _excerpt(body: str, relevance: Callable[[str], float], max_bytes: int) -> str:
    """The whole clause when it fits; otherwise its sentences most relevant to the question."""
    body = body.strip()
    if utf8_len(body) <= max_bytes:
        return body
    body = body.replace("\n", " ")
    sentences = split_sentences(body)
    if not sentences:
        return truncate_utf8(body, max_bytes)
    scores = [relevance(s) for s in sentences]
    best = max(range(len(sentences)), key=lambda i: (scores[i], -i))
    if utf8_len(sentences[best]) + 3 > max_bytes:
        # the most relevant sentence alone is too long: quote the part around what matched
        return _window(sentences[best], relevance, max_bytes)
    keep = [best]
    used = utf8_len(sentences[best]) + 3
    # then the next most relevant sentences that still say something about the question
    for i in sorted(range(len(sentences)), key=lambda i: (-scores[i], i)):
        if i == best or scores[i] < NEIGHBOUR_RATIO * scores[best] or scores[i] == 0:
            continue
        size = utf8_len(sentences[i]) + 3
        if used + size <= max_bytes:
            keep.append(i)
            used += size
    keep.sort()
    out = []
    for j, i in enumerate(keep):
        if (j == 0 and i > 0) or (j and i != keep[j - 1] + 1):
            out.append("…")
        out.append(sentences[i])
    if keep[-1] != len(sentences) - 1:
        out.append("…")
    return "".join(out)


def _window(sentence: str, relevance: Callable[[str], float], max_bytes: int) -> str:
    """The stretch of an over-long sentence where the question's words are densest."""
    parts = [p for p in re.split(r"(?<=[，,、：:])", sentence) if p]
    best_text, best_score = "", -1.0
    for start in range(len(parts)):
        text = ""
        for part in parts[start:]:
            if utf8_len(text + part) + 6 > max_bytes:
                break
            text += part
        score = relevance(text) if text else -1.0
        if score > best_score:
            best_text, best_score = text, score
    if not best_text:
        return truncate_utf8(sentence, max_bytes)
    prefix = "" if sentence.startswith(best_text) else "…"
    suffix = "" if sentence.endswith(best_text) else "…"
    return prefix + best_text + suffix
