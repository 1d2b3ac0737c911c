"""Labelled image sets (a task) from a folder or a zip: ``T/train/<class>/…``, ``T/test/<class>/…``.

Everything labelled (tuning, implants, repair, accuracy, the clean reference) needs the task a model
was tuned on. The shipped pocket task is the default; a user's own task is a folder or zip read
with the OOD pools' untrusted-input rules (``inspector.pools``): nothing extracted or followed,
every file not used listed with its reason. A folder's name is its class name (spaces allowed);
``T/classes.txt``, when present, gives the class order (one name a line), else the names sorted.
A zip may hold ``train/`` at its root or inside one top folder (as a file manager zips ``T/``).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch

from inspector import limits
from inspector.data import Task, load_task
from inspector.errors import InputError, cut
from inspector.pools import Decoded, Entry, Listing, Skip, decode_entries, fingerprint_of, listed

TRAIN, TEST = "train", "test"
CLASSES_FILE = "classes.txt"
LAYOUT_HINT = "lay it out as T/train/<class name>/<images> (and T/test/<class name>/<images>)"


def load_labelled(source: str | Path | None, size: int, shots: int | None = None, seed: int = 0,
                  need_test: bool = True, label: str | None = None) -> Task:
    """The task at ``size`` px: the shipped pocket task (``source`` None) or a folder / zip of the user's.

    ``shots``: training images per class (a seeded sample; every class must have that many).
    ``need_test``: the command measures accuracy, so ``T/test/`` must be there.
    """
    if shots is not None and shots < 1:
        raise InputError(f"--shots {shots} is not a positive number", hint="e.g. --shots 16")
    if source is None:
        return _shipped(size, shots, seed)
    return read_labelled(Path(source), size, shots, seed, need_test, label)


def _shipped(size: int, shots: int | None, seed: int) -> Task:
    task = load_task(size)
    if shots is None:
        return task
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for k, name in enumerate(task.class_names):
        members = (task.train_labels == k).nonzero().flatten()
        if len(members) < shots:
            raise InputError(f"class {name!r} of the shipped task has {len(members)} training images, fewer than "
                             f"the {shots} shots asked for", hint=f"use --shots {len(members)} or fewer")
        keep.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    chosen = torch.cat(keep).sort().values
    return replace(task, train_pixels=task.train_pixels[chosen], train_labels=task.train_labels[chosen])


def read_class_names(source: Path | str, label: str | None = None) -> list[str]:
    """The class names of a labelled folder or zip, in its order, without reading any image."""
    name = label or str(source)
    with listed(Path(source), "labelled set") as listing:
        groups, order_text = _group(listing, _root(listing, name), [], name)
        return _class_order(groups[TRAIN], order_text, name)


def read_labelled(source: Path, size: int, shots: int | None = None, seed: int = 0, need_test: bool = True,
                  label: str | None = None) -> Task:
    """A labelled folder or zip as a ``Task`` at ``size`` px; every refusal names the file and what to do."""
    name = label or str(source)
    with listed(source, "labelled set") as listing:
        root = _root(listing, name)
        skipped = list(listing.skipped)
        groups, order_text = _group(listing, root, skipped, name)
        class_names = _class_order(groups[TRAIN], order_text, name)
        has_test = (*root, TEST) in listing.folders
        if has_test and set(groups[TEST]) != set(class_names):
            raise InputError(f"labelled set {name}: train and test have different classes ("
                             + _difference(set(class_names), set(groups[TEST]), "only in train", "only in test") + ")",
                             hint="give train/ and test/ one folder for each class, with the same names")
        if need_test and not has_test:
            raise InputError(f"labelled set {name} has no test/ folder",
                             hint="this command measures accuracy on T/test/<class>/ images; add them")
        wanted = sum(min(len(v), shots or len(v)) for v in groups[TRAIN].values())
        wanted += sum(len(v) for v in groups[TEST].values()) if has_test else 0
        if wanted > limits.MAX_TASK_IMAGES:
            raise InputError(f"labelled set {name} has {wanted:,} images, more than {limits.MAX_TASK_IMAGES:,}",
                             hint="prompt tuning is few-shot: pass --shots 16, and keep a few thousand test images")
        decoded = Decoded()
        train_labels = _decode_split(groups[TRAIN], class_names, TRAIN, size, skipped, decoded, shots, seed, name)
        n_train = len(decoded.pixels)
        test_labels = (_decode_split(groups[TEST], class_names, TEST, size, skipped, decoded, None, seed, name)
                       if has_test else [])
    pixels = torch.stack(decoded.pixels) if decoded.pixels else torch.empty(0, 3, size, size)
    labels = train_labels + test_labels
    fingerprint = fingerprint_of(decoded.digests, *class_names, ",".join(map(str, labels)))
    return Task(class_names=class_names, train_pixels=pixels[:n_train], train_labels=torch.tensor(train_labels),
                test_pixels=pixels[n_train:], test_labels=torch.tensor(test_labels, dtype=torch.long),
                source=name, fingerprint=fingerprint, skipped=skipped)


def _root(listing: Listing, name: str) -> tuple[str, ...]:
    """Where ``train/`` is: at the top, or inside exactly one top folder."""
    if (TRAIN,) in listing.folders:
        return ()
    inside = sorted(f[:1] for f in listing.folders if len(f) == 2 and f[1] == TRAIN)
    if len(inside) == 1:
        return inside[0]
    raise InputError(f"labelled set {name} has no train/ folder" + (" (several top folders have one)" if inside
                                                                   else ""), hint=LAYOUT_HINT)


def _group(listing: Listing, root: tuple[str, ...], skipped: list[tuple[str, str]],
           name: str) -> tuple[dict[str, dict[str, list[Entry]]], str | None]:
    """Image entries per split and class folder (empty class folders included), and classes.txt's text."""
    groups: dict[str, dict[str, list[Entry]]] = {TRAIN: {}, TEST: {}}
    for folder in sorted(listing.folders):
        relative = folder[len(root):]
        if folder[:len(root)] == root and len(relative) == 2 and relative[0] in groups:
            groups[relative[0]].setdefault(relative[1], [])
    order_text = None
    for entry in listing.entries:
        parts = entry.parts
        relative = parts[len(root):] if parts[:len(root)] == root else ()
        if relative == (CLASSES_FILE,):
            order_text = _read_text(entry, name)
        elif len(relative) < 3 or relative[0] not in groups:
            skipped.append((entry.name, "not inside train/<class>/ or test/<class>/"))
        elif not entry.is_image:
            skipped.append((entry.name, "not an image file type"))
        else:
            groups[relative[0]][relative[1]].append(entry)
    return groups, order_text


