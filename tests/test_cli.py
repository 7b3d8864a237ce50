"""The CLI's cheap paths stay cheap, and `list` prints one name per line with its description."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, harness_env, invoke


def test_list_and_help_do_not_import_torch_or_diffusers():
    code = ("import sys, contextlib, io\n"
            "from harness.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['list'])\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
            "print(','.join(heavy))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=harness_env(), cwd=REPO,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_list_prints_each_kind_with_descriptions():
    proc = invoke("list", "models")
    assert proc.returncode == 0
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert names == sorted(names)
    presets = {"sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "flux.1-dev", "flux.1-schnell", "tiny-sd3"}
    assert presets <= set(names)
    assert all(len(line.split(maxsplit=1)) == 2 for line in proc.stdout.splitlines())
    everything = invoke("list").stdout
    assert "methods:" in everything and "\n  none " in everything and "\n  fidelity " in everything


def test_unknown_list_kind_is_a_usage_error():
    proc = invoke("list", "modles")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
