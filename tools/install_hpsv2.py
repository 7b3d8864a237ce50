"""Install the `hpsv2` package (1.2.0) as the HPSv2 parity test's reference, working around its broken wheel.

Its pinned dependencies (pytest==7.2.0, protobuf<4, ...) would downgrade this environment, so it goes in without
them (plus `clint`, the one import it needs that nothing else brings); its wheel also lacks the CLIP BPE vocabulary
its bundled open_clip reads at import, which is the same file open_clip ships, so it is copied from there.
Run with the environment's own interpreter: `python tools/install_hpsv2.py`.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

VOCABULARY = "bpe_simple_vocab_16e6.txt.gz"


def main() -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "hpsv2==1.2.0", "clint==0.5.1"],
                   check=True)
    open_clip = importlib.util.find_spec("open_clip")
    hpsv2 = importlib.util.find_spec("hpsv2")  # located, not imported: importing it is what needs the file
    assert open_clip and open_clip.origin and hpsv2 and hpsv2.submodule_search_locations
    source = Path(open_clip.origin).parent / VOCABULARY
    target = Path(next(iter(hpsv2.submodule_search_locations))) / "src" / "open_clip" / VOCABULARY
    shutil.copyfile(source, target)
    print(f"hpsv2 installed; {VOCABULARY} copied into {target.parent}")


if __name__ == "__main__":
    main()
