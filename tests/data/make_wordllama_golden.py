"""Write wordllama_golden.json: the official wordllama vectors of a few varied texts, for test_static_embedder.

Run it with a Python that has the official package and its dependencies installed, outside the project's venv:

    python3 -m venv /tmp/wlref && /tmp/wlref/bin/pip install wordllama==0.4.0.post1
    /tmp/wlref/bin/python tests/data/make_wordllama_golden.py

The vectors are ``WordLlama.load().embed(texts)`` (l2_supercat, 256 dimensions, not normalised), rounded
to 6 decimals. ``load`` looks for the tokenizer under ``tokenizer/`` in the package, but the wheel ships it
under ``tokenizers/``, so it would download it from Hugging Face: the packaged file is copied into a
temporary cache directory instead, and downloads are disabled.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import wordllama
from wordllama import WordLlama

OUT = Path(__file__).with_name("wordllama_golden.json")
LONG = "\n\n".join(
    f"Step {n}: rebuild the index after changing the embedding model, then compare recall@5 on the "
    f"labelled queries; if chunk {n} of the export still fails, log its key and retry with a smaller batch."
    for n in range(1, 25)
)
TEXTS = [
    "",
    "   ",
    "\n\t \n",
    "hi",
    "How do I fix 'permission denied' on /var/run/docker.sock?",
    LONG,
    "def chunk(xs, n):\n    for i in range(0, len(xs), n):\n        yield xs[i : i + n]  # last one may be short\n",
    "¿Cuál es la mejor receta de shakshuka con huevos y pimientos?",
    "你好，世界！今日はいい天気ですね。안녕하세요",
    "🎉🚀 Launch day! 👩‍💻 ready to ship 🙌🏽",
    "Привет, как дела? Καλημέρα κόσμε",
    "| col | val |\n|---|---|\n| a | 1 |\nSee https://example.com/path?q=1&x=%20",
    "naïve café — “quotes” ½ \u200b zero\u00a0width",
]


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        (Path(cache) / "tokenizers").mkdir()
        packaged = Path(wordllama.__file__).parent / "tokenizers" / "l2_supercat_tokenizer_config.json"
        shutil.copy(packaged, Path(cache) / "tokenizers")
        model = WordLlama.load(cache_dir=cache, disable_download=True)
    vectors = model.embed(TEXTS)
    source = f"wordllama {wordllama.__version__}: WordLlama.load().embed(texts)"
    rows = ",\n".join("  " + json.dumps([round(float(x), 6) for x in vector]) for vector in vectors)
    OUT.write_text(f'{{\n "source": {json.dumps(source)},\n "texts": {json.dumps(TEXTS, ensure_ascii=False)},\n'
                   f' "vectors": [\n{rows}\n ]\n}}\n', encoding="utf-8")


if __name__ == "__main__":
    main()
