"""`harness leaderboard`: tables against the base run with bootstrap intervals, CSV, and a self-contained HTML page
whose sorting, plots and image grids work in a real browser (headless Chromium)."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
from conftest import invoke, run_args

from harness.commands.leaderboard import build, collect, pareto_front

FAST = ["--set", "sampling.num_inference_steps=2", "--limit", "4", "--set", "latency.repeats=2",
        "--set", "latency.warmup=0", "--set", "latency.forward_repeats=2"]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("board")
    dirs = {"cache": folder / "cache", "out": folder / "results" / "runs"}
    for method, *settings in (("none",), ("depth-last",), ("nf4",), ("fbcache", "--set", "fbcache.threshold=10")):
        result = invoke(*run_args(dirs, "--model", "tiny-sd3", "--method", method, "--suite",
                                  "fidelity,latency,memory", *settings, *FAST))
        assert result.returncode == 0, result.stderr
    return folder / "results"


def test_tables_compare_with_the_base_run(results):
    board = build(collect(results))
    entry = board["tiny-sd3"]
    rows = {row["method"].split(" (")[0]: row for row in entry["rows"]}  # labels add key parameters
    assert set(rows) == {"none", "depth-last", "nf4", "fbcache"} and entry["rows"][0]["is_base"]
    assert rows["none"]["parameters_pct_of_base"] == pytest.approx(100.0)
    assert rows["depth-last"]["parameters_pct_of_base"] < 80  # at least 20% of the parameters gone (the budget)
    assert rows["nf4"]["transformer_weight_gib"] < rows["none"]["transformer_weight_gib"]
    ssim = rows["depth-last"]["metrics"]["fidelity/ssim"]
    assert ssim["change"] < 0 and ssim["ci95"][0] <= ssim["change"] <= ssim["ci95"][1]
    assert rows["none"]["latency_ms"] > 0 and rows["none"]["peak_memory_basis"] == "host RSS peak"
    # speed-up: the base's latency over the row's, with a spread from both medians' standard errors
    assert rows["none"]["speedup"] == 1.0 and rows["none"]["speedup_stderr"] is None
    assert rows["fbcache"]["speedup"] == pytest.approx(rows["none"]["latency_ms"] / rows["fbcache"]["latency_ms"])
    assert rows["fbcache"]["speedup_stderr"] > 0
    assert rows["none"]["computed_calls"] == "2/2" and rows["fbcache"]["computed_calls"] == "1/2"

    result = invoke("leaderboard", str(results))
    assert result.returncode == 0, result.stderr
    markdown = (results / "LEADERBOARD.md").read_text()
    assert "## tiny-sd3" in markdown and markdown.count("\n| ") >= 5 and "CI [" in markdown
    assert "| speed-up | % of peak | calls computed |" in markdown and "| 1.00x |" in markdown
    assert 0 < rows["none"]["peak_fraction"] < 1 and f"| {100 * rows['none']['peak_fraction']:.3g}% |" in markdown
    assert f"{rows['fbcache']['speedup']:.2f}x ± " in markdown
    with (results / "leaderboard.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["method"] for r in table] == [row["method"] for row in entry["rows"]]
    page = (results / "leaderboard.html").read_text()
    assert page.count("<svg class=\"plot\"") == 2 and "class=\"pareto\"" in page
    assert page.count("<img class=\"thumb\"") >= 3 and "http" not in page.split("<body>")[1].replace(
        "http://www.w3.org/2000/svg", "")  # self-contained


def test_a_change_is_computed_only_against_a_base_of_the_same_protocol(results, tmp_path):
    """A run at another --limit is a row of its own, and its change is taken against the base run of the same
    prompts, never against a base that scored other prompts."""
    board_dir = tmp_path / "results"
    shutil.copytree(results, board_dir, ignore=shutil.ignore_patterns("leaderboard.*", "LEADERBOARD.md"))
    dirs = {"cache": results.parent / "cache", "out": board_dir / "runs"}
    fast_two = [*FAST[:2], "--limit", "2"]
    result = invoke(*run_args(dirs, "--model", "tiny-sd3", "--method", "depth-last", "--suite", "fidelity", *fast_two))
    assert result.returncode == 0, result.stderr

    def depth_last_rows() -> dict[str, dict]:
        rows = build(collect(board_dir))["tiny-sd3"]["rows"]
        return {row["method"]: row for row in rows if row["method"].startswith("depth-last")}

    rows = depth_last_rows()
    assert len(rows) == 2 and all("[" in label for label in rows)  # same method, told apart by sample counts
    two = next(row for label, row in rows.items() if "fidelity 2" in label)
    four = next(row for label, row in rows.items() if "fidelity 4" in label)
    assert "change" in four["metrics"]["fidelity/ssim"] and "change" not in two["metrics"]["fidelity/ssim"]

    result = invoke(*run_args(dirs, "--model", "tiny-sd3", "--method", "none", "--suite", "fidelity", *fast_two))
    assert result.returncode == 0, result.stderr
    two = next(row for label, row in depth_last_rows().items() if "fidelity 2" in label)
    assert two["metrics"]["fidelity/ssim"]["change"] == pytest.approx(two["metrics"]["fidelity/ssim"]["value"] - 1.0)


def test_pareto_front():
    points = [(1.0, 0.5, "a"), (2.0, 0.7, "b"), (2.5, 0.6, "c"), (3.0, 0.9, "d"), (1.5, 0.4, "e")]
    assert [p[2] for p in pareto_front(points)] == ["a", "b", "d"]
    # speed-up: more is better, so the front starts at the fastest point
    speedups = [(1.0, 0.9, "base"), (1.6, 0.85, "cache"), (1.4, 0.8, "slower and worse"), (2.2, 0.5, "fastest")]
    assert [p[2] for p in pareto_front(speedups, higher_x_is_better=True)] == ["fastest", "cache", "base"]


def _browser():
    """A headless Chromium driven through Selenium, or a skip (a failure under CI, which installs both)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if webdriver is None or chromium is None or driver is None:
        message = "headless Chromium needs selenium, Debian's chromium and chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message + " (.ci/run installs them)")
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_the_page_sorts_plots_and_shows_images_in_a_browser(results, tmp_path):
    from selenium.webdriver.common.by import By

    invoke("leaderboard", str(results))
    browser = _browser()
    try:
        browser.get((results / "leaderboard.html").resolve().as_uri())
        table = browser.find_element(By.CSS_SELECTOR, "table.board")
        headers = table.find_elements(By.TAG_NAME, "th")
        column = next(i for i, h in enumerate(headers) if h.text.startswith("latency"))
        headers[column].click()
        values = [float(row.find_elements(By.TAG_NAME, "td")[column].get_attribute("data-value"))
                  for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert values == sorted(values) and headers[column].get_attribute("data-order") == "asc"
        headers[column].click()
        values = [float(row.find_elements(By.TAG_NAME, "td")[column].get_attribute("data-value"))
                  for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert values == sorted(values, reverse=True)
        plots = browser.find_elements(By.CSS_SELECTOR, "svg.plot")
        assert len(plots) == 2 and all(p.find_elements(By.CSS_SELECTOR, "circle") for p in plots)
        images = browser.find_elements(By.CSS_SELECTOR, "img.thumb")
        assert images and all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
        screenshot = tmp_path / "leaderboard.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    finally:
        browser.quit()


def test_markdown_escapes_names_that_hold_markup():
    from harness.commands.leaderboard import markdown

    name = "<img src=x onerror=alert(1)>|folder"
    text = markdown({name: {"base": None, "quality": [], "rows": []}})
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;\\|folder" in text


def test_check_help_shows_the_tolerance_as_typed():
    from conftest import invoke

    result = invoke("check", "--help")
    assert "end_to_end=10%" in result.stdout and "10%%" not in result.stdout


def test_a_damaged_run_folder_is_skipped_with_a_warning_naming_it(results, tmp_path):
    board = shutil.copytree(results, tmp_path / "board")
    run_folders = sorted(p.parent for p in (board / "runs").glob("*/results.json"))
    (run_folders[0] / "results.json").write_text("{half written")
    (run_folders[1] / "samples.jsonl").write_text('{"record": "image"\n')
    result = invoke("leaderboard", str(board))
    assert result.returncode == 0, result.stderr
    assert f"skips {run_folders[0]}" in result.stderr and f"skips {run_folders[1]}" in result.stderr
    assert len(collect(board)) == len(run_folders) - 2


def test_runs_of_one_method_at_other_settings_are_told_apart_by_their_label(results, tmp_path):
    """Two fbcache thresholds are two rows a reader must tell apart: each label names the setting that makes it
    (`Compressor.label_params`), not only the sample counts."""
    board_dir = tmp_path / "results"
    shutil.copytree(results, board_dir)
    dirs = {"cache": tmp_path / "cache", "out": board_dir / "runs"}
    again = invoke(*run_args(dirs, "--model", "tiny-sd3", "--method", "fbcache", "--set", "fbcache.threshold=0.5",
                             "--suite", "fidelity,latency,memory", *FAST))
    assert again.returncode == 0, again.stderr
    labels = sorted(row["method"] for row in build(collect(board_dir))["tiny-sd3"]["rows"]
                    if row["method"].startswith("fbcache"))
    assert labels == ["fbcache (threshold 0.5)", "fbcache (threshold 10.0)"]
