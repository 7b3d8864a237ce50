"""`harness leaderboard`: every run under a results folder, one table per model, against that model's base run.

Per method: transformer parameters (and % of the base), transformer weight bytes, peak memory and latency (from the
device suites, with which peak it is), every quality metric with its change and relative change against the base
run and a 95% interval of the change (paired bootstrap over prompts, `harness.commands.compare`), the compression cost
(wall time, ablations, distillation steps) and the device each figure came from. Written as Markdown, CSV and one
self-contained HTML page: a click-sortable table, quality-vs-memory and quality-vs-latency plots with the Pareto
front marked, and per-prompt image grids comparing the methods side by side (from the thumbnails runs keep).
The newest run of each identity (`harness.results.run_identity`) wins; a change is computed only against a base
run of the same protocol (prompts, seeds, sampling, suite parameters).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from pathlib import Path
from typing import Any

from harness.commands.compare import Run, bootstrap_changes, higher_is_better, load_run
from harness.devices import GIB
from harness.errors import UsageError
from harness.metrics import ratio_stderr
from harness.monitors import LOADED_CORES

MEMORY_KEYS = (("memory/inference_nvml_peak_gib", "NVML peak"), ("memory/inference_reserved_peak_gib",
                                                                   "reserved peak"),
               ("memory/inference_peak_rss_gib", "host RSS peak"))
LATENCY_KEY = "latency/end_to_end"
PEAK_FRACTION_KEY = "latency/peak_fraction"
LOAD_KEYS = ("latency/other_load", "memory/other_load")  # flagged above harness.monitors.LOADED_CORES
DEVICE_SUITES = ("latency", "memory")


def collect(results_dir: Path) -> list[Run]:
    """Every readable run under `results_dir` (newest first). A damaged run folder, or one of another schema, is
    skipped with a warning naming it and why: one bad folder never stops a leaderboard of good ones."""
    import sys

    runs = []
    for path in sorted(Path(results_dir).rglob("results.json")):
        if any(part.startswith(".staging-") for part in path.parts):
            continue
        try:
            run = load_run(path)  # results.json and samples.jsonl, both validated
        except UsageError as exc:
            print(f"harness: leaderboard skips {path.parent}: {exc}", file=sys.stderr)
            continue
        runs.append(run)
    return sorted(runs, key=lambda r: r.results.created, reverse=True)


def _label(run: Run) -> str:
    """The chain with, per step, the settings its method names as telling its runs apart (`label_params`)."""
    from harness.registry import COMPRESSORS

    parts = []
    for step in run.results.method.chain:
        shown = COMPRESSORS.get(step["name"]).label_params if step["name"] in COMPRESSORS.names() else ()
        changed = {k: v for k, v in step["params"].items() if k in shown and v not in (None, [], ())
                   and not (k == "total_budget" and not v)}  # 0: the aggressive regime is off
        parts.append(step["name"] + (" (" + ", ".join(f"{k} {v}" for k, v in changed.items()) + ")"
                                     if changed else ""))
    return " + ".join(parts) or "none"


def _sample_counts(run: Run) -> str:
    return ", ".join(f"{name} {suite.samples_requested}" for name, suite in sorted(run.results.suites.items())
                     if suite.samples_requested)


def _model_key(run: Run) -> str:
    """The table a run belongs to: its (base) model's; runs on random weights have a table of their own, marked."""
    from harness.models.random_weights import MARK, is_random

    base = run.results.model.base
    name, fingerprint = (base["name"], base["fingerprint"]) if base else (run.results.model.name,
                                                                        run.results.model.fingerprint)
    return f"{name} ({MARK})" if is_random(fingerprint) else name


def _is_base(run: Run) -> bool:
    return all(step["name"] == "none" for step in run.results.method.chain) and not run.results.model.base


def _quality_keys(runs: list[Run]) -> list[str]:
    keys: list[str] = []
    for run in runs:
        for key in run.results.metrics:
            if key.split("/")[0] not in DEVICE_SUITES and key not in keys:
                keys.append(key)
    return keys


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _base_for(run: Run, key: str, bases: list[Run]) -> Run | None:
    """The newest base run that measured `key`'s suite under the same protocol as `run`: a change is only ever
    computed between runs of the same prompts, seeds, sampling and suite parameters."""
    suite = key.partition("/")[0]
    return next((base for base in bases if key in base.results.metrics
                 and not run.results.protocol_differences(base.results, suite)), None)


