"""Contribution rankings: how much a metric drops when one block, or one sub-component of a block, is removed.

`harness analyze` (harness/commands/analyze.py) measures them; the pruning methods read them. A ranking file is JSON
(`RANKING_FORMAT`); the HierarchicalPrune release's format is read too. `heatmap_png` draws one.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.errors import UsageError

RANKING_FORMAT = "harness-contribution-ranking"
RANKING_VERSION = 1
RANKING_FILE = "contribution_ranking.json"  # beside a model's weights, it is the model's committed ranking
HEATMAP_FILE = "contribution_heatmap.png"
Granularity = Literal["block", "component"]


@dataclass(frozen=True)
class Ranking:
    """A contribution analysis: the base score and each ablation's score. `drop` is signed so that a positive drop
    is a loss whatever the metric's direction; `order` lists ablation keys from least to most important."""

    metric: str
    higher_is_better: bool
    granularity: Granularity
    base_score: float
    scores: dict[str, float]  # ablation key ("7" or "7.attn") -> score after removing it
    model: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def drop(self, key: str) -> float:
        change = self.base_score - self.scores[key]
        return change if self.higher_is_better else -change

    @property
    def order(self) -> list[str]:
        """Least important first: the highest score after removal (lowest for lower-is-better metrics)."""
        return sorted(self.scores, key=lambda k: (-self.scores[k] if self.higher_is_better else self.scores[k], k))

    def block_sensitivity(self) -> dict[int, float]:
        """Per block, the loss its removal causes: the whole-block drop, or for a component analysis the sum of
        its components' positive drops (a component whose removal helps does not offset one that hurts)."""
        from harness.models.surgery import Ablation

        sensitivity: dict[int, float] = {}
        for key in self.scores:
            ablation = Ablation.parse(key)
            drop = self.drop(key)
            if ablation.component is None:
                sensitivity[ablation.block] = drop
            else:
                sensitivity[ablation.block] = sensitivity.get(ablation.block, 0.0) + max(drop, 0.0)
        return dict(sorted(sensitivity.items()))

    def digest(self) -> str:
        """A digest of what decides a block choice from this ranking (scores, base score, direction, granularity),
        for the image cache's key: two files with these the same prune alike, wherever they lie."""
        import hashlib

        content = [self.metric, self.higher_is_better, self.granularity, self.base_score, sorted(self.scores.items())]
        return "sha256:" + hashlib.sha256(json.dumps(content).encode()).hexdigest()

    def check_fits(self, transformer: Any, source: str) -> None:
        """A UsageError unless every block this ranking names is one of the transformer's (a ranking of another
        architecture would prune by someone else's sensitivities; its blocks missing here are reported where they
        are needed)."""
        from harness.models.surgery import Ablation
        from harness.models.topology import block_topology

        blocks = {b.index for b in block_topology(transformer)}
        foreign = sorted({Ablation.parse(k).block for k in self.scores} - blocks)
        if foreign:
            raise UsageError(f"the contribution ranking {source} names blocks {foreign[:8]}"
                             f"{' ...' if len(foreign) > 8 else ''} that this model's {len(blocks)} blocks do not "
                             "have: it was made for another architecture; run `harness analyze` on this model")

    def as_json(self) -> dict[str, Any]:
        return {
            "format": RANKING_FORMAT, "version": RANKING_VERSION,
            "metric": self.metric, "higher_is_better": self.higher_is_better, "granularity": self.granularity,
            "base_score": self.base_score, "model": self.model, **self.details,
            "ablations": [{"key": key, "score": self.scores[key], "drop": self.drop(key)} for key in self.order],
        }


