"""Command line: ``python -m inspector {zoo,eval,tune,import,demo} ...``.

Bad input ends with one clear line on stderr and exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from inspector.errors import InputError


def _print_json(payload: object) -> None:
    print(json.dumps(payload, indent=2))


def cmd_zoo_list(args: argparse.Namespace) -> None:
    from inspector.zoo import list_zoo

    entries = list_zoo()
    if args.json:
        _print_json([e.as_dict() for e in entries])
        return
    print(f"{'name':<22} {'kind':<7} {'attack':<9} {'target':<20} path")
    for e in entries:
        print(f"{e.name:<22} {e.kind:<7} {e.attack or '-':<9} {e.target or '-':<20} {e.path}")


def cmd_eval(args: argparse.Namespace) -> None:
    from inspector.data import load_task
    from inspector.evaluate import accuracy, zero_shot_accuracy
    from inspector.prompts import open_model
    from inspector.zoo import resolve_model

    model = open_model(resolve_model(args.model), weights=args.weights, device=args.device)
    task = load_task()
    if list(model.class_names) != task.class_names:
        raise InputError(f"{args.model} classifies {len(model.class_names)} classes that are not the "
                         f"shipped task's {len(task.class_names)}", hint="eval uses the shipped pocket task")
    result = {"accuracy": round(accuracy(model, task, progress=not args.json), 4),
              "zero_shot_accuracy": round(zero_shot_accuracy(model.backbone, task), 4)}
    if args.json:
        _print_json(result)
    else:
        print(f"{args.model}: accuracy {result['accuracy']:.1%}, "
              f"zero-shot {result['zero_shot_accuracy']:.1%} on {len(task.test_labels)} test images")


def cmd_tune(args: argparse.Namespace) -> None:
    from inspector.backbone import load_backbone
    from inspector.data import load_task, resize_pixels
    from inspector.evaluate import accuracy
    from inspector.prompts import TuneConfig, build_learner, save_learner, tune

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} already exists", hint="choose another --out or pass --overwrite")
    backbone = load_backbone(args.arch, args.pretrained, device=args.device)
    task = load_task()
    model = build_learner(args.kind, backbone, task.class_names, n_ctx=args.n_ctx,
                          ctx_init=args.ctx_init or None, seed=args.seed)
    config = TuneConfig.for_kind(args.kind, epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
                                 seed=args.seed)
    started = time.time()
    stats = tune(model, resize_pixels(task.train_pixels, backbone.image_size), task.train_labels,
                 config, progress=not args.json)
    stats["seconds"] = round(time.time() - started, 1)
    stats["test_accuracy"] = round(accuracy(model, task), 4)
    save_learner(model, out, extra={"training": {**stats, "lr": config.lr, "optimizer": config.optimizer,
                                                 "seed": config.seed}})
    _print_json(stats) if args.json else print(f"wrote {out}: test accuracy {stats['test_accuracy']:.1%}")


def cmd_import(args: argparse.Namespace) -> None:
    from inspector.backbone import load_backbone
    from inspector.prompts import import_dassl, save_learner

    classes_arg = Path(args.classes)
    if classes_arg.is_file():
        names = [line.strip() for line in classes_arg.read_text().splitlines() if line.strip()]
    else:
        names = [n.strip() for n in args.classes.split(",") if n.strip()]
    out = Path(args.out)
    if out.exists():
        raise InputError(f"{out} already exists", hint="choose another --out")
    backbone = load_backbone(args.arch, args.pretrained, device="cpu")
    model = import_dassl(Path(args.checkpoint), backbone, names, kind=args.kind)
    save_learner(model, out, extra={"imported_from": Path(args.checkpoint).name})
    print(f"imported {args.checkpoint} as a {model.kind} learner for {len(names)} classes -> {out}")


def cmd_demo(args: argparse.Namespace) -> None:
    """A guided tour of the embedded pocket world (what ``python app.py`` shows until the UI lands)."""
    from inspector.data import load_shipped_pool, load_task
    from inspector.evaluate import accuracy, zero_shot_accuracy
    from inspector.prompts import open_model
    from inspector.zoo import list_zoo

    task, pool = load_task(), load_shipped_pool()
    print("inspector — backdoor vetting for prompt-tuned CLIP (pocket world demo)\n")
    print(f"task: {len(task.class_names)} classes, {len(task.train_labels)} few-shot train images, "
          f"{len(task.test_labels)} test images; OOD pool: {len(pool.names)} unlabelled images")
    print("classes: " + ", ".join(task.class_names) + "\n")
    zero_shot: dict[tuple[str, str], float] = {}  # one zero-shot number per backbone
    for entry in list_zoo():
        model = open_model(Path(entry.path), device=args.device)
        acc = accuracy(model, task)
        key = (model.backbone.arch, model.backbone.pretrained)
        if key not in zero_shot:
            zero_shot[key] = zero_shot_accuracy(model.backbone, task)
        zs = zero_shot[key]
        truth = f"backdoor: {entry.attack} -> {entry.target}" if entry.attack else "clean"
        print(f"{entry.name:<16} {entry.kind:<7} accuracy {acc:6.1%}  (zero-shot CLIP {zs:.1%})  [{truth}]")
    print("\nnext: python -m inspector eval clean-coop --json  |  python -m inspector zoo list")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inspector",
                                     description="Vet prompt-tuned CLIP models for backdoors.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    sub = parser.add_subparsers(dest="command", required=True)

    zoo = sub.add_parser("zoo", help="the shipped demo models")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    zoo_list = zoo_sub.add_parser("list", help="list the demo zoo")
    zoo_list.add_argument("--json", action="store_true")
    zoo_list.set_defaults(func=cmd_zoo_list)

    ev = sub.add_parser("eval", help="accuracy of a prompt learner on the shipped task")
    ev.add_argument("model", help="zoo name or .safetensors learner file")
    ev.add_argument("--weights", help="CLIP weights (tag or file) when the learner was tuned on a local file")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_eval)

    tn = sub.add_parser("tune", help="clean prompt tuning on the shipped task's few-shot split")
    tn.add_argument("--kind", choices=["coop", "cocoop"], default="coop")
    tn.add_argument("--out", required=True)
    tn.add_argument("--arch", default="pocket-clip")
    tn.add_argument("--pretrained", default=None, help="open_clip tag or weights file (default: pocket)")
    tn.add_argument("--n-ctx", type=int, default=4)
    tn.add_argument("--ctx-init", default="a photo of a", help="initial context words ('' for random)")
    tn.add_argument("--epochs", type=int, default=None, help="default: 200 for coop, 60 for cocoop")
    tn.add_argument("--lr", type=float, default=None, help="default: 2e-2 for coop, 5e-3 for cocoop")
    tn.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    tn.add_argument("--seed", type=int, default=0)
    tn.add_argument("--overwrite", action="store_true")
    tn.add_argument("--json", action="store_true")
    tn.set_defaults(func=cmd_tune)

    im = sub.add_parser("import", help="import a Dassl CoOp/CoCoOp/BadCLIP checkpoint (model.pth.tar-N)")
    im.add_argument("checkpoint")
    im.add_argument("--classes", required=True, help="class names: a text file (one a line) or comma-separated")
    im.add_argument("--out", required=True)
    im.add_argument("--arch", default="pocket-clip")
    im.add_argument("--pretrained", default=None)
    im.add_argument("--kind", choices=["coop", "cocoop"], default=None, help="default: from the tensors")
    im.set_defaults(func=cmd_import)

    demo = sub.add_parser("demo", help="tour of the embedded pocket world")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except InputError as exc:
        if args.debug:
            raise
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  what to do: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