def build(runs: list[Run]) -> dict[str, Any]:
    """{model: {"base": run id or None, "quality": [metric keys], "higher_is_better": {key: bool}, "rows": [...]}}
    from the newest run per identity
    (`harness.results.run_identity`: runs at another --limit or other settings are rows of their own)."""
    newest: dict[str, Run] = {}
    for run in runs:
        newest.setdefault(run.results.identity(), run)
    board: dict[str, Any] = {}
    for run in newest.values():
        board.setdefault(_model_key(run), []).append(run)
    for model, runs_of_model in board.items():
        bases = [r for r in runs_of_model if _is_base(r)]
        quality = _quality_keys(runs_of_model)
        labels = [_label(r) for r in runs_of_model]
        ambiguous = {label for label in labels if labels.count(label) > 1}
        rows = [_row(run, bases, quality, f"{label} [{_sample_counts(run)}]" if label in ambiguous else label)
                for run, label in zip(runs_of_model, labels, strict=True)]
        directions = {key: higher_is_better(next(r for r in runs_of_model if key in r.results.metrics), key)
                      for key in quality}
        board[model] = {"base": bases[0].results.run_id if bases else None, "quality": quality,
                        "higher_is_better": directions,
                        "rows": sorted(rows, key=lambda row: (not row["is_base"], row["method"]))}
    return board


def _row(run: Run, bases: list[Run], quality: list[str], label: str) -> dict[str, Any]:
    results = run.results
    metrics = results.metrics
    parameters = results.model.transformer_parameters
    base_parameters = bases[0].results.model.transformer_parameters if bases else None
    memory = next(((metrics[k], label) for k, label in MEMORY_KEYS if _finite(metrics.get(k)) is not None),
                  (None, None))
    steps = results.compression.steps
    row: dict[str, Any] = {
        "method": label, "run_id": results.run_id, "is_base": _is_base(run),
        "transformer_parameters": parameters,
        "parameters_pct_of_base": 100 * parameters / base_parameters if parameters and base_parameters else None,
        "transformer_weight_gib": (results.model.transformer_weight_bytes or 0) / GIB or None,
        "peak_memory_gib": memory[0], "peak_memory_basis": memory[1],
        "latency_ms": _finite(metrics.get(LATENCY_KEY)),
        "peak_fraction": _finite(metrics.get(PEAK_FRACTION_KEY)),
        "under_load": any((_finite(metrics.get(key)) or 0.0) > LOADED_CORES for key in LOAD_KEYS),
        **_speedup(run, bases),
        "computed_calls": _computed_calls(run),
        "compression_seconds": results.compression.wall_seconds,
        "ablations": sum(s["cost"].get("ablations", 0) for s in steps if isinstance(s.get("cost"), dict)),
        "distillation_steps": sum(s["cost"].get("distillation", {}).get("steps", 0) for s in steps
                                  if isinstance(s.get("cost"), dict)),
        "device": results.device.get("name", results.device.get("type")),
        "metrics": {},
    }
    compared: dict[str, Run] = {}  # key -> the base its change is measured against
    for key in quality:
        value = _finite(metrics.get(key))
        base = _base_for(run, key, bases)
        base_value = _finite(base.results.metrics.get(key)) if base else None
        cell: dict[str, Any] = {"value": value, "higher_is_better": higher_is_better(run, key) if key in metrics
                                else None}
        if value is not None and base_value is not None and base is not None and base is not run:
            cell["change"] = value - base_value
            cell["relative_change"] = (value - base_value) / abs(base_value) if base_value else None
            compared[key] = base
        row["metrics"][key] = cell
    for base in {id(b): b for b in compared.values()}.values():
        keys = [key for key, b in compared.items() if b is base]
        for key, interval in bootstrap_changes(run, base, keys).items():
            row["metrics"][key]["ci95"] = interval
    row["thumbnails"] = {name: run.path / name for name in _thumbnail_names(run)}
    return row


