#!/usr/bin/env python3
"""Generate a synthetic ChatGPT export of any size, for tests and benchmarks.

    python sample/generate.py --conversations 544 --messages 13719 --out DIR [--seed N] [--shards K]

Writes DIR/conversations.json (or DIR/conversations-000.json ... with --shards K > 1) in the real export
structure: a client-created-root, mapping/parent/children, current_node, abandoned branches (edited
questions, regenerated answers), hidden system nodes, custom instructions, reasoning and tool-call nodes.
The canonical branches hold exactly --messages meaningful user/assistant messages in total, so tests can
assert counts. Deterministic for a seed; writes conversation by conversation, so any size fits in memory.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import uuid
from pathlib import Path
from typing import Iterator

TOPICS: dict[str, dict[str, list[str]]] = {
    "python": {
        "noun": ["generator", "decorator", "virtualenv", "dataclass", "context manager", "list comprehension",
                 "type hint", "asyncio task", "pytest fixture", "dictionary", "import cycle", "wheel file"],
        "tool": ["pip", "poetry", "mypy", "ruff", "pytest", "uv", "black", "pyenv"],
        "verb": ["refactor", "profile", "package", "vectorise", "debug", "annotate", "cache", "serialise"],
    },
    "docker": {
        "noun": ["container", "image layer", "volume", "bridge network", "healthcheck", "Dockerfile",
                 "compose file", "build cache", "registry", "entrypoint script", "bind mount", "base image"],
        "tool": ["docker compose", "buildx", "podman", "dive", "hadolint", "containerd", "trivy"],
        "verb": ["rebuild", "tag", "prune", "publish", "mount", "expose", "restart", "inspect"],
    },
    "cooking": {
        "noun": ["sourdough starter", "risotto", "béchamel", "marinade", "cast-iron pan", "brine", "stock",
                 "pastry dough", "caramel", "vinaigrette", "ragù", "crème brûlée"],
        "tool": ["Dutch oven", "stand mixer", "thermometer", "mandoline", "pressure cooker", "whisk"],
        "verb": ["simmer", "knead", "season", "reduce", "proof", "sear", "emulsify", "blanch"],
    },
    "travel": {
        "noun": ["itinerary", "rail pass", "night train", "hostel", "visa", "layover", "day trip", "ferry",
                 "travel insurance", "museum pass", "mountain hut", "old town"],
        "tool": ["Interrail", "Rome2Rio", "Booking", "Komoot", "Google Maps", "Trainline"],
        "verb": ["book", "reroute", "plan", "budget", "pack", "reserve", "extend", "cancel"],
    },
    "finance": {
        "noun": ["index fund", "emergency fund", "mortgage", "pension", "tax return", "budget spreadsheet",
                 "dividend", "savings rate", "credit card", "bond ladder", "capital gain", "expense ratio"],
        "tool": ["YNAB", "Excel", "a broker app", "Google Sheets", "a tax calculator", "Portfolio Performance"],
        "verb": ["rebalance", "invest", "refinance", "deduct", "track", "allocate", "withdraw", "compare"],
    },
    "kubernetes": {
        "noun": ["deployment", "ingress", "persistent volume claim", "pod", "liveness probe", "namespace",
                 "helm chart", "config map", "node pool", "service account", "resource limit", "cron job"],
        "tool": ["kubectl", "helm", "k9s", "Argo CD", "kustomize", "Prometheus", "Lens"],
        "verb": ["scale", "roll back", "schedule", "drain", "patch", "deploy", "autoscale", "label"],
    },
    "databases": {
        "noun": ["index", "query plan", "foreign key", "transaction", "deadlock", "materialised view",
                 "replica", "migration", "connection pool", "partition", "vacuum", "window function"],
        "tool": ["PostgreSQL", "SQLite", "MySQL", "pgbouncer", "DuckDB", "Redis", "pg_stat_statements"],
        "verb": ["normalise", "index", "partition", "replicate", "optimise", "backfill", "lock", "query"],
    },
    "gardening": {
        "noun": ["tomato seedling", "compost heap", "raised bed", "rose bush", "aphid colony", "mulch layer",
                 "clay soil", "herb spiral", "fig tree", "lawn", "hydrangea", "pumpkin patch"],
        "tool": ["secateurs", "soil tester", "drip irrigation", "wheelbarrow", "cold frame", "rain barrel"],
        "verb": ["prune", "water", "transplant", "fertilise", "harvest", "sow", "divide", "overwinter"],
    },
    "fitness": {
        "noun": ["training plan", "tempo run", "deadlift", "rest day", "heart-rate zone", "warm-up",
                 "protein intake", "mobility routine", "long run", "kettlebell swing", "plank", "taper week"],
        "tool": ["Garmin", "Strava", "a foam roller", "a heart-rate strap", "resistance bands", "a rowing machine"],
        "verb": ["stretch", "recover", "progress", "train", "track", "warm up", "deload", "strengthen"],
    },
    "frontend": {
        "noun": ["component", "useEffect hook", "CSS grid", "bundle size", "hydration error", "form state",
                 "accessibility audit", "service worker", "flexbox layout", "router", "prop", "state store"],
        "tool": ["React", "Vite", "TypeScript", "Tailwind", "Storybook", "Playwright", "Next.js"],
        "verb": ["render", "memoise", "lazy-load", "style", "test", "bundle", "hydrate", "debounce"],
    },
    "languages": {
        "noun": ["subjunctive", "dative case", "irregular verb", "word order", "false friend", "accent",
                 "flashcard deck", "pronunciation", "idiom", "conjugation table", "gender of nouns", "kanji"],
        "tool": ["Anki", "a tandem partner", "DeepL", "a grammar book", "podcasts", "Duolingo"],
        "verb": ["memorise", "conjugate", "translate", "practise", "pronounce", "review", "decline", "read"],
    },
    "photography": {
        "noun": ["aperture", "shutter speed", "white balance", "raw file", "prime lens", "histogram",
                 "golden hour", "tripod", "depth of field", "ISO setting", "colour grade", "long exposure"],
        "tool": ["Lightroom", "darktable", "a polariser", "an ND filter", "Capture One", "a light meter"],
        "verb": ["expose", "frame", "edit", "focus", "bracket", "crop", "sharpen", "meter"],
    },
}
ADJECTIVES = ["reliable", "slow", "cheap", "tricky", "minimal", "robust", "noisy", "flaky", "sensible", "large",
              "fragile", "portable", "obvious", "subtle", "expensive", "quick", "clean", "verbose", "safe", "stale"]
PEOPLE = ["Ana", "Jonas", "Priya", "Mateo", "Yuki", "Fatima", "Lars", "Chloé", "Dmitri", "Amara", "Søren", "Mei"]
QUESTIONS = [
    "How do I {verb} the {noun} without breaking the {noun2}?",
    "My {noun} became {adj} after I started using {tool}. What should I check first?",
    "Is it worth switching from {tool} to {tool2} for a {adj} {noun}?",
    "{person} says I should {verb} the {noun} every {num} days. Does that make sense?",
    "Can you explain the difference between a {noun} and a {noun2} in simple terms?",
    "What is the most {adj} way to {verb} a {noun} when I only have {num} minutes?",
    "I keep getting a {adj} {noun} when I {verb} with {tool}. Any idea why?",
    "Give me a short checklist to {verb} my {noun} before the weekend.",
    "Why would a {noun} fail after {num} attempts even though the {noun2} looks fine?",
    "Could you compare {tool} and {tool2} for someone who wants to {verb} a {noun}?",
]
SENTENCES = [
    "Start by checking whether the {noun} is {adj}, because that is the most common cause.",
    "If you {verb} the {noun} first, the {noun2} usually behaves much better afterwards.",
    "With {tool}, you can {verb} the {noun} in about {num} minutes once the setup is done.",
    "A {adj} {noun} often hides a problem in the {noun2}, so look there next.",
    "Many people try to {verb} everything at once, but changing one {noun} at a time is safer.",
    "The trade-off is simple: {tool} is more {adj}, while {tool2} gives you more control over the {noun}.",
    "Keep a note of what you changed, so you can undo the {noun} if the {noun2} gets worse.",
    "In my experience, {num} percent of these issues come from a {adj} {noun2}.",
    "{person} had the same issue last year and solved it by using {tool} to {verb} the {noun}.",
    "Avoid the temptation to {verb} the {noun2} too often; once every {num} days is plenty.",
    "A good rule of thumb is to treat the {noun} as {adj} until you have measured it.",
    "When the {noun} is {adj}, the fix is usually to {verb} it gently rather than start over.",
    "Check the documentation of {tool} for the section on the {noun}; it explains the defaults well.",
    "The {noun2} and the {noun} interact, so changing one affects the other within {num} hours.",
    "Finally, test the result with a small {noun} before you {verb} the whole thing.",
]
CODE = [
    "```bash\n{tool_cmd} --check {word}\n{tool_cmd} {verb_cmd} {word} --retries {num}\n```",
    "```python\ndef {verb_cmd}_{word}(items, limit={num}):\n    \"\"\"{Verb} each {noun} up to the limit.\"\"\"\n"
    "    return [item for item in items[:limit] if item]\n```",
    "```yaml\n{word}:\n  enabled: true\n  retries: {num}\n  mode: {adj}\n```",
]
HEADINGS = ["What to check", "Why it happens", "Step by step", "A safer approach", "Trade-offs", "Next steps"]


def uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class TextMaker:
    """Sentences from templates filled with one topic's vocabulary."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.fields = {t: [f for _, f, _, _ in string.Formatter().parse(t) if f] for t in QUESTIONS + SENTENCES + CODE}

    def fill(self, template: str, topic: dict[str, list[str]]) -> str:
        rng = self.rng
        values = {}
        for field in self.fields[template]:
            if field in ("noun", "noun2"):
                values[field] = rng.choice(topic["noun"])
            elif field in ("tool", "tool2"):
                values[field] = rng.choice(topic["tool"])
            elif field in ("verb", "Verb", "verb_cmd"):
                verb = rng.choice(topic["verb"])
                values[field] = {"verb": verb, "Verb": verb.capitalize()}.get(field, verb.replace(" ", "_"))
            elif field == "adj":
                values[field] = rng.choice(ADJECTIVES)
            elif field == "person":
                values[field] = rng.choice(PEOPLE)
            elif field == "num":
                values[field] = str(rng.randint(2, 90))
            elif field == "tool_cmd":
                values[field] = rng.choice(topic["tool"]).split()[-1].lower()
            else:  # word
                values[field] = rng.choice(topic["noun"]).split()[-1].lower().replace("-", "_")
        return template.format_map(values)

    def question(self, topic: dict[str, list[str]]) -> str:
        """A user turn of 5-60 words: one to three questions."""
        return " ".join(self.fill(self.rng.choice(QUESTIONS), topic) for _ in range(self.rng.randint(1, 3)))

    def answer(self, topic: dict[str, list[str]]) -> str:
        """An assistant answer of about 100-600 words in paragraphs, sometimes with a heading or code."""
        rng = self.rng
        target = int(rng.triangular(100, 600, 220))
        blocks: list[str] = []
        words = 0
        while words < target:
            if blocks and rng.random() < 0.2:
                blocks.append(f"**{rng.choice(HEADINGS)}**")
            paragraph = " ".join(self.fill(rng.choice(SENTENCES), topic) for _ in range(rng.randint(2, 5)))
            blocks.append(paragraph)
            words += len(paragraph.split())
            if rng.random() < 0.12:
                blocks.append(self.fill(rng.choice(CODE), topic))
        return "\n\n".join(blocks)


