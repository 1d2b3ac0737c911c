"""A seeded fuzzer of image files, OOD pools and labelled sets: hostile images (damaged bytes, lying headers,
decompression bombs, odd modes, bad EXIF, several frames, wrong suffixes) inside folders and zips that are hostile
themselves (unsafe names, links, encrypted, nested or lying entries, a damaged archive).

An image is judged as a pool reads it (``decode_image``): pixels in [0, 1] of the asked size, or a ``Skip`` with a
reason. A pool or labelled set is judged as ``scan --ood`` and ``eval --task`` read it: it is read, and every file
in it is either used or listed with its reason, or it is refused with an ``InputError`` naming it. Anything else is
a finding (tests/test_fuzz_images.py runs a few hundred cases, benchmarks/fuzz.py thousands).
"""

from __future__ import annotations

import io
import random
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from inspector.pools import Skip, decode_image, read_pool
from inspector.tasks import read_labelled
from tests.fuzzing import judge

SIZE = 32
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
MODES = {"PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"), "JPEG": ("L", "RGB", "CMYK"),
         "GIF": ("L", "P"), "BMP": ("1", "L", "P", "RGB"), "WEBP": ("RGB", "RGBA"),
         "TIFF": ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F", "LAB")}
IMAGE_MUTATIONS = ("clean", "flip", "truncate", "dimensions", "exif", "frames", "suffix", "bomb", "empty",
                   "palette", "extreme")


def picture(rng: random.Random, fmt: str | None = None, mode: str | None = None) -> tuple[str, bytes]:
    """A small valid image in a random format and mode: (suffix, bytes)."""
    fmt = fmt or rng.choice(sorted(FORMATS))
    mode = mode or rng.choice(MODES[fmt])
    width, height = rng.randint(1, 48), rng.randint(1, 48)
    noise = torch.randint(0, 256, (height, width, 3), generator=torch.Generator().manual_seed(rng.getrandbits(31)))
    image = Image.fromarray(noise.to(torch.uint8).numpy(), "RGB")
    image = image.convert(mode) if mode not in ("I;16", "LAB") else image.convert("L").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return FORMATS[fmt], buffer.getvalue()


def _png_dimensions(blob: bytes, width: int, height: int) -> bytes:
    """A PNG whose header claims other dimensions, with a valid checksum so that decoders believe it."""
    header = b"IHDR" + struct.pack(">II", width, height) + blob[24:29]
    return blob[:12] + header + struct.pack(">I", zlib.crc32(header)) + blob[33:]