def _finite(path: Path, what: str, value: Any) -> float:
    """A ranking's score: a finite number (a NaN or infinite score would order blocks arbitrarily)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"ranking file '{path}': {what} must be a finite number, got {value!r}")
    return float(value)


def _key(path: Path, key: Any) -> str:
    """An ablation key ('7' or '7.attn'), checked."""
    from harness.models.surgery import Ablation

    try:
        ablation = Ablation.parse(key) if isinstance(key, str) else None
    except ValueError:
        ablation = None
    if ablation is None:
        raise UsageError(f"ranking file '{path}': {key!r} is not an ablation key (<block> or <block>.<component>, "
                         "block a number from 0)")
    return key


def load_ranking(path: Path, base_score: float | None = None) -> Ranking:
    """A ranking file written by `harness analyze`, or the HierarchicalPrune release's format
    ({"<block><tab><component>": HPSv2 after removal}, the word <tab> literally), whose base score is not in the
    file: pass `base_score` (the release's unpruned SD3.5 Large Turbo scores about 30.0). Every field is checked:
    a problem is a UsageError naming the file and the field."""
    from harness.results import from_json_safe

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"ranking file '{path}' is a folder: pass the {RANKING_FILE} inside it")
    try:
        data = from_json_safe(json.loads(path.read_text()))
    except FileNotFoundError:
        raise UsageError(f"ranking file '{path}' does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"'{path}' is not a valid ranking file ({exc})") from None
    if isinstance(data, dict) and data.get("format") == RANKING_FORMAT:
        if data.get("version") != RANKING_VERSION:
            raise UsageError(f"'{path}' is ranking version {data.get('version')}; this harness reads "
                             f"version {RANKING_VERSION}")
        missing = [k for k in ("metric", "higher_is_better", "granularity", "base_score", "ablations") if k not in data]
        if missing:
            raise UsageError(f"ranking file '{path}' lacks {', '.join(missing)}")
        if not isinstance(data["ablations"], list) or not all(isinstance(a, dict) and {"key", "score"} <= a.keys()
                                                              for a in data["ablations"]):
            raise UsageError(f"ranking file '{path}': ablations must be a list of {{\"key\", \"score\"}} objects")
        if data["granularity"] not in ("block", "component") or not isinstance(data["higher_is_better"], bool):
            raise UsageError(f"ranking file '{path}': granularity must be block or component and higher_is_better "
                             "true or false")
        details = {k: v for k, v in data.items() if k not in (
            "format", "version", "metric", "higher_is_better", "granularity", "base_score", "model", "ablations")}
        scores = {_key(path, a["key"]): _finite(path, f"the score of ablation {a['key']!r}", a["score"])
                  for a in data["ablations"]}
        model = data.get("model", {})
        return Ranking(str(data["metric"]), data["higher_is_better"], data["granularity"],
                       _finite(path, "base_score", data["base_score"]), scores,
                       model if isinstance(model, dict) else {}, details)
    if isinstance(data, dict) and data and all("<tab>" in key for key in data):
        if base_score is None:
            raise UsageError(f"'{path}' is in the HierarchicalPrune release's format, which holds no base score: "
                             "give the unpruned model's score (e.g. ranking_base_score=30.0)")
        scores = {}
        for key, value in data.items():
            block, _, component = key.partition("<tab>")
            block = str(int(block)) if block.strip().isdigit() else block
            scores[_key(path, f"{block}.{component}")] = _finite(path, f"the score of {key!r}", value)
        return Ranking("hpsv2/overall", True, "component", _finite(path, "ranking_base_score", base_score), scores,
                       details={"source": "HierarchicalPrune release"})
    raise UsageError(f"'{path}' is neither a `harness analyze` ranking nor the HierarchicalPrune release's format")


def ablations_for(transformer: Any, granularity: Granularity) -> list[Any]:
    from harness.models.surgery import Ablation
    from harness.models.topology import block_topology

    blocks = block_topology(transformer)
    if granularity == "block":
        return [Ablation(block.index) for block in blocks]
    return [Ablation(block.index, component) for block in blocks for component in block.components]


def heatmap_png(ranking: Ranking) -> bytes:
    """Blocks (rows) x components (columns), each cell coloured by the drop its removal causes: white for none,
    red for a loss, blue for a gain, scaled to the largest absolute drop; the drop is written in the cell. With the
    analysis's `block_kinds`, each row names its block's kind and a black rule marks where the kind changes (FLUX's
    double-stream to single-stream blocks)."""
    from PIL import Image, ImageDraw, ImageFont

    from harness.models.surgery import Ablation

    parsed = {key: Ablation.parse(key) for key in ranking.scores}
    blocks = sorted({a.block for a in parsed.values()})
    columns: list[str] = []
    for ablation in parsed.values():
        name = ablation.component or "block"
        if name not in columns:
            columns.append(name)
    kinds = {int(k): str(v) for k, v in (ranking.details.get("block_kinds") or {}).items()}
    labels = [f"block {b}" + (f" {kinds[b]}" if b in kinds else "") for b in blocks]
    title = f"{ranking.metric}: drop after removal (base {ranking.base_score:.4g})"
    legend = "red: score lost on removal; blue: score gained"
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max(measure.textlength(text, font=font) for text in (title, legend))
    cell_w, cell_h, top = 92, 18, 40
    left = int(max(measure.textlength(label, font=font) for label in labels)) + 12
    width = max(left + cell_w * len(columns) + 10, int(text_width) + 12)  # one column must not clip the captions
    height = top + cell_h * len(blocks) + 30
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    scale = max((abs(ranking.drop(k)) for k in ranking.scores if math.isfinite(ranking.drop(k))), default=1.0) or 1.0
    draw.text((4, 4), title, fill="black", font=font)
    for column, name in enumerate(columns):
        draw.text((left + column * cell_w + 4, top - 16), name, fill="black", font=font)
    for row, label in enumerate(labels):
        draw.text((4, top + row * cell_h + 3), label, fill="black", font=font)
        if row and kinds.get(blocks[row]) != kinds.get(blocks[row - 1]):
            draw.line((0, top + row * cell_h - 1, width, top + row * cell_h - 1), fill="black", width=1)
    for key, ablation in parsed.items():
        row, column = blocks.index(ablation.block), columns.index(ablation.component or "block")
        drop = ranking.drop(key)
        strength = min(abs(drop) / scale, 1.0) if math.isfinite(drop) else 1.0
        fade = int(255 * (1 - strength))
        colour = (255, fade, fade) if drop > 0 else (fade, fade, 255)
        x0, y0 = left + column * cell_w, top + row * cell_h
        draw.rectangle((x0, y0, x0 + cell_w - 2, y0 + cell_h - 2), fill=colour)
        draw.text((x0 + 4, y0 + 3), f"{drop:+.3f}", fill="black" if strength < 0.6 else "white", font=font)
    draw.text((4, height - 22), legend, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
