"""Phase 2: the Forge training loop (forge_loop.py) and its controllers."""