def _read_text(entry: Entry, name: str) -> str:
    if entry.size > limits.MAX_CLASSES_FILE_BYTES:
        raise InputError(f"labelled set {name}: {entry.name} is {entry.size:,} bytes, too large for a list of "
                         "class names", hint="classes.txt holds one class name a line")
    try:
        return entry.read()[:limits.MAX_CLASSES_FILE_BYTES].decode("utf-8")
    except (UnicodeDecodeError, OSError, Skip) as exc:
        raise InputError(f"labelled set {name}: {entry.name} cannot be read as UTF-8 text ({type(exc).__name__})",
                         hint="classes.txt holds one class name a line, in UTF-8") from exc


def _class_order(train: dict[str, list[Entry]], order_text: str | None, name: str) -> list[str]:
    folders = set(train)
    if order_text is None:
        names = sorted(folders)
    else:
        names = [line.strip() for line in order_text.splitlines() if line.strip()]
        repeated = sorted(n for n, count in Counter(names).items() if count > 1)
        if repeated:
            raise InputError(f"labelled set {name}: {CLASSES_FILE} names {_short(repeated[0])} twice",
                             hint="list each class once")
        if set(names) != folders:
            raise InputError(f"labelled set {name}: {CLASSES_FILE} and the train/ folders differ ("
                             + _difference(set(names), folders, "listed but no train/ folder",
                                           "a train/ folder not listed") + ")",
                             hint=f"list exactly the train/ folder names in {CLASSES_FILE}, one a line")
    if len(names) < 2:
        raise InputError(f"labelled set {name} has {len(names)} class folder(s) in train/; a classifier needs 2 "
                         "or more", hint=LAYOUT_HINT)
    return names


def _decode_split(groups: dict[str, list[Entry]], class_names: list[str], split: str, size: int,
                  skipped: list[tuple[str, str]], decoded: Decoded, shots: int | None, seed: int,
                  name: str) -> list[int]:
    labels: list[int] = []
    for k, class_name in enumerate(class_names):
        entries = sorted(groups[class_name], key=lambda e: e.name)
        if shots is not None:  # a seeded sample, read until enough are usable
            random.Random(f"{seed}:{class_name}").shuffle(entries)
        before, failed = len(decoded.pixels), len(skipped)
        decode_entries(entries, size, skipped, decoded, limit=shots)
        got = len(decoded.pixels) - before
        why = "; ".join(f"{cut(file, 80)}: {cut(reason, 80)}"
                        for file, reason in skipped[failed:failed + 2])
        if got == 0:
            raise InputError(f"labelled set {name}: class folder {split}/{_short(class_name, quoted=False)}/ holds no "
                             "usable images"
                             + (f" ({why})" if why else ""), hint=f"add images to {split}/{class_name}/")
        if shots is not None and got < shots:
            raise InputError(f"labelled set {name}: class {_short(class_name)} has {got} usable training images, "
                             f"fewer than the {shots} shots asked for", hint=f"add images or pass --shots {got}")
        labels += [k] * got
    return labels


def for_model(task: Task, class_names: list[str] | tuple[str, ...], model_label: str) -> Task:
    """The task with its labels in the model's class order; a task of other classes is refused, naming them."""
    if list(class_names) == task.class_names:
        return task
    theirs, ours = set(class_names), set(task.class_names)
    if theirs != ours:
        where = "the shipped pocket task" if task.source == "shipped" else f"task {task.source}"
        raise InputError(f"{where} does not have {model_label}'s classes ("
                         + _difference(ours, theirs, "only in the task", "only in the model") + ")",
                         hint="pass --task with the labelled folder the model was tuned on "
                              "(folder names are the class names)")
    order = torch.tensor([list(class_names).index(n) for n in task.class_names])
    return replace(task, class_names=list(class_names), train_labels=order[task.train_labels],
                   test_labels=order[task.test_labels] if task.has_test else task.test_labels)


def _difference(first: set[str], second: set[str], first_label: str, second_label: str) -> str:
    parts = []
    for label, names in ((first_label, sorted(first - second)), (second_label, sorted(second - first))):
        if names:
            shown = ", ".join(_short(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def _short(text: str, limit: int = 60, quoted: bool = True) -> str:
    """A name for a message, cut when long (names come from untrusted files)."""
    return repr(cut(text, limit)) if quoted else cut(text, limit)
