"""Bad input across every command (run, compress, analyze, estimate, check, leaderboard, recipe, reference train):
each case exits 2 with a message naming the input, prints no traceback and leaves nothing half-written.

Cases are built in a per-case folder `tmp` holding the files they need; `{tmp}` in an argument is that folder, and
`{run}` a finished run folder shared by the module. Parameter values are checked before any weight loads (the
chain's, the suites', sampling), file formats by their one loader, and output places in the plan."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import invoke

from harness.ranking import RANKING_FORMAT, RANKING_VERSION

TINY = ("--model", "tiny-sd3", "--limit", "1", "--no-progress")  # every case stops before generating


DROP = ("--max-drop", "fidelity/ssim=0.1")


def _ranking(blocks: int = 4, **changes: object) -> dict:
    data = {"format": RANKING_FORMAT, "version": RANKING_VERSION, "metric": "fidelity/ssim", "higher_is_better": True,
            "granularity": "block", "base_score": 1.0, "model": {},
            "ablations": [{"key": str(b), "score": 0.9 - 0.01 * b} for b in range(blocks)]}
    data.update(changes)
    return data


# name -> files to create in tmp (relative path -> text, or None for a folder)
FILES: dict[str, dict[str, str | None]] = {
    "world file unknown world": {"w/world.json": json.dumps({"world": "shapes-v9"})},
    "world file not json": {"w/world.json": "{half"},
    "ranking missing field": {"r.json": json.dumps({k: v for k, v in _ranking().items() if k != "base_score"})},
    "ranking string score": {"r.json": json.dumps(_ranking(ablations=[{"key": "0", "score": "high"}]))},
    "ranking nan score": {"r.json": json.dumps(_ranking(ablations=[{"key": "0", "score": "nan"}]))},
    "ranking bad key": {"r.json": json.dumps(_ranking(ablations=[{"key": "zero", "score": 0.5}]))},
    "ranking negative key": {"r.json": json.dumps(_ranking(ablations=[{"key": "-1", "score": 0.5}]))},
    "ranking of 38 blocks": {"r.json": json.dumps(_ranking(blocks=38))},
    "ranking naming block 99": {"r.json": json.dumps(_ranking(ablations=[{"key": str(b), "score": 0.5}
                                                                         for b in (0, 1, 2, 3, 99)]))},
    "ranking not json": {"r.json": "{not json"},
    "ranking is a folder": {"r.json": None},
    "ranking foreign version": {"r.json": json.dumps(_ranking(version=99))},
    "empty prompts": {"p.txt": "\n\n"},
    "metadata bad line": {"m.jsonl": '{"tag": "single_object", "include": [{"class": "circle", "count": 1}], '
                                     '"prompt": "a photo of a circle"}\n{oops\n'},
    "metadata unknown class": {"m.jsonl": '{"tag": "single_object", "include": [{"class": "cat", "count": 1}], '
                                          '"prompt": "a photo of a cat"}\n'},
}

CASES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    # (case name, argv, fragments the message must hold)
    # -- run: sampling ------------------------------------------------------------------------------------------
    ("height not a multiple", ("run", *TINY, "--set", "sampling.height=17"), ("sampling.height",)),
    ("height absurd", ("run", *TINY, "--set", "sampling.height=65536"), ("between 16 and 8192",)),
    ("width tiny", ("run", *TINY, "--set", "sampling.width=8"), ("between 16 and 8192",)),
    ("steps absurd", ("run", *TINY, "--set", "sampling.num_inference_steps=1000000000"), ("between 1 and 1000",)),
    ("steps zero", ("run", *TINY, "--set", "sampling.num_inference_steps=0"), ("num_inference_steps",)),
    ("guidance nan", ("run", *TINY, "--set", "sampling.guidance_scale=nan"), ("'nan' is not a finite number",)),
    ("guidance inf", ("run", *TINY, "--set", "sampling.guidance_scale=inf"), ("'inf' is not a finite number",)),
    ("guidance negative", ("run", *TINY, "--set", "sampling.guidance_scale=-1"), ("guidance_scale",)),
    ("guidance text", ("run", *TINY, "--set", "sampling.guidance_scale=lots"), ("'lots' is not a valid float",)),
    ("sampling unknown field", ("run", *TINY, "--set", "sampling.num_inference_step=4"),
     ("Did you mean 'num_inference_steps'",)),
    ("sequence length zero", ("run", *TINY, "--set", "sampling.max_sequence_length=0"), ("max_sequence_length",)),
    # -- run: method parameters ---------------------------------------------------------------------------------
    ("nf4 blocksize zero", ("run", *TINY, "--method", "nf4", "--set", "nf4.blocksize=0"), ("blocksize",)),
    ("nf4 blocksize negative", ("run", *TINY, "--method", "nf4", "--set", "nf4.blocksize=-7"), ("blocksize",)),
    ("nf4 quant type", ("run", *TINY, "--method", "nf4", "--set", "nf4.quant_type=nf3"), ("'nf3' is not one of",)),
    ("int8 threshold negative", ("run", *TINY, "--method", "int8", "--set", "int8.threshold=-1"), ("threshold",)),
    ("torchao group size", ("run", *TINY, "--method", "torchao-int4", "--set", "torchao-int4.group_size=7"),
     ("group_size",)),
    ("distill lr nan", ("run", *TINY, "--method", "hierarchicalprune", "--set", "hierarchicalprune.distill_lr=nan"),
     ("not a finite number",)),
    ("distill lr negative", ("run", *TINY, "--method", "hierarchicalprune", "--set",
                             "hierarchicalprune.distill_lr=-1"), ("distill_lr must be above 0",)),
    ("distill batch zero", ("run", *TINY, "--method", "hierarchicalprune", "--set",
                            "hierarchicalprune.distill_batch_size=0"), ("distill_batch_size",)),
    ("distill steps negative", ("run", *TINY, "--method", "depth-last", "--set", "depth-last.distill_steps=-5"),
     ("distill_steps",)),
    ("position weight nan", ("run", *TINY, "--method", "hierarchicalprune", "--set",
                             "hierarchicalprune.position_weight=nan"), ("not a finite number",)),
    ("position weight negative", ("run", *TINY, "--method", "hierarchicalprune", "--set",
                                  "hierarchicalprune.position_weight=-1"), ("position_weight",)),
    ("intensity exponent inf", ("run", *TINY, "--method", "hierarchicalprune", "--set",
                                "hierarchicalprune.intensity_exponent=inf"), ("not a finite number",)),
    ("budget above one", ("run", *TINY, "--method", "depth-last", "--set", "depth-last.budget=1.5"), ("budget",)),
    ("budget nan", ("run", *TINY, "--method", "depth-last", "--set", "depth-last.budget=nan"),
     ("not a finite number",)),
    ("negative block", ("run", *TINY, "--method", "depth-last", "--set", "depth-last.blocks=-1"), ("non-negative",)),
    ("block not removable", ("run", *TINY, "--method", "depth-last", "--set", "depth-last.blocks=3"),
     ("cannot be removed",)),
    ("total budget below budget", ("run", *TINY, "--method", "hierarchicalprune", "--set",
                                   "hierarchicalprune.total_budget=0.1"), ("total_budget",)),
    ("distill data missing", ("run", *TINY, "--method", "depth-last", "--set", "depth-last.distill_steps=1", "--set",
                              "depth-last.distill_data={tmp}/absent"), ("distill_data", "does not exist")),
    ("set for a method not in the chain", ("run", *TINY, "--set", "hierarchicalprune.budget=0.3"),
     ("hierarchicalprune", "--method hierarchicalprune")),
    ("set unknown method parameter", ("run", *TINY, "--method", "depth-last", "--set", "depth-last.budjet=0.3"),
     ("Did you mean 'budget'",)),
    ("set on a method without parameters", ("run", *TINY, "--method", "none", "--set", "none.x=1"),
     ("none takes no parameters",)),
    # -- run: rankings --------------------------------------------------------------------------------------------
    *[(f"ranking: {name}", ("run", *TINY, "--method", "depth-importance", "--set",
                            "depth-importance.ranking={tmp}/r.json"), fragments)
      for name, fragments in [
          ("ranking missing field", ("lacks base_score",)),
          ("ranking string score", ("must be a finite number", "'high'")),
          ("ranking nan score", ("must be a finite number",)),
          ("ranking bad key", ("'zero' is not an ablation key",)),
          ("ranking negative key", ("'-1' is not an ablation key",)),
          ("ranking of 38 blocks", ("made for another architecture",)),
          ("ranking naming block 99", ("[99]", "made for another architecture")),
          ("ranking not json", ("is not a valid ranking file",)),
          ("ranking is a folder", ("is a folder",)),
          ("ranking foreign version", ("ranking version 99",)),
      ]],
    ("ranking absent", ("run", *TINY, "--method", "depth-importance", "--set",
                        "depth-importance.ranking={tmp}/none.json"), ("does not exist",)),
    # -- run: suites ----------------------------------------------------------------------------------------------
    ("samples per prompt huge", ("run", *TINY, "--set", "fidelity.samples_per_prompt=100000"), ("at most 1000",)),
    ("samples per prompt zero", ("run", *TINY, "--suite", "geneval-shapes", "--set",
                                 "geneval-shapes.samples_per_prompt=0"), ("samples_per_prompt",)),
    ("grid rows negative", ("run", *TINY, "--suite", "geneval-shapes", "--set",
                            "geneval-shapes.grid_prompts_per_tag=-1"), ("grid_prompts_per_tag",)),
    ("latency repeats zero", ("run", *TINY, "--suite", "latency", "--set", "latency.repeats=0"), ("repeats",)),
    ("memory unknown profile", ("run", *TINY, "--suite", "memory", "--set", "memory.emulate_device=rtx9999"),
     ("rtx9999",)),
    ("prompts file missing", ("run", *TINY, "--set", "fidelity.prompts={tmp}/absent.txt"), ("absent.txt",)),
    ("prompts file empty", ("run", *TINY, "--set", "fidelity.prompts={tmp}/p.txt"), ("p.txt",)),
    ("world file unknown world", ("run", "--model", "reference", "--weights", "{tmp}/w", "--suite", "geneval-shapes"),
     ("{tmp}/w/world.json", "'shapes-v9', which does not exist", "--set geneval-shapes.world")),
    ("world file not json", ("run", "--model", "reference", "--weights", "{tmp}/w", "--suite", "geneval-shapes"),
     ("{tmp}/w/world.json does not name the model's world", "shapes-v1, shapes-v2, shapes-v3")),
    ("metadata bad line", ("run", *TINY, "--suite", "geneval-shapes", "--set", "geneval-shapes.metadata={tmp}/m.jsonl"),
     ("m.jsonl:2",)),
    ("metadata unknown class", ("run", *TINY, "--suite", "geneval-shapes", "--set",
                                "geneval-shapes.metadata={tmp}/m.jsonl"), ("'cat' does not exist",)),
    ("unknown suite", ("run", *TINY, "--suite", "fidelty"), ("Did you mean 'fidelity'",)),
    ("empty suite list", ("run", *TINY, "--suite", ","), ("--suite",)),
    # -- run: options ---------------------------------------------------------------------------------------------
    ("seed too large", ("run", *TINY, "--seed", str(2**70)), ("not a seed",)),
    ("seed negative", ("run", *TINY, "--seed", "-1"), ("not a seed",)),
    ("seed text", ("run", *TINY, "--seed", "lucky"), ("'lucky' is not an integer",)),
    ("device meta", ("run", *TINY, "--device", "meta"), ("--device 'meta'",)),
    ("device unknown", ("run", *TINY, "--device", "tpu7"), ("--device 'tpu7'",)),
    ("device cuda without gpu", ("run", *TINY, "--device", "cuda"), ("no CUDA device",)),
    ("batch size zero", ("run", *TINY, "--batch-size", "0"), ("--batch-size",)),
    ("limit zero", ("run", *TINY[:2], "--limit", "0"), ("--limit",)),
    ("dtype unknown", ("run", *TINY, "--dtype", "int8"), ("invalid choice: 'int8'",)),
    ("seed mode unknown", ("run", *TINY, "--seed-mode", "per-batch"), ("invalid choice",)),
    ("model empty", ("run", "--model", "", "--limit", "1"), ("--model is empty",)),
    ("model path missing", ("run", "--model", "{tmp}/no-such-folder", "--limit", "1"),
     ("no-such-folder", "does not exist")),
    ("model unknown name", ("run", "--model", "tiny-sd4", "--limit", "1"), ("Did you mean 'tiny-sd3'",)),
    ("weights missing", ("run", *TINY, "--weights", "{tmp}/absent"), ("--weights", "does not exist")),
    ("method chain malformed", ("run", *TINY, "--method", "none+"), ("--method",)),
    ("emulate device without memory suite", ("run", *TINY, "--emulate-device", "rtx4070"), ("--suite memory",)),
    ("output dir is a file", ("run", *TINY, "--output-dir", "{tmp}/taken"), ("{tmp}/taken", "is a file")),
    ("cache dir is a file", ("run", *TINY, "--cache-dir", "{tmp}/taken"), ("{tmp}/taken", "is a file")),
    # -- compress -------------------------------------------------------------------------------------------------
    ("compress save is a file", ("compress", *TINY[:2], "--method", "depth-last", "--save", "{tmp}/taken"),
     ("{tmp}/taken", "is a file")),
    ("compress unsaveable quantiser", ("compress", *TINY[:2], "--method", "torchao-int8", "--save", "{tmp}/out"),
     ("torchao-int8 cannot be saved",)),
    ("compress bad size", ("compress", *TINY[:2], "--method", "depth-last", "--set", "sampling.height=17", "--save",
                           "{tmp}/out"), ("sampling.height",)),
    ("compress bad parameter", ("compress", *TINY[:2], "--method", "nf4", "--set", "nf4.blocksize=3", "--save",
                                "{tmp}/out"), ("blocksize",)),
    ("compress without method", ("compress", *TINY[:2], "--save", "{tmp}/out"), ("--method",)),
    ("compress unknown model", ("compress", "--model", "tiny-sd4", "--method", "none", "--save", "{tmp}/out"),
     ("unknown model",)),
    # -- analyze --------------------------------------------------------------------------------------------------
    ("analyze infinite base", ("analyze", *TINY, "--metric", "fidelity/psnr", "--out", "{tmp}/out"),
     ("fidelity/ssim",)),
    ("analyze measurement metric", ("analyze", *TINY, "--metric", "latency/end_to_end", "--out", "{tmp}/out"),
     ("latency", "measures the pipeline")),
    ("analyze unknown metric", ("analyze", *TINY, "--metric", "fidelity/sharpness"), ("sharpness",)),
    ("analyze metric without suite", ("analyze", *TINY, "--metric", "ssim"), ("<suite>/<metric>",)),
    ("analyze unknown suite", ("analyze", *TINY, "--metric", "fidelty/ssim"), ("Did you mean 'fidelity'",)),
    ("analyze bad granularity", ("analyze", *TINY, "--granularity", "layer"), ("layer",)),
    ("analyze out is a file", ("analyze", *TINY, "--metric", "fidelity/ssim", "--out", "{tmp}/taken"),
     ("{tmp}/taken", "is a file")),
    ("analyze bad size", ("analyze", *TINY, "--metric", "fidelity/ssim", "--set", "sampling.width=20"),
     ("sampling.height",)),
    # -- estimate -------------------------------------------------------------------------------------------------
    ("estimate unknown model", ("estimate", "--model", "sd4-large"), ("unknown model",)),
    ("estimate unknown method", ("estimate", "--model", "sd3.5-large", "--method", "prune"), ("unknown method",)),
    ("estimate bad parameter", ("estimate", "--model", "sd3.5-large", "--method", "depth-last", "--set",
                                "depth-last.budget=2"), ("budget",)),
    ("estimate bad block", ("estimate", "--model", "sd3.5-large", "--method", "depth-last", "--set",
                            "depth-last.blocks=37"), ("cannot be removed",)),
    # -- check ----------------------------------------------------------------------------------------------------
    ("check run missing", ("check", "{tmp}/absent", "--baseline", "{run}", *DROP), ("absent",)),
    ("check baseline missing", ("check", "{run}", "--baseline", "{tmp}/absent", *DROP), ("absent",)),
    ("check results without metrics", ("check", "{tmp}/nometrics", "--baseline", "{run}", *DROP), ("metrics",)),
    ("check string metric", ("check", "{tmp}/stringmetric", "--baseline", "{run}", *DROP), ("fidelity/ssim",)),
    ("check foreign schema", ("check", "{tmp}/foreign", "--baseline", "{run}", *DROP), ("schema",)),
    ("check results not json", ("check", "{tmp}/notjson", "--baseline", "{run}", *DROP), ("results.json",)),
    ("check samples corrupt", ("check", "{tmp}/badsamples", "--baseline", "{run}", *DROP, "--significant"),
     ("samples.jsonl",)),
    ("check tolerance malformed", ("check", "{run}", "--baseline", "{run}", "--max-drop", "fidelity/ssim"),
     ("--max-drop",)),
    ("check tolerance unknown metric", ("check", "{run}", "--baseline", "{run}", "--max-drop", "fidelity/sharp=1"),
     ("sharp",)),
    ("check tolerance not a number", ("check", "{run}", "--baseline", "{run}", "--max-drop", "fidelity/ssim=lots"),
     ("lots",)),
    # -- leaderboard ----------------------------------------------------------------------------------------------
    ("leaderboard folder missing", ("leaderboard", "{tmp}/absent"), ("absent",)),
    ("leaderboard out is a file", ("leaderboard", "{runs}", "--out", "{tmp}/taken"), ("{tmp}/taken", "is a file")),
    # -- recipe ---------------------------------------------------------------------------------------------------
    ("recipe unknown", ("recipe", "paper-table", "--dry-run"), ("paper-table",)),
    ("recipe limit zero", ("recipe", "reference-table", "--dry-run", "--limit", "0"), ("--limit",)),
    ("recipe bad setting", ("recipe", "reference-table", "--dry-run", "--set", "sampling.height=abc"), ("abc",)),
    ("recipe output dir is a file", ("recipe", "reference-table", "--limit", "1", "--output-dir", "{tmp}/taken"),
     ("{tmp}/taken", "is a file")),
    # -- reference train ------------------------------------------------------------------------------------------
    ("train unknown setting", ("reference", "train", "--out", "{tmp}/out", "--set", "stepz=3"), ("stepz",)),
    ("train bad value", ("reference", "train", "--out", "{tmp}/out", "--set", "steps=many"), ("many",)),
    ("train out is a file", ("reference", "train", "--out", "{tmp}/taken"), ("{tmp}/taken", "is a file")),
    ("train device meta", ("reference", "train", "--out", "{tmp}/out", "--device", "meta"), ("--device 'meta'",)),
]
SLOW = {"analyze infinite base", "compress bad size", "analyze bad size", "height not a multiple"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny run, and broken copies of it, for check and leaderboard."""
    root = tmp_path_factory.mktemp("runs")
    result = invoke("run", *TINY, "--set", "sampling.num_inference_steps=1", "--output-dir", str(root / "runs"),
                    "--cache-dir", str(root / "cache"))
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1]).parent


