"""OOD pools from an untrusted source (issue 7): every odd file is either read correctly or skipped and
listed with its reason, through the engine API and the CLI; pools that cannot work are a clear error;
nothing in the pool is ever modified."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inspector import limits
from inspector.errors import InputError
from inspector.pools import read_pool
from tests.untrusted import fingerprint, run_cli

SIZE = 32


def png(color: tuple[int, ...] = (200, 30, 30), size: tuple[int, int] = (24, 24), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(color: tuple[int, int, int] = (30, 30, 200), size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def _zip(path: Path, entries: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, blob in entries.items():
            archive.writestr(name, blob)


def _zip_with_symlink(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("good.png", png())
        link = zipfile.ZipInfo("passwd.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")


def _bomb(pixels: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", pixels).save(buffer, format="PNG")  # a few kB on disk, gigabytes once decoded
    return buffer.getvalue()


# --- files that are skipped and listed -------------------------------------------------------------------
# (case id, builder(pool folder) -> the pool path, skipped file, reason fragment)
SKIPPED: list[tuple[str, Callable[[Path], Path], str, str]] = [
    ("not an image", lambda d: (d / "notes.txt").write_text("hello") and d, "notes.txt", "not an image file type"),
    ("corrupt image", lambda d: (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage") and d,
     "broken.png", "corrupt or truncated image"),
    ("text named like an image", lambda d: (d / "fake.jpg").write_text("<html>not a photo</html>") and d,
     "fake.jpg", "not a readable image"),
    ("truncated JPEG", lambda d: (d / "cut.jpg").write_bytes(jpeg()[:300]) and d, "cut.jpg", "truncated"),
    ("decompression bomb over Pillow's limit", lambda d: (d / "bomb.png").write_bytes(_bomb((10_000, 10_000))) and d,
     "bomb.png", "decompression bomb"),
    ("huge image over our pixel limit", lambda d: (d / "huge.png").write_bytes(_bomb((7_000, 7_000))) and d,
     "huge.png", "7000 x 7000 pixels, over the 40,000,000-pixel limit"),
    ("duplicate file", lambda d: (d / "z_copy.png").write_bytes(png()) and d, "z_copy.png", "duplicate of a_good.png"),
    ("symbolic link out of the pool", lambda d: os.symlink("/etc/hostname", d / "link.png") or d,
     "link.png", "symbolic link (not followed)"),
    ("zip entry with a path traversal", lambda d: _zip(d.parent / "p.zip", {"a_good.png": png(),
                                                                              "../../escape.png": png((1, 2, 3))})
     or d.parent / "p.zip", "../../escape.png", "unsafe path in the zip"),
    ("zip entry with an absolute path", lambda d: _zip(d.parent / "p.zip", {"a_good.png": png(),
                                                                              "/etc/cron.png": png((1, 2, 3))})
     or d.parent / "p.zip", "/etc/cron.png", "unsafe path in the zip"),
    ("zip entry that is a symbolic link", lambda d: _zip_with_symlink(d.parent / "p.zip") or d.parent / "p.zip",
     "passwd.png", "symbolic link in the zip"),
]


@pytest.mark.parametrize("case,build,skipped_file,reason", SKIPPED, ids=[c[0] for c in SKIPPED])
def test_odd_files_are_skipped_and_listed(tmp_path, capsys, case, build, skipped_file, reason):
    folder = tmp_path / "pool"
    folder.mkdir()
    (folder / "a_good.png").write_bytes(png())
    source = build(folder)
    before = fingerprint(tmp_path)

    pool = read_pool(source, SIZE)
    assert pool.pixels.shape[0] == 1 and pool.names[0].endswith("good.png")
    assert any(name == skipped_file and reason in why for name, why in pool.skipped), pool.skipped

    code, out, _ = run_cli(capsys, "pool", str(source), "--size", str(SIZE), "--json")
    listed = json.loads(out)
    assert code == 0 and listed["images"] == 1
    assert any(s["file"] == skipped_file and reason in s["reason"] for s in listed["skipped"])
    code, out, _ = run_cli(capsys, "pool", str(source), "--size", str(SIZE))
    assert code == 0 and f"{skipped_file}: " in out and "1 usable images" in out
    assert fingerprint(tmp_path) == before


def test_oversized_files_are_skipped_in_folders_and_zips(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "pool"
    folder.mkdir()
    (folder / "small.png").write_bytes(png())
    (folder / "large.jpg").write_bytes(jpeg(size=(512, 512)))
    _zip(tmp_path / "p.zip", {"small.png": png(), "large.jpg": jpeg(size=(512, 512))})
    monkeypatch.setattr(limits, "MAX_IMAGE_BYTES", 1000)
    for source in (folder, tmp_path / "p.zip"):
        pool = read_pool(source, SIZE)
        assert pool.names == ["small.png"] and pool.skipped[0][0] == "large.jpg"
        assert "file larger than" in pool.skipped[0][1]
        code, out, _ = run_cli(capsys, "pool", str(source), "--json")
        assert code == 0 and "file larger than" in json.loads(out)["skipped"][0]["reason"]


# --- files that are read, and read right -----------------------------------------------------------------
def _pixels_of(blob: bytes, name: str, tmp_path: Path) -> torch.Tensor:
    folder = tmp_path / name
    folder.mkdir()
    (folder / name).write_bytes(blob)
    pool = read_pool(folder, SIZE)
    assert pool.skipped == [] and pool.pixels.shape == (1, 3, SIZE, SIZE)
    return pool.pixels[0]


def _mean_rgb(pixels: torch.Tensor) -> list[float]:
    return [round(v, 2) for v in pixels.mean(dim=(1, 2)).tolist()]


def test_grey_rgba_16_bit_and_palette_images_become_the_right_rgb(tmp_path):
    assert _mean_rgb(_pixels_of(png(128, mode="L"), "grey.png", tmp_path)) == [0.5, 0.5, 0.5]
    transparent = _pixels_of(png((255, 0, 0, 0), mode="RGBA"), "clear.png", tmp_path)
    assert _mean_rgb(transparent) == [1.0, 1.0, 1.0]  # fully transparent shows as white, not as hidden red
    half = _pixels_of(png((0, 0, 255, 255), mode="RGBA"), "opaque.png", tmp_path)
    assert _mean_rgb(half) == [0.0, 0.0, 1.0]
    buffer = io.BytesIO()
    Image.fromarray(np.full((24, 24), 49151, dtype=np.uint16)).save(buffer, format="PNG")  # 16-bit grey, 75 %
    deep = _pixels_of(buffer.getvalue(), "deep.png", tmp_path)
    assert _mean_rgb(deep) == [0.75, 0.75, 0.75]  # scaled, not clipped to white
    palette = Image.new("P", (24, 24), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0, 0, 0] * 254)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    assert _mean_rgb(_pixels_of(buffer.getvalue(), "palette.png", tmp_path)) == [0.04, 0.78, 0.12]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (64, 32), (0, 200, 0))
    image.paste((200, 0, 0), (0, 0, 32, 32))  # stored: red left half, green right half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": red ends up on top
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    pixels = _pixels_of(buffer.getvalue(), "phone.jpg", tmp_path)
    top, bottom = pixels[:, 2].mean(dim=1), pixels[:, -3].mean(dim=1)
    assert top[0] > 0.6 > top[1] and bottom[1] > 0.6 > bottom[0]


def test_nested_folders_and_non_utf8_names_are_read_and_shown_safely(tmp_path, capsys):
    folder = tmp_path / "pool"
    (folder / "deep" / "deeper").mkdir(parents=True)
    (folder / "deep" / "deeper" / "a.png").write_bytes(png((10, 10, 10)))
    (folder / os.fsdecode(b"caf\xe9.png")).write_bytes(png((20, 20, 20)))  # Latin-1 bytes, not UTF-8
    before = fingerprint(tmp_path)
    pool = read_pool(folder, SIZE)
    assert sorted(pool.names) == ["caf\\xe9.png", "deep/deeper/a.png"]
    code, out, _ = run_cli(capsys, "pool", str(folder), "--json")
    assert code == 0 and json.loads(out)["images"] == 2
    zipped = tmp_path / "names.zip"
    _zip(zipped, {"sub/dir/x.png": png((30, 30, 30)), "ünïcode.png": png((40, 40, 40))})
    assert sorted(read_pool(zipped, SIZE).names) == ["sub/dir/x.png", "ünïcode.png"]
    assert {k: v for k, v in fingerprint(tmp_path).items() if k in before} == before


def test_the_limit_reads_the_first_images_in_name_order_and_counts_the_rest(tmp_path):
    folder = tmp_path / "pool"
    folder.mkdir()
    for i in range(12):
        (folder / f"{i:02d}.png").write_bytes(png((i * 20, 0, 0)))
    pool = read_pool(folder, SIZE, limit=5)
    assert pool.names == ["00.png", "01.png", "02.png", "03.png", "04.png"] and pool.unread == 7


# --- pools that cannot work ------------------------------------------------------------------------------
def _only_text(d: Path) -> Path:
    (d / "a.txt").write_text("a")
    (d / "b.csv").write_text("b")
    return d


def _fake_zip(d: Path) -> Path:
    (d.parent / "pool.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    return d.parent / "pool.zip"


ERRORS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("missing pool", lambda d: d.parent / "nowhere", "does not exist"),
    ("empty folder", lambda d: d, "holds no readable images (0 files skipped)"),
    ("only non-images", _only_text, "holds no readable images (2 files skipped: a.txt: not an image file type"),
    ("a file that is not a zip", _fake_zip, "is neither a folder nor a zip file"),
    ("an empty zip", lambda d: _zip(d.parent / "e.zip", {}) or d.parent / "e.zip", "holds no readable images"),
]


@pytest.mark.parametrize("case,build,message", ERRORS, ids=[c[0] for c in ERRORS])
def test_unusable_pool_is_a_clear_error(tmp_path, capsys, case, build, message):
    folder = tmp_path / "pool"
    folder.mkdir()
    source = build(folder)
    before = fingerprint(tmp_path)
    with pytest.raises(InputError, match="image pool") as caught:
        read_pool(source, SIZE)
    assert message in str(caught.value)
    out = tmp_path / "scan"
    code, stdout, stderr = run_cli(capsys, "--device", "cpu", "scan", "clean-coop", "--ood", str(source),
                                   "--out", str(out))
    assert code == 2 and message in stderr and "Traceback" not in stderr and stdout == ""
    assert not out.exists() and fingerprint(tmp_path) == before


def test_too_many_files_is_refused_before_reading(tmp_path, monkeypatch):
    folder = tmp_path / "pool"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i}.png").write_bytes(png((i, 0, 0)))
    _zip(tmp_path / "p.zip", {f"{i}.png": png((i, 0, 0)) for i in range(6)})
    monkeypatch.setattr(limits, "MAX_POOL_FILES", 5)
    for source in (folder, tmp_path / "p.zip"):
        with pytest.raises(InputError, match="more than 5"):
            read_pool(source, SIZE)
