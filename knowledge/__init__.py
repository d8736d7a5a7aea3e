"""Policy knowledge base: ingestion, clause-aware chunking, hybrid retrieval, grounded answers."""
