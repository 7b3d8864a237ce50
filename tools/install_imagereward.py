"""Install an environment the `image-reward` package (1.5) runs in, for the imagereward suite and its parity test.

image-reward's BLIP text model imports helpers transformers 5 removed and builds itself with transformers 4's
initialisation; its wheel pins timm==0.6.13 and fairscale, and its package imports its training code (diffusers,
datasets) and OpenAI's `clip`. So it gets an overlay of its own, a folder put first on PYTHONPATH of the scoring
subprocess: transformers 4.46 with the tokenizers and huggingface-hub it needs, fairscale, and image-reward without
its pins; torch, torchvision, timm (whose old import paths still work) and the rest come from this environment.
The scoring code imports only the model modules (`suites/imagereward_worker.py`), never the package's __init__.

Usage: python tools/install_imagereward.py [--target DIR]  (default: <this environment>/imagereward-env)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

PACKAGES = ("image-reward==1.5", "fairscale==0.4.13", "transformers==4.46.3", "tokenizers==0.20.3",
            "huggingface-hub==0.36.0")


def default_target() -> Path:
    return Path(sys.prefix) / "imagereward-env"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path, default=default_target())
    args = parser.parse_args(argv)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade", "--target",
                    str(args.target), *PACKAGES], check=True)
    print(f"image-reward installed into {args.target} (PYTHONPATH overlay of the imagereward suite)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
