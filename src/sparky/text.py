"""Facts about text that search and the stores share."""

from __future__ import annotations

import re

# Kana and CJK ideographs: written without spaces, so a tokenizer that splits on spaces and punctuation
# keeps whole runs of them as one token.
UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
