"""Reading a user's OOD image pool (a folder or a zip) without trusting anything in it.

The pool may come from anywhere, so nothing in it is extracted, followed or executed: zip entries
are read into memory by name checks first, symbolic links are not followed, sizes and pixel
counts are checked before decoding. Every file that is not used is listed with its reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import lzma
import os
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from inspector import limits
from inspector.backbone import pil_to_pixels
from inspector.data import ImagePool
from inspector.errors import InputError, cut

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


# what a damaged or hostile zip raises while it is opened or read: zipfile does not wrap its decoders' errors, a
# name flagged UTF-8 that is not raises UnicodeDecodeError, an encrypted entry RuntimeError
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, zlib.error,
              lzma.LZMAError, UnicodeDecodeError, RuntimeError, ValueError)


class Skip(Exception):
    """A file of the pool that is not used, with the reason shown to the user."""


@dataclass
class Entry:
    """One regular file of a folder or zip, not yet read."""

    name: str  # relative path, safe to print
    size: int  # bytes, as the file system or the zip's header says
    read: Callable[[], bytes]

    @property
    def parts(self) -> tuple[str, ...]:
        return PurePosixPath(self.name).parts

    @property
    def is_image(self) -> bool:
        return Path(self.name).suffix.lower() in IMAGE_SUFFIXES


@dataclass
class Listing:
    """What a folder or zip holds: its regular files, its folders, and what was refused while listing."""

    source: Path
    entries: list[Entry]
    folders: set[tuple[str, ...]]  # every folder (as path parts), empty ones included
    skipped: list[tuple[str, str]]


def display_name(name: str) -> str:
    """A file name safe to print and to write into reports (undecodable bytes shown as \\xNN)."""
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


def _mb(n: int) -> str:
    return f"{n / limits.MiB:.1f} MB"


# --- listing ------------------------------------------------------------------------------------------
def _folder_listing(root: Path, what: str) -> Listing:
    listing = Listing(root, [], set(), [])
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        relative = Path(folder).relative_to(root)
        if relative.parts:
            listing.folders.add(tuple(display_name(p) for p in relative.parts))
        for link in [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            listing.skipped.append((display_name(os.path.relpath(os.path.join(folder, link), root)),
                                    "symbolic link to a folder (not followed)"))
        for name in sorted(files):
            path = os.path.join(folder, name)
            shown = display_name(os.path.relpath(path, root))
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                listing.skipped.append((shown, "symbolic link (not followed)"))
            elif not stat.S_ISREG(info.st_mode):
                listing.skipped.append((shown, "not a regular file"))
            else:
                listing.entries.append(Entry(shown, info.st_size, lambda p=path: _read_file(p)))
            if len(listing.entries) + len(listing.skipped) > limits.MAX_POOL_FILES:
                raise InputError(f"{what} {root} has more than {limits.MAX_POOL_FILES:,} files",
                                 hint="point at a folder of a few thousand images")
    return listing


def _read_file(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(limits.MAX_IMAGE_BYTES + 1)


def _unsafe_zip_name(name: str) -> bool:
    """Absolute paths, drive letters and ``..`` parts: names that would escape an extraction folder."""
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    return posix.startswith("/") or ".." in parts or (len(posix) > 1 and posix[1] == ":")


def _zip_listing(archive: zipfile.ZipFile, source: Path, what: str) -> Listing:
    infos = archive.infolist()
    if len(infos) > limits.MAX_POOL_FILES:
        raise InputError(f"zip {source} has {len(infos):,} entries, more than {limits.MAX_POOL_FILES:,}",
                         hint="zip a few thousand images")
    listing = Listing(source, [], set(), [])
    for info in sorted(infos, key=lambda i: i.filename):
        shown = display_name(info.filename)
        if _unsafe_zip_name(info.filename):
            listing.skipped.append((shown, "unsafe path in the zip (absolute or '..'; not used)"))
            continue
        parts = PurePosixPath(shown.replace("\\", "/")).parts
        top = len(parts) if info.is_dir() else len(parts) - 1
        listing.folders.update(parts[:n] for n in range(1, top + 1))
        if info.is_dir():
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            listing.skipped.append((shown, "symbolic link in the zip (not followed)"))
        elif info.flag_bits & 0x1:
            listing.skipped.append((shown, "encrypted zip entry"))
        else:
            listing.entries.append(Entry(shown, info.file_size, lambda i=info: _read_zip_entry(archive, i)))
    return listing


def _read_zip_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """At most one byte over the limit, whatever the entry's header claims (zip bombs lie)."""
    try:
        with archive.open(info) as handle:
            return handle.read(limits.MAX_IMAGE_BYTES + 1)
    except ZIP_ERRORS as exc:
        raise Skip(f"corrupt zip entry ({_short(exc)})") from exc


