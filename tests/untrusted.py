"""Helpers for the untrusted-input tests: the CLI in-process and a fingerprint of a folder's files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from inspector.cli import main as cli_main


def fingerprint(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links by their target text) -> a content hash, to prove nothing changed."""
    prints: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            key = os.fsencode(path.relative_to(root)).hex()
            if path.is_symlink():
                prints[key] = "link:" + os.readlink(path)
            elif path.is_file():
                prints[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                prints[key] = "dir"
    return prints


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command line in this process (same code path as ``python -m inspector``): code, stdout, stderr."""
    code = cli_main([*argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err
