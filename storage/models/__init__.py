"""All ORM models; importing this package registers every table on ``Base.metadata``."""

from storage.models.knowledge import Chunk, Document, KnowledgeState

__all__ = ["Chunk", "Document", "KnowledgeState"]