@contextlib.contextmanager
def listed(source: Path | str, what: str = "image pool") -> Iterator[Listing]:
    """List a folder (recursively, links not followed) or a zip (never extracted); the zip stays open inside."""
    source = Path(source)
    hint = f"pass a folder or a .zip of images as the {what}"
    if source.is_dir():
        yield _folder_listing(source, what)
        return
    if not source.exists():
        raise InputError(f"{what} {source} does not exist", hint=hint)
    if not (source.is_file() and zipfile.is_zipfile(source)):
        raise InputError(f"{what} {source} is neither a folder nor a zip file", hint=hint)
    try:
        archive = zipfile.ZipFile(source)
    except ZIP_ERRORS as exc:
        raise InputError(f"zip {source} cannot be read ({_short(exc)})", hint="re-create the zip") from exc
    with archive:
        yield _zip_listing(archive, source, what)


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


def upright(image: Image.Image) -> Image.Image:
    """The image as a camera's EXIF orientation says to show it; as stored when that record is unreadable (the
    pixels are fine, only the note on how to turn them is damaged)."""
    try:
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, OSError, EOFError, IndexError, TypeError, KeyError, struct.error):
        return image


def decode_image(blob: bytes, size: int) -> torch.Tensor:
    """One untrusted image -> [0, 1] pixels at ``size``; raises ``Skip`` with the reason otherwise."""
    if len(blob) > limits.MAX_IMAGE_BYTES:
        raise Skip(f"file larger than {_mb(limits.MAX_IMAGE_BYTES)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's notes on damaged fields it skips: the file's reason says it
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob)) as image:
                width, height = image.size
                if width * height > limits.MAX_IMAGE_PIXELS:
                    raise Skip(f"{width} x {height} pixels, over the {limits.MAX_IMAGE_PIXELS:,}-pixel limit "
                               "(decompression bomb?)")
                if width < 1 or height < 1:
                    raise Skip("image has no pixels")
                image.load()
                return pil_to_pixels(to_rgb(upright(image)), size)
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


# --- reading images -----------------------------------------------------------------------------------
@dataclass
class Decoded:
    """Images decoded from entries, with the content hash of each (for duplicates and fingerprints)."""

    pixels: list[torch.Tensor] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    seen: dict[str, str] = field(default_factory=dict)  # digest -> first file with it
    read_bytes: int = 0


