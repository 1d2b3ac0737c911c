"""Reading a user's OOD image pool (a folder or a zip) without trusting anything in it.

The pool may come from anywhere, so nothing in it is extracted, followed or executed: zip entries
are read into memory by name checks first, symbolic links are not followed, sizes and pixel
counts are checked before decoding. Every file that is not used is listed with its reason.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from inspector import limits
from inspector.backbone import pil_to_pixels
from inspector.data import ImagePool
from inspector.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
Entry = tuple[str, int, Callable[[], bytes]]  # (shown name, size in bytes, reader)


class Skip(Exception):
    """A file of the pool that is not used, with the reason shown to the user."""


def display_name(name: str) -> str:
    """A file name safe to print and to write into reports (undecodable bytes shown as \\xNN)."""
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


def _mb(n: int) -> str:
    return f"{n / limits.MiB:.1f} MB"


# --- listing ------------------------------------------------------------------------------------------
def _folder_entries(root: Path, skipped: list[tuple[str, str]]) -> list[Entry]:
    entries: list[Entry] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for link in [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            skipped.append((display_name(os.path.relpath(os.path.join(folder, link), root)),
                            "symbolic link to a folder (not followed)"))
        for name in sorted(files):
            path = os.path.join(folder, name)
            shown = display_name(os.path.relpath(path, root))
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                skipped.append((shown, "symbolic link (not followed)"))
            elif not stat.S_ISREG(info.st_mode):
                skipped.append((shown, "not a regular file"))
            elif Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((shown, "not an image file type"))
            else:
                entries.append((shown, info.st_size, lambda p=path: _read_file(p)))
            if len(entries) + len(skipped) > limits.MAX_POOL_FILES:
                raise InputError(f"image pool {root} has more than {limits.MAX_POOL_FILES:,} files",
                                 hint="point at a folder of a few thousand images (1,000 are used)")
    return entries


def _read_file(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(limits.MAX_IMAGE_BYTES + 1)


def _unsafe_zip_name(name: str) -> bool:
    """Absolute paths, drive letters and ``..`` parts: names that would escape an extraction folder."""
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    return posix.startswith("/") or ".." in parts or (len(posix) > 1 and posix[1] == ":")


def _zip_entries(archive: zipfile.ZipFile, source: Path, skipped: list[tuple[str, str]]) -> list[Entry]:
    infos = archive.infolist()
    if len(infos) > limits.MAX_POOL_FILES:
        raise InputError(f"zip {source} has {len(infos):,} entries, more than {limits.MAX_POOL_FILES:,}",
                         hint="zip a few thousand images (1,000 are used)")
    entries: list[Entry] = []
    for info in sorted(infos, key=lambda i: i.filename):
        if info.is_dir():
            continue
        shown = display_name(info.filename)
        if _unsafe_zip_name(info.filename):
            skipped.append((shown, "unsafe path in the zip (absolute or '..'; not used)"))
        elif stat.S_ISLNK(info.external_attr >> 16):
            skipped.append((shown, "symbolic link in the zip (not followed)"))
        elif info.flag_bits & 0x1:
            skipped.append((shown, "encrypted zip entry"))
        elif Path(info.filename).suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((shown, "not an image file type"))
        else:
            entries.append((shown, info.file_size, lambda i=info: _read_zip_entry(archive, i)))
    return entries


def _read_zip_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """At most one byte over the limit, whatever the entry's header claims (zip bombs lie)."""
    try:
        with archive.open(info) as handle:
            return handle.read(limits.MAX_IMAGE_BYTES + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise Skip(f"corrupt zip entry ({exc})") from exc


# --- decoding -----------------------------------------------------------------------------------------
def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode: 16-bit and float greys scaled (not clipped), transparency on white."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I") else 1.0
        top = max(top, float(values.max())) if image.mode in ("I", "F") and values.size else top
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(blob: bytes, size: int) -> torch.Tensor:
    """One untrusted image -> [0, 1] pixels at ``size``; raises ``Skip`` with the reason otherwise."""
    if len(blob) > limits.MAX_IMAGE_BYTES:
        raise Skip(f"file larger than {_mb(limits.MAX_IMAGE_BYTES)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob)) as image:
                width, height = image.size
                if width * height > limits.MAX_IMAGE_PIXELS:
                    raise Skip(f"{width} x {height} pixels, over the {limits.MAX_IMAGE_PIXELS:,}-pixel limit "
                               "(decompression bomb?)")
                if width < 1 or height < 1:
                    raise Skip("image has no pixels")
                image.load()
                upright = ImageOps.exif_transpose(image)
                return pil_to_pixels(to_rgb(upright), size)
    except Skip:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Skip("over Pillow's pixel limit (decompression bomb?)") from exc
    except UnidentifiedImageError as exc:
        raise Skip("not a readable image (unknown or corrupt format)") from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error) as exc:
        raise Skip(f"corrupt or truncated image ({_short(exc)})") from exc


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:80]