class ConversationMaker:
    """One conversation's mapping, built node by node along the canonical branch."""

    def __init__(self, rng: random.Random, text: TextMaker, start: float) -> None:
        self.rng, self.text, self.time = rng, text, start
        self.mapping: dict[str, dict] = {"client-created-root": {
            "id": "client-created-root", "message": None, "parent": None, "children": []}}

    def node(self, parent: str, role: str, content: dict, **fields: object) -> str:
        node_id = uid(self.rng)
        self.time += self.rng.uniform(5, 400)
        message = {"id": node_id, "author": {"role": role, "name": None, "metadata": {}},
                   "create_time": round(self.time, 3), "update_time": None, "content": content,
                   "status": "finished_successfully", "end_turn": role == "assistant" or None, "weight": 1.0,
                   "metadata": {}, "recipient": "all"}
        message.update(fields)
        self.mapping[node_id] = {"id": node_id, "message": message, "parent": parent, "children": []}
        self.mapping[parent]["children"].append(node_id)
        return node_id

    def text_node(self, parent: str, role: str, text: str, **fields: object) -> str:
        return self.node(parent, role, {"content_type": "text", "parts": [text]}, **fields)

    def preamble(self, parent: str) -> str:
        """Hidden system prompt and, sometimes, custom instructions: never meaningful."""
        rng = self.rng
        if rng.random() < 0.4:
            parent = self.text_node(parent, "system", "", weight=0.0,
                                    metadata={"is_visually_hidden_from_conversation": True})
        if rng.random() < 0.15:
            parent = self.node(parent, "user", {"content_type": "user_editable_context",
                                                "user_profile": "I work as a developer.",
                                                "user_instructions": "Answer briefly."},
                               metadata={"is_visually_hidden_from_conversation": True,
                                         "is_user_system_message": True})
        return parent

    def assistant_turn(self, parent: str, topic: dict[str, list[str]]) -> str:
        """Optional reasoning or tool-call nodes, then the visible answer."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.12:
            parent = self.node(parent, "assistant", {"content_type": "thoughts", "thoughts": [
                {"summary": "Considering options", "content": self.text.fill(rng.choice(SENTENCES), topic)}]},
                channel="analysis")
            parent = self.node(parent, "assistant", {"content_type": "reasoning_recap",
                                                     "content": f"Thought for {rng.randint(3, 60)}s"})
        elif roll < 0.2:
            parent = self.node(parent, "assistant", {"content_type": "code", "language": "python",
                                                     "text": f"print({rng.randint(2, 999)} * {rng.randint(2, 99)})"},
                               recipient="python")
            parent = self.node(parent, "tool", {"content_type": "execution_output", "text": str(rng.randint(4, 99999))})
        elif roll < 0.26:
            parent = self.node(parent, "assistant", {"content_type": "code", "language": "unknown",
                                                     "text": f"search(\"{rng.choice(topic['noun'])}\")"},
                               recipient="web.run")
            parent = self.node(parent, "tool", {"content_type": "tether_browsing_display", "result": ""})
        return self.text_node(parent, "assistant", self.text.answer(topic))

    def build(self, meaningful: int, topic: dict[str, list[str]]) -> str:
        """Add `meaningful` alternating user/assistant messages (plus abandoned siblings); return the leaf."""
        rng = self.rng
        tip = self.preamble("client-created-root")
        for index in range(meaningful):
            if index % 2 == 0:
                if rng.random() < 0.08:  # an edited question: the first version and its answer are abandoned
                    old = self.text_node(tip, "user", self.text.question(topic))
                    self.text_node(old, "assistant", self.text.answer(topic))
                tip = self.text_node(tip, "user", self.text.question(topic))
            else:
                if rng.random() < 0.08:  # a regenerated answer: the first one is abandoned
                    self.text_node(tip, "assistant", self.text.answer(topic))
                tip = self.assistant_turn(tip, topic)
        return tip


def allocate(total: int, count: int, rng: random.Random) -> list[int]:
    """Split `total` messages over `count` conversations, at least one each, with a long-tailed mix."""
    weights = [rng.lognormvariate(0, 0.9) for _ in range(count)]
    scale = (total - count) / sum(weights)
    counts = [1 + int(weight * scale) for weight in weights]
    for index in rng.sample(range(count), total - sum(counts)):
        counts[index] += 1
    return counts


def conversations(count: int, messages: int, seed: int) -> Iterator[dict]:
    """The generated conversations, one at a time."""
    rng = random.Random(seed)
    text = TextMaker(rng)
    topics = list(TOPICS.values())
    names = list(TOPICS)
    start = 1_672_531_200.0 + rng.uniform(0, 86_400)
    for meaningful in allocate(messages, count, rng):
        start += rng.uniform(600, 86_400)
        topic_index = rng.randrange(len(topics))
        maker = ConversationMaker(rng, text, start)
        leaf = maker.build(meaningful, topics[topic_index])
        conversation_id = uid(rng)
        title = f"{names[topic_index].capitalize()}: {rng.choice(topics[topic_index]['noun'])}"
        conversation = {"title": None if rng.random() < 0.03 else title, "create_time": round(start, 3),
                        "update_time": round(maker.time, 3), "mapping": maker.mapping, "current_node": leaf,
                        "conversation_id": conversation_id, "default_model_slug": "gpt-4o",
                        "is_archived": False, "id": conversation_id}
        if rng.random() < 0.05:
            del conversation["update_time"]
        yield conversation


def write_export(out: Path, count: int, messages: int, seed: int = 0, shards: int = 1) -> list[Path]:
    """Write the export into `out` (created if needed), streaming; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    names = ["conversations.json"] if shards <= 1 else [f"conversations-{i:03d}.json" for i in range(shards)]
    sizes = [count // len(names) + (i < count % len(names)) for i in range(len(names))]
    stream = conversations(count, messages, seed)
    paths = []
    for name, size in zip(names, sizes):
        path = out / name
        with open(path, "w", encoding="utf-8") as file:
            file.write("[")
            for index in range(size):
                if index:
                    file.write(",")
                file.write(json.dumps(next(stream), ensure_ascii=False, separators=(",", ":")))
            file.write("]")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True, help="meaningful messages in total")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the export into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1, help="split into conversations-000.json ...")
    args = parser.parse_args(argv)
    if args.conversations < 1 or args.messages < args.conversations:
        parser.error("need at least one conversation and at least one message per conversation")
    if args.shards < 1:
        parser.error("--shards must be at least 1")
    paths = write_export(args.out, args.conversations, args.messages, args.seed, args.shards)
    print(f"wrote {args.conversations} conversations, {args.messages} messages to "
          f"{', '.join(str(p) for p in paths)}", file=sys.stderr)


if __name__ == "__main__":
    main()