def _speedup(run: Run, bases: list[Run]) -> dict[str, float | None]:
    """Base latency / this run's (end to end), with its standard error from both medians' bootstrap errors."""
    base = _base_for(run, LATENCY_KEY, bases)
    if base is run:  # exactly 1: its latency over itself
        return {"speedup": 1.0, "speedup_stderr": None}
    latency = _finite(run.results.metrics.get(LATENCY_KEY))
    if base is None or latency is None or not latency:
        return {"speedup": None, "speedup_stderr": None}
    base_latency = base.results.metrics[LATENCY_KEY]
    spread = [d.get(LATENCY_KEY, {}).get("stderr") for d in (base.results.metric_details, run.results.metric_details)]
    return {"speedup": base_latency / latency,
            "speedup_stderr": ratio_stderr(base_latency, spread[0], latency, spread[1])}


def _computed_calls(run: Run) -> str | None:
    """Transformer calls computed per image of the first quality suite that recorded them, as "computed/calls"."""
    for suite in run.results.suites.values():
        if suite.transformer_calls:
            calls = suite.transformer_calls
            return f"{calls['computed_calls_per_image']:.3g}/{calls['transformer_calls_per_image']:.3g}"
    return None


def _thumbnail_names(run: Run) -> list[str]:
    from harness.results import THUMBNAIL_GLOB

    return sorted(p.name for p in run.path.glob(THUMBNAIL_GLOB))


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _metric_text(cell: dict[str, Any]) -> str:
    text = _fmt(cell.get("value"))
    if "change" in cell:
        relative = cell.get("relative_change")
        text += f" ({cell['change']:+.3g}" + (f", {100 * relative:+.1f}%" if relative is not None else "")
        if cell.get("ci95"):
            text += f", CI [{cell['ci95'][0]:+.3g}, {cell['ci95'][1]:+.3g}]"
        text += ")"
    return text


COLUMNS = ("method", "params (% base)", "weights GiB", "peak memory GiB", "latency ms", "speed-up",
           "% of peak", "calls computed", "compression", "device")


def _quality_headers(entry: dict[str, Any]) -> list[str]:
    """Each quality column's key with its direction: up where higher is better, down where lower is."""
    return [f"{key} {'↑' if entry['higher_is_better'][key] else '↓'}" for key in entry["quality"]]


def _cells(row: dict[str, Any]) -> list[str]:
    params = _fmt(row["transformer_parameters"]) + (f" ({row['parameters_pct_of_base']:.1f}%)"
                                                    if row["parameters_pct_of_base"] else "")
    memory = _fmt(row["peak_memory_gib"]) + (f" ({row['peak_memory_basis']})" if row["peak_memory_basis"] else "")
    cost = f"{row['compression_seconds']:.0f} s"
    if row["ablations"]:
        cost += f", {row['ablations']} ablations"
    if row["distillation_steps"]:
        cost += f", {row['distillation_steps']} distillation steps"
    speedup = "-" if row["speedup"] is None else f"{row['speedup']:.2f}x" + (
        f" ± {row['speedup_stderr']:.2f}" if row["speedup_stderr"] is not None else "")
    latency = _fmt(row["latency_ms"]) + (" (under load)" if row["under_load"] else "")
    peak = "-" if row["peak_fraction"] is None else f"{100 * row['peak_fraction']:.3g}%"
    return [row["method"], params, _fmt(row["transformer_weight_gib"]), memory, latency, speedup, peak,
            _fmt(row["computed_calls"]), cost, row["device"]]


def _md(text: Any) -> str:
    """Text as a Markdown table cell or heading shows it: HTML escaped (a folder name can hold markup), pipes
    escaped."""
    import html

    return html.escape(str(text)).replace("|", "\\|")


def markdown(board: dict[str, Any]) -> str:
    out = ["# Leaderboard", "", "Generated by `harness leaderboard` from the runs under this folder. Changes are "
           "against the model's base run (method none), with a 95% paired-bootstrap interval over prompts.", ""]
    for model, entry in sorted(board.items()):
        out += [f"## {_md(model)}", "", f"Base run: {_md(entry['base'] or 'none found (changes are not shown)')}", ""]
        header = [*COLUMNS[:-2], *_quality_headers(entry), *COLUMNS[-2:]]
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in entry["rows"]:
            cells = _cells(row)
            quality = [_metric_text(row["metrics"][k]) for k in entry["quality"]]
            out.append("| " + " | ".join(_md(c) for c in [*cells[:-2], *quality, *cells[-2:]]) + " |")
        out.append("")
    return "\n".join(out)


