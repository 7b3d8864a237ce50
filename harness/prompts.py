"""Prompt files: plain text (one prompt per line, '#' comments) or JSONL (one {"prompt": ...} object per line)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import UsageError


def read_text_file(path: Path, what: str) -> str:
    """The text of a file the user named; `what` names it in the errors ("prompt file", "metadata file")."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"{what} '{path}' does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{what} '{path}' is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} '{path}' is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None


def read_prompt_file(path: Path) -> list[str]:
    path = Path(path)
    text = read_text_file(path, "prompt file")
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or (path.suffix != ".jsonl" and line.startswith("#")):
            continue
        if path.suffix == ".jsonl":
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"]:
                raise UsageError(f'{path}:{number}: expected an object with a non-empty "prompt" string')
            line = record["prompt"]
        prompts.append(line)
    if not prompts:
        raise UsageError(f"prompt file '{path}' holds no prompts")
    return prompts
