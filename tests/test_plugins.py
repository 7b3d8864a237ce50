"""A method and a suite from another installed distribution appear in `harness list` and run."""

from __future__ import annotations

from pathlib import Path

from conftest import harness_env, read_results, run_args, run_harness


def test_entry_point_plugin_from_another_distribution(plugin_site, dirs):
    target = plugin_site
    assert list(target.glob("harness_plugin_example-0.1.0.dist-info"))
    env = harness_env(PYTHONPATH=str(target))

    listing = run_harness("list", env=env)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert any(line.split()[0] == "attenuate-output" and "[harness-plugin-example]" in line for line in lines)
    assert any(line.split()[0] == "brightness" and "Mean pixel brightness" in line for line in lines)
    only_methods = run_harness("list", "methods", env=env).stdout.split()
    assert "attenuate-output" in only_methods and "brightness" not in only_methods

    proc = run_harness(*run_args(dirs, "--method", "attenuate-output", "--suite", "brightness,fidelity",
                                 "--limit", "2", "--set", "attenuate-output.factor=0.25"), env=env)
    assert proc.returncode == 0, proc.stderr
    results = read_results(proc.stdout)
    assert results["method"]["chain"] == [{"name": "attenuate-output", "params": {"factor": 0.25}}]
    assert results["compression"]["steps"][0]["cost"] == {"tensors_scaled": 1}
    assert 0.0 <= results["metrics"]["brightness/mean"] <= 1.0
    assert results["metric_details"]["brightness/mean"]["unit"] == "fraction"
    assert 0 < results["metrics"]["fidelity/psnr"] < 100  # the plugin really changed the model
    assert Path(proc.stdout.strip().splitlines()[-1]).is_file()

    without = run_harness("list", "methods")
    assert "attenuate-output" not in without.stdout.split()
