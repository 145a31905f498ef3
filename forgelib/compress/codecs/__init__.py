"""Weight codecs: one file per method, listed explicitly in :mod:`.registry`.

Each codec is ``encode(tensor, config) -> Payload`` and ``decode(payload) -> tensor`` with a
frozen, validated config dataclass and a paper citation (see :mod:`.base`).
"""
