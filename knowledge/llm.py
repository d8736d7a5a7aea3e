"""Optional LLM synthesis through LangChain, grounded only in the retrieved clauses.

The model sees the clauses the extractive answer would quote (numbered), and must answer from
them alone, citing them as [1], [2]… Its answer is used only if every citation points at one of
those clauses and at least one is given; on a timeout, an error, an empty answer, "NOT_FOUND" or
an unchecked citation, the user gets the extractive answer instead. Sources are always printed
by us, from our own citation strings — never from the model's text.
"""

from __future__ import annotations

import logging
import re

from knowledge.answer import MAX_ANSWER_BYTES, Answer
from knowledge.textnorm import truncate_utf8, utf8_len

log = logging.getLogger(__name__)

_CITATION = re.compile(r"\[(\d{1,2})\]")

SYSTEM_PROMPT = (
    "你是医联体政策助手。只能根据用户消息中编号的政策条款作答，不得使用条款以外的知识，不得编造。"
    "用简洁的{language}回答（不超过200字），每个事实后用 [编号] 标注出处，例如 [1]。"
    "如果条款不能回答问题，只输出 NOT_FOUND。"
)


class LlmSynthesizer:
    """Turns an extractive answer into a short synthesised one, or leaves it as it is."""

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout_s: float) -> None:
        from langchain_openai import ChatOpenAI

        self._llm = ChatOpenAI(
            base_url=base_url,
            model=model,
            api_key=api_key or "not-needed",
            timeout=timeout_s,
            max_retries=0,
            temperature=0,
        )

    def improve(self, extractive: Answer) -> Answer:
        if not extractive.quotes:
            return extractive
        from langchain_core.messages import HumanMessage, SystemMessage

        clauses = "\n".join(f"[{i + 1}] {q.citation}\n{q.text}" for i, q in enumerate(extractive.quotes))
        language = "英文" if extractive.language == "en" else "中文"
        messages = [
            SystemMessage(SYSTEM_PROMPT.format(language=language)),
            HumanMessage(f"政策条款：\n{clauses}\n\n问题：{extractive.question}"),
        ]
        try:
            reply = self._llm.invoke(messages)
        except Exception as exc:  # timeouts, HTTP errors, bad JSON: all mean "use the extractive answer"
            log.warning("llm failed, using extractive answer", extra={"error": type(exc).__name__})
            return extractive
        text = str(reply.content or "").strip()
        cited = checked_citations(text, len(extractive.quotes))
        if not cited:
            log.warning("llm answer rejected: missing or unknown citations", extra={"answer_bytes": utf8_len(text)})
            return extractive
        sources_label = "Sources:" if extractive.language == "en" else "出处："
        sources = "\n".join(f"[{n}] {extractive.quotes[n - 1].citation}" for n in cited)
        footer = f"\n\n{sources_label}\n{sources}"
        body = truncate_utf8(text, MAX_ANSWER_BYTES - utf8_len(footer))
        return Answer(
            extractive.question,
            body + footer,
            False,
            extractive.language,
            [extractive.quotes[n - 1] for n in cited],
            extractive.hits,
            synthesized=True,
        )


def checked_citations(text: str, n_clauses: int) -> list[int]:
    """The clause numbers ``text`` cites, in order; [] when any is out of range or none is given."""
    if not text or "NOT_FOUND" in text:
        return []
    numbers = [int(m) for m in _CITATION.findall(text)]
    if not numbers or any(n < 1 or n > n_clauses for n in numbers):
        return []
    return sorted(set(numbers))


def make_synthesizer(settings) -> LlmSynthesizer | None:
    if not (settings.llm_base_url and settings.llm_model):
        return None
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    return LlmSynthesizer(settings.llm_base_url, settings.llm_model, key, settings.llm_timeout_s)
