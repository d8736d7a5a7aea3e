"""Whole lists: "协作内容都包括哪几方面？" is answered with every item of the list, not one.

Policies often write a list as a heading ("3.2 协作内容") over numbered sub-clauses (3.2.1 管理合作,
3.2.2 技术合作 …), each its own chunk. A question asking for the list ("哪些", "哪几", "包括",
"what are") whose best clause is one such item, under a heading the question names, gets all the
items of that heading in order, each with its own title, within one message; if they do not fit,
the first ones and how many more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from knowledge.textnorm import split_sentences, truncate_utf8, utf8_len

_ASKS_LIST = re.compile(r"哪些|哪几|哪[两三四五六七八九十]|几个方面|包括什么|包括啥|都有什么|都有啥|有什么|列出|"
                        r"\bwhat are\b|\bwhich\b|\blist\b", re.IGNORECASE)
MAX_LIST_BYTES = 1800
#: The list's heading must carry this much of the question ("协作内容" of "协作内容都包括哪几方面").
MIN_HEADING_SHARE = 0.3


def asks_list(question: str) -> bool:
    return bool(_ASKS_LIST.search(question))


@dataclass(frozen=True)
class ListAnswer:
    title: str
    parent: tuple[str, ...]
    items: tuple[tuple[str, str], ...]  # (item heading, body)

    def text(self, language: str) -> str:
        where = " › ".join([f"《{self.title}》", *self.parent])
        lines, used, shown = [], 0, 0
        # every item gets its share of the message: long ones are cut to their first words
        item_bytes = max(90, MAX_LIST_BYTES // len(self.items) - 12)
        for i, (heading, body) in enumerate(self.items):
            first = body if utf8_len(body) <= item_bytes else (split_sentences(body) or [body])[0]
            if utf8_len(first) > item_bytes:
                first = truncate_utf8(first, item_bytes - 3).rstrip("，,、；;") + "…"
            line = f"{i + 1}. {heading}：{first}" if heading and heading not in first else f"{i + 1}. {first}"
            if used + utf8_len(line) > MAX_LIST_BYTES:
                break
            lines.append(line)
            used += utf8_len(line) + 1
            shown += 1
        more = len(self.items) - shown
        if language == "en":
            head = f"{where} lists {len(self.items)} items (quoted in the original Chinese):"
            tail = f"\n… and {more} more." if more else ""
            return head + "\n" + "\n".join(lines) + tail + f"\n—— Source: {where}"
        tail = f"\n…另有 {more} 项未列出。" if more else ""
        return f"{where} 共列出 {len(self.items)} 项：\n" + "\n".join(lines) + tail + f"\n—— 出处：{where}"


def whole_list(query, hits: list, chunks: list) -> ListAnswer | None:
    """All items of the list the best clause belongs to, when the question names the list's heading."""
    if not hits:
        return None
    top = hits[0].chunk
    if top.kind != "clause" or len(top.heading_path) < 2:
        return None
    parent = top.heading_path[:-1]
    about_list = query.share(frozenset(_words(parent[-1])))
    if about_list < MIN_HEADING_SHARE or about_list < query.share(frozenset(_words(top.heading_path[-1]))):
        return None  # the question is about this item, or not about this list as a whole
    items = [c for c in chunks if c.kind == "clause" and c.document_title == top.document_title
             and len(c.heading_path) == len(top.heading_path) and c.heading_path[:-1] == parent]
    if len(items) < 2:
        return None
    return ListAnswer(top.document_title, parent, tuple((_strip_number(c.heading_path[-1]), c.body) for c in items))


def _words(text: str) -> list[str]:
    from knowledge.tokenize import tokenize

    return tokenize(text)


def _strip_number(heading: str) -> str:
    return re.sub(r"^[\d.．、（）()一二三四五六七八九十]+\s*", "", heading).strip()


__all__ = ["ListAnswer", "asks_list", "whole_list"]