def _broken_runs(run: Path, tmp: Path) -> None:
    results = json.loads((run / "results.json").read_text())
    variants = {
        "nometrics": {k: v for k, v in results.items() if k != "metrics"},
        "stringmetric": {**results, "metrics": {**results["metrics"], "fidelity/ssim": "high"}},
        "foreign": {**results, "schema_version": 99},
    }
    for name, content in variants.items():
        shutil.copytree(run, tmp / name)
        (tmp / name / "results.json").write_text(json.dumps(content))
    shutil.copytree(run, tmp / "notjson")
    (tmp / "notjson" / "results.json").write_text("{half")
    shutil.copytree(run, tmp / "badsamples")
    (tmp / "badsamples" / "samples.jsonl").write_text('{"record": "image", "suite"\n')


def _prepare(case: str, tmp: Path) -> None:
    """The files case `case` reads, and `taken`: a file where a folder is asked for."""
    name = case.removeprefix("ranking: ").replace("prompts file empty", "empty prompts")
    for relative, content in FILES.get(name, {}).items():
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir()
        else:
            path.write_text(content)
    (tmp / "taken").write_text("a file where a folder is asked for")


def _snapshot(tmp: Path) -> set[str]:
    return {str(p.relative_to(tmp)) for p in tmp.rglob("*")}


