"""Build zoos of clean and backdoored prompt learners: the shipped demo zoo and larger benchmark zoos.

A zoo is a folder of learner files plus ``manifest.json`` (what each model is and what it
measured). Building is resumable: a model whose file already exists is read back, not retrained,
so an interrupted build picks up where it stopped.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inspector.backbone import Backbone
from inspector.data import ImagePool, Task
from inspector.evaluate import accuracy
from inspector.lab.implant import IMPLANT_ATTEMPTS, ImplantConfig, ImplantStep, ImplantTried, provider_tries
from inspector.lab.triggers import ATTACKS
from inspector.lab.truth import TryMeasurement, backdoor_rates, read_ground_truth, save_implanted
from inspector.prompts import PromptedCLIP, TuneConfig, build_learner, load_learner, read_header, save_learner, tune
from inspector.runs import atomic_file

MANIFEST = "manifest.json"


@dataclass
class ZooItem:
    """One model to build: clean when ``attack`` is None, else implanted into the clean model ``base``
    (a name in the same zoo) or, without one, into a fresh clean tune of ``seed``."""

    name: str
    kind: str
    seed: int
    attack: str | None = None
    target: int | None = None
    base: str | None = None
    epochs: int | None = None  # overrides the clean and implant recipes' epochs (quick smoke builds)
    implant: dict[str, Any] = field(default_factory=dict)  # ImplantConfig overrides
    recipe: dict[str, Any] = field(default_factory=dict)  # clean tune: TuneConfig overrides, n_ctx, ctx_init

    @property
    def filename(self) -> str:
        return self.name.replace("-", "_") + ".safetensors"


def plan_benchmark_zoo(n_clean: int, per_attack: int, seed: int, n_classes: int,
                       attacks: tuple[str, ...] = ATTACKS, backdoor_kind: str = "cocoop",
                       epochs: int | None = None) -> list[ZooItem]:
    """Clean models alternate CoOp / CoCoOp over seeds; backdoored ones get seeded random targets.

    ``backdoor_kind`` "both" alternates CoOp and CoCoOp within each attack. A backdoored model is
    implanted into one of the zoo's clean models of its kind (in turn), or, when there is none,
    into a fresh clean tune.
    """
    rng = random.Random(seed)
    items = [ZooItem(f"clean-{kind}-s{seed + i}", kind, seed + i, epochs=epochs)
             for i in range(n_clean) for kind in [("coop", "cocoop")[i % 2]]]
    kinds = ("coop", "cocoop") if backdoor_kind == "both" else (backdoor_kind,)
    bases = {kind: [item.name for item in items if item.kind == kind] for kind in kinds}
    count = 0
    for attack in attacks:
        for i in range(per_attack):
            kind = kinds[i % len(kinds)]
            model_seed = seed + 100 + count
            target = rng.randrange(n_classes)
            base = bases[kind][count % len(bases[kind])] if bases[kind] else None
            items.append(ZooItem(f"{attack}-{kind}-s{model_seed}-t{target}", kind, model_seed,
                                 attack, target, base, epochs))
            count += 1
    return items


def build_order(items: list[ZooItem]) -> list[tuple[int, ZooItem]]:
    """(plan position, item) in build order: clean models, then CoOp implants, then the slow CoCoOp ones
    (a CoCoOp step runs the text tower once per image), so an interrupted build has the most models."""
    cost = {None: 0}
    return sorted(enumerate(items), key=lambda pair: (cost.get(pair[1].attack, 1 + (pair[1].kind == "cocoop")),
                                                      pair[0]))


def fallback_base(item: ZooItem, items: list[ZooItem]) -> str | None:
    """The clean model a provider implants into when ``item``'s own base would not take a working backdoor: the
    plan's first clean learner of the same kind tuned with the default recipe (implant_recipes_dev.md: in learners
    SGD left with a context 3-10x larger, no poison weight met both bars)."""
    if item.attack is None or item.base is None:
        return None
    return next((other.name for other in items if other.attack is None and other.kind == item.kind
                 and not other.recipe and other.name != item.base), None)


def build_item(item: ZooItem, out_dir: Path, backbone: Backbone, task: Task, pool: ImagePool,
               on_step: Callable[[str, int, int], None] | None = None,
               fallback: str | None = None) -> dict[str, Any]:
    """Train (or read back) one model; returns its manifest row with measured accuracy / ASR.

    An implant that misses ``WORKING_BACKDOOR`` is tried again as a provider would (``next_attempt``, at most
    ``IMPLANT_ATTEMPTS`` tries per clean model), then in ``fallback`` (another clean model of the zoo) when given;
    the header keeps every try's base, recipe and measurements, and the row names the base delivered."""
    path = Path(out_dir) / item.filename
    if path.exists():
        implanted = read_header(path, key="ground_truth").get("recipe", {})
        row = _row(item, path, implanted.get("measured") or read_header(path).get("measured"), backbone, task, pool)
        return {**row, "base": implanted["base"]} if item.base and "base" in implanted else row
    model, training = _base_model(item, item.base, out_dir, backbone, task)
    if item.attack is None:
        measured = {"accuracy": round(accuracy(model, task), 4)}
        save_learner(model, path, extra={"measured": measured, "training": training})
        return _row(item, path, measured, backbone, task, pool)
    attempts: list[dict[str, Any]] = []
    measure = TryMeasurement(task, pool.pixels)
    for base in [item.base] + ([fallback] if fallback else []):
        if base != item.base:
            model, _ = _base_model(item, base, out_dir, backbone, task)
        measure.start(model)
        settings = {"epochs": item.epochs, **item.implant}
        config = ImplantConfig.for_attack(item.attack, item.target, item.kind, seed=item.seed, **settings)
        tries = provider_tries(model, task.train_pixels, task.train_labels, config, measure,
                               IMPLANT_ATTEMPTS, record={k: v for k, v in settings.items() if v is not None})
        for event in tries:
            if isinstance(event, ImplantStep) and on_step is not None:
                on_step(item.name, event.step, event.total_steps)
            elif isinstance(event, ImplantTried):
                tried = event
        finished, implant_config, measured = tried.finished, tried.config, tried.tries[-1]
        measured = {k: measured[k] for k in ("accuracy", "clean_base_accuracy", "asr", "ood_asr")}
        attempts += [{"base": base or f"clean {item.kind} tune, seed {item.seed}", **t} for t in tried.tries]
        if tried.working:
            break
    measured = {**measured, "attempts": len(attempts)}
    save_implanted(model, path, finished.trigger, item.target,
                   recipe={**implant_config.recipe(backbone.image_size), "base": attempts[-1]["base"],
                           "measured": measured, "attempts": attempts})
    return {**_row(item, path, measured, backbone, task, pool), "base": base}


