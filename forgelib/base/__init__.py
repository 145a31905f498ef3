"""Phase 0, `base`: the ancestor, its specialists, their supervised fine-tuning loop and their evaluation."""
