"""Phase 0, foundation: the ancestor, its specialists, and their evaluation (stage `base`)."""