def csv_text(board: dict[str, Any]) -> str:
    keys = sorted({k for entry in board.values() for k in entry["quality"]})
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow(["model", "method", "run_id", "transformer_parameters", "parameters_pct_of_base",
                     "transformer_weight_gib", "peak_memory_gib", "peak_memory_basis", "latency_ms",
                     "speedup", "speedup_stderr", "peak_fraction", "under_load", "computed_calls",
                     "compression_seconds", "ablations",
                     "distillation_steps", "device",
                     *[f"{k}{suffix}" for k in keys for suffix in ("", " change", " ci95_low", " ci95_high")]])
    for model, entry in sorted(board.items()):
        for row in entry["rows"]:
            values = []
            for key in keys:
                cell = row["metrics"].get(key, {})
                ci = cell.get("ci95") or (None, None)
                values += [cell.get("value"), cell.get("change"), ci[0], ci[1]]
            writer.writerow([model, row["method"], row["run_id"], row["transformer_parameters"],
                             row["parameters_pct_of_base"], row["transformer_weight_gib"],
                             row["peak_memory_gib"], row["peak_memory_basis"], row["latency_ms"],
                             row["speedup"], row["speedup_stderr"], row["peak_fraction"], row["under_load"],
                             row["computed_calls"],
                             row["compression_seconds"], row["ablations"], row["distillation_steps"],
                             row["device"], *["" if v is None else v for v in values]])
    return handle.getvalue()


def pareto_front(points: list[tuple[float, float, str]],
                 higher_x_is_better: bool = False) -> list[tuple[float, float, str]]:
    """Points not dominated by another with better-or-equal x (lower cost, or higher speed-up) and higher-or-equal
    quality (y), from the best x."""
    front = []
    sign = -1 if higher_x_is_better else 1
    for x, y, label in sorted(points, key=lambda p: (sign * p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y, label))
    return front


def _plot(rows: list[dict[str, Any]], x_key: str, x_label: str, metric: str, higher_x_is_better: bool = False) -> str:
    points = [(row[x_key], row["metrics"][metric]["value"], row["method"]) for row in rows
              if row.get(x_key) is not None and row["metrics"].get(metric, {}).get("value") is not None]
    width, height, pad = 420, 280, 48
    svg = [f'<svg class="plot" data-x="{x_key}" width="{width}" height="{height}" '
           f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{html.escape(metric)} vs {x_label}">',
           f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle" font-size="12">{x_label}</text>',
           f'<text x="12" y="{height / 2}" transform="rotate(-90 12 {height / 2})" text-anchor="middle" '
           f'font-size="12">{html.escape(metric)}</text>',
           f'<rect x="{pad}" y="10" width="{width - pad - 10}" height="{height - pad - 10}" fill="none" '
           'stroke="#999"/>']
    if not points:
        svg.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" font-size="12">no runs with '
                   f'{x_label} and this metric</text></svg>')
        return "".join(svg)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def at(x: float, y: float) -> tuple[float, float]:
        return (pad + 10 + (x - x0) / (x1 - x0) * (width - 2 * pad - 10),
                height - pad - 10 - (y - y0) / (y1 - y0) * (height - pad - 40))

    front = pareto_front(points, higher_x_is_better)
    svg.append('<polyline class="pareto" fill="none" stroke="#d62728" stroke-width="2" points="'
               + " ".join(f"{a:.1f},{b:.1f}" for a, b in (at(x, y) for x, y, _ in front)) + '"/>')
    for x, y, label in points:
        cx, cy = at(x, y)
        on_front = any(label == f[2] for f in front)
        svg.append(f'<circle class="point{" front" if on_front else ""}" cx="{cx:.1f}" cy="{cy:.1f}" r="5" '
                   f'fill="{"#d62728" if on_front else "#1f77b4"}"><title>{html.escape(label)}: {y:.4g} at '
                   f'{x:.4g}</title></circle>')
        svg.append(f'<text x="{cx + 7:.1f}" y="{cy - 6:.1f}" font-size="10">{html.escape(label[:28])}</text>')
    svg.append(f'<text x="{pad}" y="{height - pad + 14}" font-size="10">{x0:.4g}</text>'
               f'<text x="{width - 10}" y="{height - pad + 14}" font-size="10" text-anchor="end">{x1:.4g}</text>'
               "</svg>")
    return "".join(svg)


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img class="thumb" src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def _grid(entry: dict[str, Any], limit: int = 6) -> str:
    names = sorted({n for row in entry["rows"] for n in row["thumbnails"]})[:limit * 2]
    if not names:
        return "<p>No image thumbnails in these runs.</p>"
    header = "".join(f"<th>{html.escape(row['method'])}</th>" for row in entry["rows"])
    lines = [f'<table class="grid"><tr><th>prompt image</th>{header}</tr>']
    for name in names[:limit]:
        cells = "".join(f"<td>{_image(row['thumbnails'][name]) if name in row['thumbnails'] else '-'}</td>"
                        for row in entry["rows"])
        lines.append(f"<tr><td>{html.escape(name.removeprefix('thumb-').removesuffix('.png'))}</td>{cells}</tr>")
    lines.append("</table>")
    return "".join(lines)