@pytest.mark.parametrize(("case", "argv", "fragments"), [
    pytest.param(c, a, f, id=c, marks=[pytest.mark.slow] if c in SLOW else []) for c, a, f in CASES])
def test_bad_input_exits_2_naming_it(case, argv, fragments, tmp_path, finished_run, monkeypatch):
    tmp = tmp_path / "case"
    tmp.mkdir()
    _prepare(case, tmp)
    if argv[0] == "check":
        _broken_runs(finished_run, tmp)
    monkeypatch.chdir(tmp_path)  # nothing is written to the checkout, whatever a default output place is
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    before = _snapshot(tmp)
    fill = {"tmp": str(tmp), "run": str(finished_run), "runs": str(finished_run.parent)}
    args = [a.format(**fill) for a in argv]
    result = invoke(*args)
    message = result.stderr
    assert result.returncode == 2, (case, result.stdout[-2000:], message[-3000:])
    assert "Traceback" not in message, message
    for fragment in fragments:
        assert fragment.format(**fill) in message, (case, message[-2000:])
    # nothing half-written beside the inputs: no new file or folder in the case's folder (the image cache and
    # results go to HARNESS_CACHE_DIR and the default output folders, outside it)
    assert _snapshot(tmp) <= before | {str(Path("out"))}, _snapshot(tmp) - before


