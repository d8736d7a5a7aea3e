"""Optional LLM synthesis (placeholder until implemented)."""

from __future__ import annotations


def make_synthesizer(settings):
    return None