def mutate_image(rng: random.Random, bombs: dict[tuple[int, int], bytes]) -> tuple[str, str, bytes]:
    """One hostile image: (what was done, file suffix, bytes). ``bombs`` caches the costly bomb files."""
    kind = rng.choice(IMAGE_MUTATIONS)
    suffix, blob = picture(rng)
    if kind == "flip":
        data = bytearray(blob)
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
        return f"{kind} {suffix}", suffix, bytes(data)
    if kind == "truncate":
        return f"{kind} {suffix}", suffix, blob[:rng.randrange(0, len(blob))]
    if kind == "dimensions":
        _, png = picture(rng, "PNG", "RGB")
        size = rng.choice(((0, 5), (5, 0), (100_000, 100_000), (2 ** 31 - 1, 1), (1, 2 ** 31 - 1), (6_400, 6_400),
                           (2 ** 32 - 1, 2 ** 32 - 1), (3, 3)))
        return f"{kind} {size[0]}x{size[1]}", ".png", _png_dimensions(png, *size)
    if kind == "exif":
        fmt = rng.choice(("JPEG", "PNG", "TIFF", "WEBP"))
        image = Image.new("RGB", (rng.randint(1, 40), rng.randint(1, 40)), (rng.randrange(256), 60, 90))
        if rng.random() < 0.5:
            exif = Image.Exif()
            exif[0x0112] = rng.choice((0, 1, 5, 8, 9, 255, 65535))
            raw = exif.tobytes()
        else:
            raw = b"Exif\x00\x00" + bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        buffer = io.BytesIO()
        try:
            image.save(buffer, format=fmt, exif=raw)
        except Exception:  # noqa: BLE001 - Pillow refuses to write this EXIF: the image without it
            buffer = io.BytesIO()
            image.save(buffer, format=fmt)
        return f"{kind} {fmt}", FORMATS[fmt], buffer.getvalue()
    if kind == "frames":
        fmt = rng.choice(("GIF", "TIFF", "WEBP", "PNG"))
        frames = [Image.new("RGB", (16, 16), (i * 40 % 256, 0, 0)).convert("P" if fmt == "GIF" else "RGB")
                  for i in range(rng.randint(2, 6))]
        buffer = io.BytesIO()
        frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:])
        return f"{kind} {fmt}", FORMATS[fmt], buffer.getvalue()
    if kind == "suffix":
        other = rng.choice([s for s in FORMATS.values() if s != suffix] + [".jpeg", ".PNG", ".tiff"])
        return f"{kind} {suffix}->{other}", other, blob if rng.random() < 0.7 else b"<html>no picture</html>"
    if kind == "bomb":
        pixels = rng.choice(((7_000, 7_000), (12_000, 12_000), (40_000, 1)))
        if pixels not in bombs:
            buffer = io.BytesIO()
            Image.new("1", pixels).save(buffer, format="PNG")
            bombs[pixels] = buffer.getvalue()
        return f"{kind} {pixels[0]}x{pixels[1]}", ".png", bombs[pixels]
    if kind == "empty":
        return kind, suffix, b""
    if kind == "palette":
        image = Image.new("P", (12, 12), rng.randrange(256))
        image.putpalette(bytes(rng.randrange(256) for _ in range(3 * rng.randint(1, 256))))
        if rng.random() < 0.5:
            image.info["transparency"] = rng.choice((0, 255, bytes(rng.randrange(256) for _ in range(300))))
        buffer = io.BytesIO()
        try:
            image.save(buffer, format="PNG")
        except Exception:  # noqa: BLE001 - Pillow refuses this transparency: the image without it
            buffer = io.BytesIO()
            image.info.pop("transparency", None)
            image.save(buffer, format="PNG")
        return kind, ".png", buffer.getvalue()
    if kind == "extreme":  # a valid image of an extreme shape or value range
        mode, size = rng.choice((("F", (4, 4)), ("I", (4, 4)), ("RGB", (1, 1)), ("RGB", (4_000, 1)),
                                 ("L", (1, 3_000))))
        if mode == "F":
            image = Image.frombytes("F", size, struct.pack("<16f", *([float("nan"), float("inf"), -1e38, 1e38] * 4)))
        elif mode == "I":
            image = Image.frombytes("I", size, struct.pack("<16i", *([-2 ** 31, 2 ** 31 - 1, 0, -1] * 4)))
        else:
            image = Image.new(mode, size, rng.randrange(256))
        buffer = io.BytesIO()
        image.save(buffer, format="TIFF")
        return f"{kind} {mode} {size[0]}x{size[1]}", ".tif", buffer.getvalue()
    return kind, suffix, blob


def judge_image(blob: bytes) -> tuple[str, str]:
    """How a pool takes one image file: ``used``, ``skipped`` (with the reason) or ``unexpected``."""
    try:
        pixels = decode_image(blob, SIZE)
    except Skip as why:
        return "skipped", str(why)
    except Exception as exc:  # noqa: BLE001 - the point: anything else is a finding
        return "unexpected", f"{type(exc).__name__}: {str(exc)[:300]}"
    if pixels.shape != (3, SIZE, SIZE) or not torch.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
        return "unexpected", f"pixels of shape {tuple(pixels.shape)} outside [0, 1] or not finite"
    return "used", ""


def fuzz_images(cases: int, seed: int) -> Iterator[dict[str, Any]]:
    """``cases`` hostile images, each judged alone."""
    rng, bombs = random.Random(seed), {}
    for case in range(cases):
        what, _, blob = mutate_image(rng, bombs)
        outcome, detail = judge_image(blob)
        yield {"case": case, "mutation": what, "outcome": outcome, "detail": detail}


