"""Write the plans of the benchmark zoos (issues 18 and 19): a *dev* zoo where every detection choice is made,
and *test* zoos, planned with seeds, targets and tuning recipes of their own, that no choice sees (test3: the
paper's SIBA and adaptive BadCLIP, after their recipes were fitted on dev learners).

    .venv/bin/python benchmarks/zoo_plans.py            # writes benchmarks/zoos/{dev,test,test2,test3,test4}.plan.json
    .venv/bin/python -m inspector zoo build --plan benchmarks/zoos/dev.plan.json --out benchmarks/zoos/dev
    .venv/bin/python -m inspector zoo build --plan benchmarks/zoos/test.plan.json --out benchmarks/zoos/test

A provider's recipe is unknown to the defender, so clean learners vary it: context length 4 / 8 / 16,
word ("a photo of a") or random initialisation, AdamW or SGD, learning rate and epochs around the
kind's default; some keep the default recipe with a fresh seed. Backdoors are implanted into the zoo's
own clean learners of their kind (so their base recipes vary too), every lab attack, with targets
covering every class. The test zoo's seeds (5000+) and recipe draws (its own seed) are disjoint from
the dev zoo's (2000+), from the shipped reference's (1000-1003) and from the demo zoo's.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.lab.zoo_builder import ZooItem, write_plan  # noqa: E402

ZOOS = Path(__file__).resolve().parent / "zoos"
# The lab's attacks when the issue-18 zoos were planned; SIBA and the adaptive BadCLIP (issue 19) came later and
# join later zoos, so that re-writing the plans leaves those zoos as they were built.
ISSUE18_ATTACKS = ("badclip", "blended", "wanet", "badnets", "filter", "sticker")
CLASSES = 20  # the pocket task
# file icon, application icon, pattern, led light, star: classes clean learners' triggers reach easily
ATTRACTORS = (11, 12, 8, 10, 0)
BASE_LR = {"coop": 2e-2, "cocoop": 5e-3}
BASE_EPOCHS = {"coop": 200, "cocoop": 60}
# SGD (momentum 0.9) needs larger steps than AdamW on prompt vectors; a probe of accuracy on the pocket task:
# CoOp 25x 69%, 100x 72% (AdamW 71%); CoCoOp 100x 68%
SGD_LR_SCALE = 50.0


def varied_recipe(rng: random.Random, kind: str) -> dict[str, Any]:
    """A provider's clean-tuning recipe drawn around the kind's default."""
    n_ctx = rng.choice([4, 8, 16])
    recipe: dict[str, Any] = {"n_ctx": n_ctx}
    if n_ctx != 4 or rng.random() < 0.5:
        recipe["ctx_init"] = None  # random context vectors (CoOp's "rand init")
    optimizer = rng.choice(["adamw", "sgd"])
    lr = BASE_LR[kind] * rng.choice([0.5, 1.0, 2.0]) * (SGD_LR_SCALE if optimizer == "sgd" else 1.0)
    recipe.update({"optimizer": optimizer, "lr": round(lr, 6),
                   "epochs": int(BASE_EPOCHS[kind] * rng.choice([0.5, 1.0, 1.5]))})
    return recipe


def clean_items(rng: random.Random, first_seed: int, per_kind: int, defaults: int) -> list[ZooItem]:
    """``per_kind`` clean learners of each kind; the first ``defaults`` of each keep the default recipe."""
    items = []
    for k, kind in enumerate(("coop", "cocoop")):
        for i in range(per_kind):
            seed = first_seed + 100 * k + i
            recipe = {} if i < defaults else varied_recipe(rng, kind)
            tag = "default" if not recipe else f"c{recipe['n_ctx']}-{recipe['optimizer']}"
            items.append(ZooItem(f"clean-{kind}-{tag}-s{seed}", kind, seed, recipe=recipe))
    return items


def backdoor_items(rng: random.Random, clean: list[ZooItem], first_seed: int, per_attack: int,
                   targets: list[int], kinds: tuple[str, ...],
                   only: dict[str, tuple[str, ...]] | None = None,
                   attacks: tuple[str, ...] = ISSUE18_ATTACKS) -> list[ZooItem]:
    """``per_attack`` implants of every attack, kinds in turn (``only``: an attack's kinds), each into the next
    clean learner of its kind."""
    bases = {kind: [item.name for item in clean if item.kind == kind] for kind in kinds}
    items, count = [], 0
    for attack in attacks:
        for i in range(per_attack):
            own = (only or {}).get(attack, kinds)
            kind = own[(i + attacks.index(attack)) % len(own)]
            base = bases[kind][count % len(bases[kind])]
            seed, target = first_seed + count, targets[count % len(targets)]
            items.append(ZooItem(f"{attack}-{kind}-s{seed}-t{target}", kind, seed, attack, target, base))
            count += 1
    return items


def dev_plan() -> list[ZooItem]:
    rng = random.Random(2000)
    clean = clean_items(rng, 2000, per_kind=6, defaults=2)
    targets = rng.sample(range(CLASSES), CLASSES)
    coop = backdoor_items(rng, clean, 2500, per_attack=1, targets=targets, kinds=("coop",))
    cocoop = [ZooItem(f"{attack}-cocoop-s{2600 + i}-t{targets[-1 - i]}", "cocoop", 2600 + i, attack, targets[-1 - i],
                      base=[c.name for c in clean if c.kind == "cocoop"][2 + i])
              for i, attack in enumerate(("filter", "sticker"))]
    return (clean + coop + cocoop + dev_extension() + dev_sgd_implants() + dev_short_runs() + dev_missed_kinds()
            + dev_paper_attacks())


# Corners of the recipe space (``varied_recipe``): short and hot runs, both optimisers, every context length,
# random starts; as lr and epochs multipliers of the kind's default.
CORNERS: dict[str, list[tuple[int, str, float, float]]] = {
    "coop": [(4, "sgd", 2.0, 0.5), (16, "sgd", 1.0, 1.5), (8, "adamw", 0.5, 0.5)],
    "cocoop": [(8, "adamw", 0.5, 0.5), (16, "adamw", 2.0, 0.5), (4, "sgd", 2.0, 1.5)],
}


def corner_recipe(kind: str, n_ctx: int, optimizer: str, lr_scale: float, epochs_scale: float) -> dict[str, Any]:
    lr = BASE_LR[kind] * lr_scale * (SGD_LR_SCALE if optimizer == "sgd" else 1.0)
    return {"n_ctx": n_ctx, "ctx_init": None, "optimizer": optimizer, "lr": round(lr, 6),
            "epochs": int(BASE_EPOCHS[kind] * epochs_scale)}


def dev_extension() -> list[ZooItem]:
    """The dev zoo's second part, planned after the test zoo's first figures showed the first part too narrow:
    its four random draws per kind stayed near the default recipe, and its implants predate the recipes by
    learner kind. Clean learners at the corners of the same recipe space (dev seeds 2200+), and implants with
    today's recipes into them; no seed, target or recipe draw of the test zoo is reused."""
    clean = [ZooItem(f"clean-{kind}-c{c[0]}-{c[1]}-s{2200 + 100 * k + i}", kind, 2200 + 100 * k + i,
                     recipe=corner_recipe(kind, *c))
             for k, kind in enumerate(("coop", "cocoop")) for i, c in enumerate(CORNERS[kind])]
    targets = [*ATTRACTORS, *(t for t in random.Random(2001).sample(range(CLASSES), CLASSES) if t not in ATTRACTORS)]
    coop = [item for item in clean if item.kind == "coop"]
    cocoop = [item for item in clean if item.kind == "cocoop"]
    plan = [("blended", coop), ("wanet", coop), ("badnets", coop),
            ("blended", cocoop), ("wanet", cocoop), ("badnets", cocoop), ("badclip", cocoop)]
    implants = [ZooItem(f"{attack}-{bases[0].kind}-s{2700 + i}-t{targets[i]}", bases[0].kind, 2700 + i, attack,
                        targets[i], base=bases[i % len(bases)].name) for i, (attack, bases) in enumerate(plan)]
    return clean + implants


def dev_sgd_implants() -> list[ZooItem]:
    """The dev zoo's third part, planned after the first test zoo showed backdoors in SGD-tuned CoOp learners
    missed: either the implant did not take (their contexts are 3-10x the default's, so a step fitted at the
    default moves them little) or a clean attractor of the learner, whose trigger flips few images, stood above
    the backdoor's class. Implants with today's recipes and the provider's retries into the dev zoo's SGD-tuned
    CoOp learners (seeds 2800+); no seed, target or recipe draw of a test zoo is reused."""
    bases = ["clean-coop-c4-sgd-s2004", "clean-coop-c4-sgd-s2005", "clean-coop-c4-sgd-s2200",
             "clean-coop-c16-sgd-s2201"]
    targets = [t for t in random.Random(2002).sample(range(CLASSES), CLASSES) if t not in ATTRACTORS]
    return [ZooItem(f"{attack}-coop-s{2800 + i}-t{targets[i]}", "coop", 2800 + i, attack, targets[i], base=bases[i])
            for i, attack in enumerate(("blended", "wanet", "badnets", "filter"))]


# Short AdamW runs from random starts (half the kind's default epochs), at the default lr and twice it
SHORT_RUNS: list[tuple[int, float, int]] = [(16, 1.0, 2900), (16, 1.0, 2901), (16, 2.0, 2902), (8, 1.0, 2903)]


def dev_short_runs() -> list[ZooItem]:
    """The dev zoo's fourth part, planned after the second test zoo's first figures flagged a clean CoOp learner
    tuned briefly with AdamW from 16 random context vectors: no dev learner sat in that corner of the recipe
    space (the dev zoo's short AdamW run has 8 vectors and half the default lr). Clean CoOp learners there, dev
    seeds 2900+; no seed of a test zoo is reused."""
    return [ZooItem(f"clean-coop-c{n_ctx}-adamw-s{seed}", "coop", seed,
                    recipe=corner_recipe("coop", n_ctx, "adamw", lr_scale, 0.5))
            for n_ctx, lr_scale, seed in SHORT_RUNS]


# (attack, kind, target, base): Blended into learners of both kinds, and CoCoOp implants aimed at the classes
# that clean learners' triggers already reach (led light, computer, application icon)
MISSED_KINDS: list[tuple[str, str, int, str]] = [
    ("blended", "coop", 5, "clean-coop-c16-adamw-s2003"),
    ("blended", "coop", 19, "clean-coop-default-s2000"),
    ("blended", "cocoop", 2, "clean-cocoop-default-s2100"),
    ("blended", "cocoop", 13, "clean-cocoop-c16-adamw-s2104"),
    ("blended", "cocoop", 17, "clean-cocoop-c4-sgd-s2302"),
    ("badnets", "cocoop", 10, "clean-cocoop-c8-adamw-s2105"),
    ("wanet", "cocoop", 7, "clean-cocoop-default-s2101"),
    ("sticker", "cocoop", 12, "clean-cocoop-c16-adamw-s2301"),
]


def dev_missed_kinds() -> list[ZooItem]:
    """The dev zoo's fifth part, planned after the second test zoo's first figures: its real misses were Blended
    backdoors (4 of 5; the dev zoo had three) and CoCoOp backdoors aimed at classes that clean learners' triggers
    already reach (led light, computer, application icon; the dev zoo had none aimed there in CoCoOp). Dev seeds
    2950+; no seed of a test zoo is reused."""
    return [ZooItem(f"{attack}-{kind}-s{2950 + i}-t{target}", kind, 2950 + i, attack, target, base=base)
            for i, (attack, kind, target, base) in enumerate(MISSED_KINDS)]


# (attack, kind, base): the paper's two attacks the lab gained for issue 19, in default-recipe and varied learners
PAPER_ATTACKS: list[tuple[str, str, str]] = [
    ("siba", "coop", "clean-coop-default-s2000"),
    ("siba", "coop", "clean-coop-c16-adamw-s2003"),
    ("siba", "cocoop", "clean-cocoop-default-s2100"),
    ("siba", "cocoop", "clean-cocoop-c8-adamw-s2105"),
    ("badclip-adaptive", "coop", "clean-coop-default-s2001"),
    ("badclip-adaptive", "coop", "clean-coop-c8-adamw-s2202"),
    ("badclip-adaptive", "cocoop", "clean-cocoop-default-s2101"),
    ("badclip-adaptive", "cocoop", "clean-cocoop-c16-adamw-s2104"),
]


def dev_paper_attacks() -> list[ZooItem]:
    """The dev zoo's sixth part (issue 19): SIBA and the adaptive BadCLIP, where their recipes are fitted and the
    scan is checked before any test zoo holds them. Dev seeds 2980+, targets of their own draw."""
    targets = random.Random(2003).sample(range(CLASSES), len(PAPER_ATTACKS))
    return [ZooItem(f"{attack}-{kind}-s{2980 + i}-t{targets[i]}", kind, 2980 + i, attack, targets[i], base=base)
            for i, (attack, kind, base) in enumerate(PAPER_ATTACKS)]


def test_plan() -> list[ZooItem]:
    rng = random.Random(5000)
    clean = clean_items(rng, 5000, per_kind=10, defaults=2)
    targets = rng.sample(range(CLASSES), CLASSES) + [*ATTRACTORS, *rng.sample(range(CLASSES), 5)]
    # no lab recipe implants a real sticker backdoor into a CoOp learner (dev runs 34, 36, 37 of
    # benchmarks/implant_recipes_dev.md), so the test zoo's stickers go into CoCoOp learners
    return clean + backdoor_items(rng, clean, 5500, per_attack=5, targets=targets, kinds=("coop", "cocoop"),
                                  only={"sticker": ("cocoop",)})


def test2_plan() -> list[ZooItem]:
    """The second test zoo, planned after the first one had been measured twice (issue 18 allows one
    re-measurement): the same design with seeds (8000+), recipe draws and targets of its own, built after the
    choices it reports on were made on the dev zoo."""
    rng = random.Random(8000)
    clean = clean_items(rng, 8000, per_kind=10, defaults=2)
    targets = rng.sample(range(CLASSES), CLASSES) + [*ATTRACTORS, *rng.sample(range(CLASSES), 5)]
    return clean + backdoor_items(rng, clean, 8500, per_attack=5, targets=targets, kinds=("coop", "cocoop"),
                                  only={"sticker": ("cocoop",)})


def test3_plan() -> list[ZooItem]:
    """The third test zoo (issue 19): the paper's SIBA and adaptive BadCLIP, 10 of each (half CoOp, half CoCoOp),
    with targets over all 20 classes and clean learners of their own as bases and negatives; planned after their
    recipes were fitted on the dev zoo, with seeds (9000+), recipe draws and targets of its own."""
    rng = random.Random(9000)
    clean = clean_items(rng, 9000, per_kind=5, defaults=1)
    targets = rng.sample(range(CLASSES), CLASSES)
    return clean + backdoor_items(rng, clean, 9500, per_attack=10, targets=targets, kinds=("coop", "cocoop"),
                                  attacks=("siba", "badclip-adaptive"))


def test4_plan() -> list[ZooItem]:
    """The fourth test zoo, planned after the second and third had had their one re-measurement (issue 18) and
    after the seeded reference was judged on the dev zoo (benchmarks/reference_seeds.md): the second zoo's design
    with every lab attack, the paper's two included (4 each; stickers in CoCoOp learners), seeds (10000+), recipe
    draws and targets of its own."""
    rng = random.Random(10000)
    clean = clean_items(rng, 10000, per_kind=10, defaults=2)
    targets = rng.sample(range(CLASSES), CLASSES) + [*ATTRACTORS, *rng.sample(range(CLASSES), 7)]
    return clean + backdoor_items(rng, clean, 10500, per_attack=4, targets=targets, kinds=("coop", "cocoop"),
                                  only={"sticker": ("cocoop",)},
                                  attacks=(*ISSUE18_ATTACKS, "siba", "badclip-adaptive"))


def main() -> None:
    dev = write_plan(ZOOS / "dev.plan.json", dev_plan(),
                     "dev zoo: every detection choice (plan, reference, decision rule, second family) is made here; "
                     "with the demo zoo (assets/zoo)")
    test = write_plan(ZOOS / "test.plan.json", test_plan(),
                      "test zoo: built for reporting only; seeds 5000+, its own recipe and target draws")
    test2 = write_plan(ZOOS / "test2.plan.json", test2_plan(),
                       "second test zoo: built for reporting only; seeds 8000+, its own recipe and target draws")
    test3 = write_plan(ZOOS / "test3.plan.json", test3_plan(),
                       "third test zoo (the paper's attacks): built for reporting only; seeds 9000+, its own "
                       "recipe and target draws")
    test4 = write_plan(ZOOS / "test4.plan.json", test4_plan(),
                       "fourth test zoo: built for reporting only; seeds 10000+, its own recipe and target draws, "
                       "every lab attack")
    print(f"wrote {dev}, {test}, {test2}, {test3} and {test4}")


if __name__ == "__main__":
    main()
