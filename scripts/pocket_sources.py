"""Render the pocket world's raw images from Debian packages (rebuild only, never at run time).

Sources (install with ``apt-get install openclipart-png fonts-noto-color-emoji``):
- openclipart-png: ~8,100 human-made clip-art PNGs in named category folders;
- fonts-noto-color-emoji: the colour emoji, named through ``unicodedata.name``.

Every image is composited on white, padded to a square and resized to the pocket input size, so
the rest of the build works on one uint8 array. Near-duplicate variants of one drawing
(``foo_01.png``, ``foo_02.png``) share a *source id*, so that splits never straddle them.
"""

from __future__ import annotations

import json
import re
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CLIPART_ROOT = Path("/usr/share/openclipart/png")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
IMAGE_SIZE = 64
EMOJI_RANGES = [(0x2190, 0x21FF), (0x2300, 0x23FF), (0x2600, 0x27BF), (0x2900, 0x297F),
                (0x2B00, 0x2BFF), (0x1F000, 0x1FAFF)]


@dataclass
class SourceImage:
    """One rendered image and what is known about it (no label decisions here)."""

    origin: str  # "openclipart" or "emoji"
    source_id: str  # variants of one drawing share it
    category: str  # folder path for clip art, "emoji" for emoji
    words: str  # human words from the file name or the Unicode name


def _square_on_white(im: Image.Image, size: int) -> np.ndarray:
    im = im.convert("RGBA")
    bbox = im.getchannel("A").getbbox()
    if bbox:
        im = im.crop(bbox)
    side = max(im.size)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(im, ((side - im.width) // 2, (side - im.height) // 2))
    return np.asarray(canvas.convert("RGB").resize((size, size), Image.Resampling.LANCZOS))


def _clipart_words(path: Path) -> str:
    stem = re.sub(r"[_\-\.]+", " ", path.stem)
    stem = re.sub(r"\d+", " ", stem)
    return " ".join(stem.lower().split())


def _clipart_source_id(path: Path) -> str:
    rel = path.relative_to(CLIPART_ROOT).with_suffix("")
    return "clipart:" + re.sub(r"[_\-]?\d+$", "", str(rel))


def _render_clipart(path: Path) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            im.draft("RGBA", (IMAGE_SIZE * 4, IMAGE_SIZE * 4))
            if max(im.size) > 4 * IMAGE_SIZE:
                im.thumbnail((IMAGE_SIZE * 4, IMAGE_SIZE * 4))
            return _square_on_white(im, IMAGE_SIZE)
    except Exception:  # noqa: BLE001 - a broken file in the package is skipped, counted below
        return None


def _render_emoji(codepoint: int) -> np.ndarray | None:
    font = ImageFont.truetype(str(EMOJI_FONT), 109)
    im = Image.new("RGBA", (160, 160), (255, 255, 255, 0))
    ImageDraw.Draw(im).text((8, 8), chr(codepoint), font=font, embedded_color=True)
    if im.getchannel("A").getbbox() is None:
        return None
    return _square_on_white(im, IMAGE_SIZE)


def collect(out_dir: Path) -> tuple[np.ndarray, list[SourceImage]]:
    """Render all sources once; cached as ``images.npy`` + ``sources.json`` in ``out_dir``."""
    images_file, meta_file = out_dir / "images.npy", out_dir / "sources.json"
    if images_file.exists() and meta_file.exists():
        meta = [SourceImage(**m) for m in json.loads(meta_file.read_text())]
        return np.load(images_file), meta
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = sorted(CLIPART_ROOT.rglob("*.png"))
    codepoints = [c for lo, hi in EMOJI_RANGES for c in range(lo, hi + 1)
                  if unicodedata.name(chr(c), "")]
    with ProcessPoolExecutor(2) as pool:
        clip_imgs = list(pool.map(_render_clipart, paths, chunksize=64))
        emoji_imgs = list(pool.map(_render_emoji, codepoints, chunksize=64))
    images, meta = [], []
    for path, img in zip(paths, clip_imgs, strict=True):
        if img is not None:
            images.append(img)
            category = str(path.parent.relative_to(CLIPART_ROOT))
            meta.append(SourceImage("openclipart", _clipart_source_id(path), category,
                                    _clipart_words(path)))
    for cp, img in zip(codepoints, emoji_imgs, strict=True):
        if img is not None:
            images.append(img)
            meta.append(SourceImage("emoji", f"emoji:{cp:x}", "emoji",
                                    unicodedata.name(chr(cp)).lower()))
    array = np.stack(images)
    np.save(images_file, array)
    meta_file.write_text(json.dumps([asdict(m) for m in meta]))
    print(f"rendered {len(paths)} clip-art files and {len(codepoints)} emoji code points "
          f"-> {len(meta)} images")
    return array, meta


if __name__ == "__main__":
    collect(Path("/tmp/pocket_build"))