# --- folders and zips -----------------------------------------------------------------------------------
def good_png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), (shade % 256, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def _link_entry(archive: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive.writestr(info, target)


def _mark_encrypted(data: bytes, rng: random.Random) -> bytes:
    """Set the 'encrypted' flag of some entries in both their local and central headers."""
    out = bytearray(data)
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = out.find(signature)
        while at != -1:
            if rng.random() < 0.6:
                out[at + flag_at] |= 0x1
            at = out.find(signature, at + 4)
    return bytes(out)


ZIP_MUTATIONS = ("none", "traversal", "absolute", "link", "encrypted", "nested", "duplicate", "bomb", "names",
                 "flip", "truncate", "directory-like", "comment")


def write_zip(path: Path, files: dict[str, bytes], rng: random.Random) -> str:
    """``files`` zipped at ``path`` with one hostile twist on the archive itself; returns what it was."""
    kind = rng.choice(ZIP_MUTATIONS)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, blob in files.items():
            archive.writestr(name, blob)
        if kind == "traversal":
            archive.writestr(rng.choice(("../../escape.png", "a/../../b.png", "..\\..\\win.png")), good_png(1))
        elif kind == "absolute":
            archive.writestr(rng.choice(("/etc/cron.png", "C:/x.png", "\\\\server\\share.png")), good_png(2))
        elif kind == "link":
            _link_entry(archive, rng.choice(("passwd.png", "train/a/link.png", "dir")),
                        rng.choice(("/etc/passwd", "../../..", "x" * 5000)))
        elif kind == "nested":
            inner = io.BytesIO()
            with zipfile.ZipFile(inner, "w") as nested:
                nested.writestr("inner.png", good_png(3))
            archive.writestr(rng.choice(("inner.zip", "inner.png", "train/a/inner.zip")), inner.getvalue())
        elif kind == "duplicate" and files:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                archive.writestr(rng.choice(sorted(files)), rng.choice((good_png(4), b"not an image")))
        elif kind == "bomb":
            archive.writestr(rng.choice(("bomb.png", "train/a/bomb.jpg")), b"\0" * 40_000_000)
        elif kind == "names":
            for name in ("x" * 300 + ".png", "\udcff\udcfe.png", "nul\x00.png", "a/./b.png", "trailing/ .png"):
                try:
                    archive.writestr(name, good_png(5))
                except (ValueError, UnicodeEncodeError):
                    pass
        elif kind == "directory-like":
            archive.writestr("folder.png/", b"")
            archive.writestr("folder.png/x.png", good_png(6))
        elif kind == "comment":
            archive.comment = bytes(rng.randrange(256) for _ in range(rng.randint(1, 60_000)))
    data = buffer.getvalue()
    if kind == "encrypted":
        data = _mark_encrypted(data, rng)
    elif kind == "flip":
        data = bytearray(data)
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
        data = bytes(data)
    elif kind == "truncate":
        data = data[:rng.randrange(0, len(data))]
    path.write_bytes(data)
    return kind


def _place(folder: Path, files: dict[str, bytes]) -> None:
    for name, blob in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)


def pool_files(rng: random.Random, bombs: dict[tuple[int, int], bytes], count: int) -> tuple[dict[str, bytes], list]:
    """A pool's files: one good image and ``count`` hostile ones under random names (some in sub-folders)."""
    files = {"a_good.png": good_png(rng.randrange(256))}
    whats = []
    for i in range(count):
        what, suffix, blob = mutate_image(rng, bombs)
        folder = rng.choice(("", "", "sub/", "sub/deeper/"))
        files[f"{folder}m{i:02d}{suffix}"] = blob
        whats.append(what)
    return files, whats


def labelled_files(rng: random.Random, bombs: dict[tuple[int, int], bytes]) -> tuple[dict[str, bytes], str]:
    """A labelled set's files (train/ and test/ of two or three classes, a few good images each) with one hostile
    twist: hostile images among them, a damaged classes.txt, a class with no usable image, files out of place."""
    classes = rng.sample(["cat", "dog", "a class with spaces", "ünïcode", "x" * 80], rng.randint(2, 3))
    files = {}
    for split in ("train", "test"):
        for name in classes:
            for i in range(2):
                files[f"{split}/{name}/{i}.png"] = good_png(rng.randrange(256))
    kind = rng.choice(("images", "classes.txt", "empty-class", "out-of-place", "no-test", "other-test-class",
                       "top-folder"))
    if kind == "images":
        for i in range(rng.randint(1, 6)):
            what, suffix, blob = mutate_image(rng, bombs)
            files[f"{rng.choice(('train', 'test'))}/{rng.choice(classes)}/m{i}{suffix}"] = blob
    elif kind == "classes.txt":
        files["classes.txt"] = rng.choice((b"\xff\xfe\x00binary", "\n".join(classes * 2).encode(), b"",
                                           "\n".join(reversed(classes)).encode(), "\n".join(classes[:1]).encode(),
                                           ("cat\n" * 200_000).encode(), "\n".join([*classes, "extra"]).encode()))
    elif kind == "empty-class":
        split, name = rng.choice(("train", "test")), rng.choice(classes)
        for i in range(2):
            files[f"{split}/{name}/{i}.png"] = rng.choice((b"", b"garbage", bombs.get((7_000, 7_000), b"")))
    elif kind == "out-of-place":
        files[rng.choice(("stray.png", "train/stray.png", "test/a/b/c/deep.png", "other/x.png"))] = good_png(7)
    elif kind == "no-test":
        files = {k: v for k, v in files.items() if not k.startswith("test/")}
    elif kind == "other-test-class":
        files["test/not in train/0.png"] = good_png(8)
    else:
        files = {f"T/{k}": v for k, v in files.items()}
    return files, kind


def judge_source(path: Path, read: Callable[[Path], Any], names: set[str] | None = None) -> tuple[str, str]:
    """How a folder or zip is taken: ``read`` (``read_pool`` or ``read_labelled``) returns or refuses it naming
    it; when it returns, its pixels are in [0, 1] and every file of ``names`` is either used or listed as skipped."""

    def use(source: Path) -> None:
        got = read(source)
        pixels = got.pixels if hasattr(got, "pixels") else torch.cat([got.train_pixels, got.test_pixels])
        if not torch.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
            raise ValueError("pixels not finite or outside [0, 1]")
        accounted = set(getattr(got, "names", [])) | {name for name, _ in got.skipped}
        missing = sorted(n for n in (names or set()) if n not in accounted)
        if missing:
            raise ValueError(f"files neither used nor listed: {missing[:3]}")

    return judge(path, use)


def fuzz_sources(folder: Path, cases: int, seed: int, kind: str = "pool") -> Iterator[dict[str, Any]]:
    """``cases`` hostile pools (``kind`` "pool") or labelled sets ("labelled"), each a folder or a zip under
    ``folder``, judged as a scan or an eval reads it."""
    rng, bombs = random.Random(seed), {}
    for case in range(cases):
        if kind == "pool":
            files, whats = pool_files(rng, bombs, rng.randint(1, 6))
            what = ", ".join(whats)

            def read(p: Path) -> Any:
                return read_pool(p, SIZE)
        else:
            files, what = labelled_files(rng, bombs)

            def read(p: Path) -> Any:
                return read_labelled(p, SIZE)
        if rng.random() < 0.5:
            source = folder / f"{kind}-{case:05d}"
            source.mkdir()
            _place(source, files)
            what = f"folder; {what}"
            names = set(files)
        else:
            source = folder / f"{kind}-{case:05d}.zip"
            what = f"zip {write_zip(source, files, rng)}; {what}"
            names = None  # a damaged archive may hide its entries: the listing is what the reader saw
        outcome, detail = judge_source(source, read, names if kind == "pool" else None)
        yield {"case": case, "kind": kind, "mutation": what[:160], "outcome": outcome, "detail": detail,
               "path": str(source)}
