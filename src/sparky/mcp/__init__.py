"""The memory as a Model Context Protocol server: ``sparky mcp`` (stdio) and ``sparky mcp --http``.

``tools`` holds the tool bodies (search as exchanges, conversations, stats) over the public Searcher and
Store APIs, ``catalogue`` the conversation reads composed from the store protocol, ``exchanges`` the
question/answer pairing, ``budget`` the size limit, ``results`` the answers' shapes and text, ``auth`` who
may connect over HTTP, ``server`` the SDK server and its transports. Needs the ``mcp`` extra.
"""