def _base_model(item: ZooItem, base: str | None, out_dir: Path, backbone: Backbone,
                task: Task) -> tuple[PromptedCLIP, dict[str, Any] | None]:
    """The clean model ``base`` of the zoo when it is built, else a fresh clean tune with ``item``'s recipe; with
    the tune's recipe (None when read back)."""
    base_path = Path(out_dir) / (base.replace("-", "_") + ".safetensors") if base else None
    if base_path is not None and base_path.exists():
        return load_learner(base_path, backbone), None
    spec = {key: item.recipe[key] for key in ("n_ctx", "ctx_init") if key in item.recipe}
    model = build_learner(item.kind, backbone, task.class_names, seed=item.seed, **spec)
    overrides = {key: value for key, value in item.recipe.items() if key not in spec}
    recipe = TuneConfig.for_kind(item.kind, **{"seed": item.seed, "epochs": item.epochs, **overrides})
    tune(model, task.train_pixels, task.train_labels, recipe)
    return model, {"seed": item.seed, **asdict(recipe), **spec}


def _row(item: ZooItem, path: Path, measured: dict | None, backbone: Backbone, task: Task,
         pool: ImagePool) -> dict[str, Any]:
    if measured is None:  # a file from elsewhere: measure it now
        model = load_learner(path, backbone)
        measured = {"accuracy": round(accuracy(model, task), 4)}
        truth = read_ground_truth(path)
        if truth is not None:
            measured.update(backdoor_rates(model, truth.trigger, truth.target, task.test_pixels, task.test_labels,
                                           pool.pixels))
    target_name = task.class_names[item.target] if item.target is not None else None
    return {**asdict(item), "target_name": target_name, "file": path.name, **measured}


def read_plan(path: Path) -> list[ZooItem]:
    """A zoo plan written by ``write_plan``: one JSON object per model, in plan order."""
    from inspector.errors import InputError

    try:
        rows = json.loads(Path(path).read_text())["models"]
        return [ZooItem(**row) for row in rows]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path}: not a zoo plan ({error})",
                         hint="write one with benchmarks/zoo_plans.py or zoo_builder.write_plan") from error


def write_plan(path: Path, items: list[ZooItem], about: str) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"about": about, "models": [asdict(item) for item in items]}, indent=1) + "\n")
    return Path(path)


def write_manifest(out_dir: Path, rows: list[dict[str, Any]], settings: dict[str, Any]) -> Path:
    path = Path(out_dir) / MANIFEST
    with atomic_file(path) as staging:
        staging.write_text(json.dumps({"settings": settings, "models": rows}, indent=2))
    return path