_SCRIPT = """
document.querySelectorAll('table.board').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var ascending = th.getAttribute('data-order') !== 'asc';
      table.querySelectorAll('th').forEach(function (other) { other.removeAttribute('data-order'); });
      th.setAttribute('data-order', ascending ? 'asc' : 'desc');
      rows.sort(function (a, b) {
        var x = a.cells[column].getAttribute('data-value'), y = b.cells[column].getAttribute('data-value');
        var nx = parseFloat(x), ny = parseFloat(y);
        var result = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return ascending ? result : -result;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def page(board: dict[str, Any]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Leaderboard</title><style>",
             "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;margin:1em 0} "
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px} th{cursor:pointer;background:#f4f4f4} "
             "th[data-order=asc]::after{content:' \\25B2'} th[data-order=desc]::after{content:' \\25BC'} "
             ".plots{display:flex;gap:2em;flex-wrap:wrap} img.thumb{width:96px;image-rendering:pixelated}",
             "</style></head><body><h1>Leaderboard</h1>",
             "<p>Changes against each model's base run, with 95% paired-bootstrap intervals over prompts. Click a "
             "column to sort. Red points: the Pareto front (less memory or more speed-up, more quality).</p>"]
    for model, entry in sorted(board.items()):
        quality = entry["quality"]
        header = [*COLUMNS[:-2], *_quality_headers(entry), *COLUMNS[-2:]]
        parts.append(f"<h2>{html.escape(model)}</h2><table class='board' data-model='{html.escape(model)}'>"
                     "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                     + "</tr></thead><tbody>")
        for row in entry["rows"]:
            sort_values = [row["method"], row["transformer_parameters"], row["transformer_weight_gib"],
                           row["peak_memory_gib"], row["latency_ms"], row["speedup"], row["peak_fraction"],
                           row["computed_calls"],
                           row["compression_seconds"], row["device"]]
            cells = list(zip(_cells(row), sort_values, strict=True))
            quality_cells = [(_metric_text(row["metrics"][k]), row["metrics"][k].get("value")) for k in quality]
            ordered = [*cells[:-2], *quality_cells, *cells[-2:]]
            parts.append("<tr>" + "".join(f"<td data-value='{html.escape(str('' if v is None else v))}'>"
                                          f"{html.escape(text)}</td>" for text, v in ordered) + "</tr>")
        parts.append("</tbody></table>")
        if quality:
            headline = quality[0]
            parts.append("<div class='plots'>" + _plot(entry["rows"], "peak_memory_gib", "peak memory (GiB)",
                                                       headline)
                         + _plot(entry["rows"], "speedup", "speed-up (base latency / latency)", headline, True)
                         + "</div>")
        parts.append("<h3>Images, method by method</h3>" + _grid(entry))
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "".join(parts)


def write(results_dir: Path, out: Path | None = None) -> dict[str, Path]:
    """Build the leaderboard of `results_dir` and write LEADERBOARD.md, leaderboard.csv and leaderboard.html."""
    from harness.results import check_output_folder, write_atomic

    if not Path(results_dir).is_dir():
        raise UsageError(f"results folder '{results_dir}' does not exist")
    check_output_folder(Path(out or results_dir), "--out", "the leaderboard")
    runs = collect(results_dir)
    if not runs:
        raise UsageError(f"no runs (results.json) under '{results_dir}'")
    board = build(runs)
    out = Path(out or results_dir)
    paths = {"markdown": out / "LEADERBOARD.md", "csv": out / "leaderboard.csv", "html": out / "leaderboard.html"}
    write_atomic(paths["markdown"], markdown(board).encode())
    write_atomic(paths["csv"], csv_text(board).encode())
    write_atomic(paths["html"], page(board).encode())
    return paths
