"""Phase 2: the Forge training loop (sft.py for the base stage, forge_loop.py with controllers)."""