# --- the pool -----------------------------------------------------------------------------------------
def _entries(source: Path, skipped: list[tuple[str, str]]) -> tuple[list[Entry], zipfile.ZipFile | None]:
    if source.is_dir():
        return _folder_entries(source, skipped), None
    if not source.exists():
        raise InputError(f"image pool {source} does not exist", hint="pass a folder of images or a .zip of images")
    if source.is_file() and zipfile.is_zipfile(source):
        try:
            archive = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"zip {source} cannot be read ({exc})", hint="re-create the zip") from exc
        return _zip_entries(archive, source, skipped), archive
    raise InputError(f"image pool {source} is neither a folder nor a zip file",
                     hint="pass a folder of images or a .zip of images")


def read_pool(source: Path | str, size: int, limit: int | None = None) -> ImagePool:
    """Images from a folder (recursively) or a .zip, as [0, 1] pixels at ``size``.

    ``limit`` stops after that many usable images (files are taken in name order, so the same pool
    gives the same images). Skipped files are listed with their reason, never silently dropped.
    """
    source = Path(source)
    skipped: list[tuple[str, str]] = []
    entries, archive = _entries(source, skipped)
    pixels: list[torch.Tensor] = []
    names: list[str] = []
    seen: dict[str, str] = {}
    read_bytes = 0
    unread = 0
    try:
        for position, (name, declared, read) in enumerate(entries):
            if limit is not None and len(pixels) >= limit:
                unread = len(entries) - position
                break
            try:
                if declared > limits.MAX_IMAGE_BYTES:
                    raise Skip(f"file larger than {_mb(limits.MAX_IMAGE_BYTES)} ({_mb(declared)})")
                if read_bytes + declared > limits.MAX_POOL_BYTES:
                    raise Skip(f"pool over {_mb(limits.MAX_POOL_BYTES)} in all; not read")
                blob = read()
                read_bytes += len(blob)
                digest = hashlib.sha256(blob).hexdigest()
                if digest in seen:
                    raise Skip(f"duplicate of {seen[digest]}")
                image = decode_image(blob, size)
            except Skip as why:
                skipped.append((name, str(why)))
                continue
            except OSError as exc:
                skipped.append((name, f"cannot be read ({exc.strerror or exc})"))
                continue
            seen[digest] = name
            pixels.append(image)
            names.append(name)
    finally:
        if archive is not None:
            archive.close()
    if not pixels:
        listed = "; ".join(f"{n}: {r}" for n, r in skipped[:3])
        raise InputError(f"image pool {source} holds no readable images ({len(skipped)} files skipped"
                         + (f": {listed}" if listed else "") + ")",
                         hint="add PNG or JPEG images to it")
    return ImagePool(torch.stack(pixels), names, skipped, unread)


def pool_summary(pool: ImagePool, source: str) -> dict:
    """What a report and the app say about a user's pool: its size and every file not used."""
    return {"source": source, "images": len(pool.names), "unread": pool.unread,
            "skipped": [{"file": f, "reason": r} for f, r in pool.skipped]}


def iter_skipped_lines(pool: ImagePool, shown: int = 10) -> Iterator[str]:
    """Human lines about what was not used, for the CLI."""
    if pool.skipped:
        yield f"skipped {len(pool.skipped)} file(s) of the pool:"
        for name, reason in pool.skipped[:shown]:
            yield f"  {name}: {reason}"
        if len(pool.skipped) > shown:
            yield f"  … and {len(pool.skipped) - shown} more (all listed in report.json)"
    if pool.unread:
        yield f"{pool.unread} image file(s) beyond the first {len(pool.names)} were not read (--pool-size)"