def decode_entries(entries: list[Entry], size: int, skipped: list[tuple[str, str]], into: Decoded | None = None,
                   limit: int | None = None) -> tuple[Decoded, int]:
    """Decode ``entries`` in order at ``size`` px until ``limit`` usable images; returns them and how many
    entries were left unread. Every file not used goes into ``skipped`` with its reason."""
    done = into or Decoded()
    start = len(done.names)
    for position, entry in enumerate(entries):
        if limit is not None and len(done.names) - start >= limit:
            return done, len(entries) - position
        try:
            if entry.size > limits.MAX_IMAGE_BYTES:
                raise Skip(f"file larger than {_mb(limits.MAX_IMAGE_BYTES)} ({_mb(entry.size)})")
            if done.read_bytes + entry.size > limits.MAX_POOL_BYTES:
                raise Skip(f"pool over {_mb(limits.MAX_POOL_BYTES)} in all; not read")
            blob = entry.read()
            done.read_bytes += len(blob)
            digest = hashlib.sha256(blob).hexdigest()
            if digest in done.seen:
                raise Skip(f"duplicate of {done.seen[digest]}")
            image = decode_image(blob, size)
        except Skip as why:
            skipped.append((entry.name, str(why)))
            continue
        except OSError as exc:
            skipped.append((entry.name, f"cannot be read ({exc.strerror or exc})"))
            continue
        done.seen[digest] = entry.name
        done.pixels.append(image)
        done.names.append(entry.name)
        done.digests.append(digest)
    return done, 0


def fingerprint_of(digests: list[str], *labels: str) -> str:
    """A short content hash of a set of images (in order), to tell whether two runs read the same data."""
    digest = hashlib.sha256("\n".join([*labels, *digests]).encode())
    return "sha256:" + digest.hexdigest()[:16]


# --- the pool -----------------------------------------------------------------------------------------
def read_pool(source: Path | str, size: int, limit: int | None = None, label: str | None = None) -> ImagePool:
    """Images from a folder (recursively) or a .zip, as [0, 1] pixels at ``size``.

    ``limit`` stops after that many usable images (files are taken in name order, so the same pool
    gives the same images). Skipped files are listed with their reason, never silently dropped.
    ``label``: how the pool is named in messages and reports (default: its path).
    """
    source = Path(source)
    with listed(source) as listing:
        skipped = list(listing.skipped)
        images = []
        for entry in listing.entries:
            (images if entry.is_image else skipped).append(entry if entry.is_image else
                                                           (entry.name, "not an image file type"))
        done, unread = decode_entries(images, size, skipped, limit=limit)
    if not done.pixels:
        listed_text = "; ".join(f"{cut(n, 80)}: {cut(r, 80)}" for n, r in skipped[:3])
        raise InputError(f"image pool {source} holds no readable images ({len(skipped)} files skipped"
                         + (f": {listed_text}" if listed_text else "") + ")",
                         hint="add PNG or JPEG images to it")
    return ImagePool(torch.stack(done.pixels), done.names, skipped, unread, label or str(source),
                     fingerprint_of(done.digests))


def require_images(pool: ImagePool, pool_size: int) -> None:
    """Refuse, naming the pool, one with too few usable images for a scan (a fifth of them is held out)."""
    if len(pool.pixels) < min(pool_size, limits.MIN_POOL_IMAGES):
        skipped = f", {len(pool.skipped)} file(s) skipped" if pool.skipped else ""
        raise InputError(f"OOD pool {pool.source} has {len(pool.pixels)} usable image(s){skipped}; a scan needs at "
                         f"least {limits.MIN_POOL_IMAGES} (a fifth is held out to measure flip rates)",
                         hint="use a pool of a few hundred unlabelled images (1,000 recommended)")


def pool_summary(pool: ImagePool) -> dict:
    """What a report and the app say about a pool: its source, size, identity and every file not used."""
    return {"source": pool.source, "images": len(pool.names), "unread": pool.unread,
            "fingerprint": pool.fingerprint, "skipped": [{"file": f, "reason": r} for f, r in pool.skipped]}


def iter_skipped_lines(skipped: list[tuple[str, str]], shown: int = 10, what: str = "the pool") -> Iterator[str]:
    """Human lines about the files that were not used, for the CLI."""
    if skipped:
        yield f"skipped {len(skipped)} file(s) of {what}:"
        for name, reason in skipped[:shown]:
            yield f"  {name}: {reason}"
        if len(skipped) > shown:
            yield f"  … and {len(skipped) - shown} more (all listed in report.json)"