# the tries that name the model, repeated on folder models of other configurations from a clean cache; those
# whose badness is the tiny model's own shape (its block 3 is its final one) are left out
MODEL_SPECIFIC = {"block not removable"}
FOLDER_CASES = [(c, a, f) for c, a, f in CASES if "tiny-sd3" in a and c not in MODEL_SPECIFIC]


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["sd3-6-blocks", "sd35m-8-blocks", "flux-guidance"])
def test_the_same_tries_on_folder_models_exit_2(folder, folders, tmp_path, finished_run, monkeypatch):
    failures = []
    for number, (case, argv, fragments) in enumerate(FOLDER_CASES):
        tmp = tmp_path / f"case{number}"
        tmp.mkdir()
        _prepare(case, tmp)
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / f"cache{number}"))  # a clean cache each time
        fill = {"tmp": str(tmp), "run": str(finished_run), "runs": str(finished_run.parent)}
        args = [str(folders[folder]) if a == "tiny-sd3" else a.format(**fill) for a in argv]
        result = invoke(*args)
        missing = [f for f in fragments if f.format(**fill) not in result.stderr]
        if result.returncode != 2 or "Traceback" in result.stderr or missing:
            failures.append((case, result.returncode, missing, result.stderr[-500:]))
    assert not failures, failures


def test_there_are_at_least_80_cases_across_every_command():
    commands = {argv[0] for _, argv, _ in CASES}
    assert len(CASES) >= 80
    assert commands >= {"run", "compress", "analyze", "estimate", "check", "leaderboard", "recipe", "reference"}


def test_cases_have_unique_names():
    names = [c for c, _, _ in CASES]
    assert len(names) == len(set(names))


def test_harness_cache_dir_that_is_a_file_is_refused_before_loading(tmp_path, monkeypatch):
    taken = tmp_path / "taken"
    taken.write_text("x")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(taken))
    monkeypatch.chdir(tmp_path)
    result = invoke("run", *TINY, "--output-dir", str(tmp_path / "runs"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(taken) in result.stderr and "HARNESS_CACHE_DIR" in result.stderr
    assert not (tmp_path / "runs").exists()
    del os.environ["HARNESS_CACHE_DIR"]
