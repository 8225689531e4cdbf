"""What the vector store tests share: a corpus, questions about it, and the server config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# A small corpus written for these tests: one topic per document, attributes for filters.
CORPUS: dict[str, tuple[str, dict[str, Any]]] = {
    "volcanoes.md": (
        "# Volcanoes\nA volcano forms where magma from the Earth's mantle reaches the surface. Eruptions release "
        "lava, ash and gases such as sulfur dioxide. Mount Etna in Sicily is one of the most active volcanoes.",
        {"category": "science", "year": 2019, "reviewed": True},
    ),
    "sourdough.txt": (
        "Baking sourdough bread needs a starter of wild yeast and lactic acid bacteria. Feed the starter with "
        "flour and water, let the dough rise overnight, then bake it in a very hot Dutch oven for a crisp crust.",
        {"category": "cooking", "year": 2021, "reviewed": True},
    ),
    "chess.html": (
        "<html><head><title>Chess</title><style>p {color: red}</style></head><body><h1>Chess openings</h1>"
        "<p>The Sicilian Defence answers 1.e4 with c5. White often castles kingside, and the queen's gambit "
        "offers a pawn for control of the centre of the board.</p></body></html>",
        {"category": "games", "year": 2015, "reviewed": False},
    ),
    "tax.json": (
        '{"topic": "income tax", "text": "Employees file an annual income tax return; deductions for pension '
        'contributions reduce taxable income, and refunds arrive after the tax office processes the return."}',
        {"category": "finance", "year": 2023, "reviewed": True},
    ),
    "planets.csv": (
        "planet,fact\nMars,the red planet has the tallest volcano Olympus Mons and two moons\n"
        "Jupiter,the largest planet is a gas giant with a great red storm\n"
        "Saturn,its rings are made of ice and rock\n",
        {"category": "science", "year": 2022, "reviewed": False},
    ),
    "python.md": (
        "# Python lists\nA Python list is a mutable sequence. Append items with list.append, sort them in place "
        "with list.sort, and build new lists with comprehensions such as [x * 2 for x in numbers].",
        {"category": "programming", "year": 2020, "reviewed": True},
    ),
    "marathon.txt": (
        "Training for a marathon means running long distances slowly each week, building mileage gradually, "
        "and tapering before race day. Runners eat carbohydrates to store glycogen for the 42 kilometres.",
        {"category": "sport", "year": 2018, "reviewed": False},
    ),
    "bees.txt": (
        "Honey bees live in colonies with one queen, thousands of worker bees and some drones. Workers collect "
        "nectar and pollen from flowers and turn nectar into honey inside the hive's wax combs.",
        {"category": "nature", "year": 2017, "reviewed": True},
    ),
    "guitar.md": (
        "# Tuning a guitar\nStandard guitar tuning from the lowest string is E A D G B E. Turn the tuning pegs "
        "until each string matches the reference pitch, and change strings when they sound dull.",
        {"category": "music", "year": 2016, "reviewed": False},
    ),
    "rome.txt": (
        "Ancient Rome grew from a small town on the Tiber into an empire. Julius Caesar crossed the Rubicon in "
        "49 BC, and the Colosseum hosted gladiator fights for crowds of fifty thousand people.",
        {"category": "history", "year": 2014, "reviewed": True},
    ),
}

QUESTIONS = [
    ("How does lava get to the surface during an eruption?", "volcanoes.md"),
    ("How long should bread dough rise and how do I bake it?", "sourdough.txt"),
    ("What is a good response to e4 in chess?", "chess.html"),
    ("Can pension payments lower what I owe in taxes?", "tax.json"),
    ("Which planet has rings made of ice?", "planets.csv"),
    ("How do I add an element to a list in Python?", "python.md"),
    ("How should I prepare for running 42 km?", "marathon.txt"),
    ("How do insects make honey?", "bees.txt"),
    ("What notes are the strings of a guitar tuned to?", "guitar.md"),
    ("Who crossed the Rubicon?", "rome.txt"),
]


def vector_config(minilm: str, *, storage: Path | None = None, max_upload_bytes: int = 1_000_000) -> dict[str, Any]:
    config: dict[str, Any] = {
        "providers": {
            "inference": [{"id": "st", "type": "inline::sentence-transformers", "config": {"models": [minilm]}}],
            "files": [{"id": "files", "type": "inline::localfs", "config": {"max_upload_bytes": max_upload_bytes}}],
            "vector_io": [{"id": "hnswlib", "type": "inline::hnswlib", "config": {"save_interval_seconds": 1}}],
        },
        "apis": {"vector_io": {"default_embedding_model": "st/all-MiniLM-L6-v2"}},
    }
    if storage is not None:
        config["storage"] = {"dir": str(storage)}
    return config
