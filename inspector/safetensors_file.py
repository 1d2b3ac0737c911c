"""Why a file is not a safetensors file, in the user's words (the reader's own errors name its internals).

A safetensors file starts with an 8-byte little-endian header length, then that many bytes of JSON
header, then the tensors. Reading those first bytes tells a renamed text file, an image, a zip or a
torch checkpoint from a truncated or damaged safetensors file.
"""

from __future__ import annotations

from pathlib import Path

_MAGIC = ((b"PK\x03\x04", "a zip archive (a torch .pt/.pth checkpoint or a zipped folder)"),
          (b"\x80\x02", "a pickled Python file (an old torch checkpoint)"),
          (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip archive"))


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


def describe_problem(path: Path) -> str:
    """What the start of ``path`` shows it to be, for a file the safetensors reader refused."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(64)
    if size < 8:
        return f"it holds only {size} byte(s), too few for a safetensors file"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return f"it is {what}, not a safetensors file"
    if _looks_like_text(head[:min(len(head), 48)]) and not head[8:9] == b"{":
        shown = head[:40].decode("utf-8", "replace").splitlines()[0] if head.strip() else ""
        return f"it is a text file (it starts with {shown!r}), not a safetensors file"
    header_length = int.from_bytes(head[:8], "little")
    if header_length + 8 > size:
        return (f"its first bytes announce a {header_length:,}-byte header but the file holds {size:,} bytes: "
                "it is truncated or not a safetensors file")
    if head[8:9] != b"{":
        return "its header is not the JSON a safetensors file starts with: the file is damaged or of another format"
    return "its header or tensors are damaged (the reader could not parse them)"
