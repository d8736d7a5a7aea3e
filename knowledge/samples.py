"""The sample policies shipped with the product, and the consortium each one governs."""

from __future__ import annotations

import json
from pathlib import Path

SAMPLES_DIR = Path(__file__).parent / "samples"


def sample_policies() -> list[tuple[Path, str | None]]:
    tags = json.loads((SAMPLES_DIR / "consortia.json").read_text(encoding="utf-8"))
    return [(p, tags.get(p.name)) for p in sorted(SAMPLES_DIR.glob("*.txt"))]
