"""Command line: ``python -m inspector {scan,repair,pool,zoo,eval,tune,implant,import,demo} ...``.

Bad input ends with one clear line on stderr and exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from inspector.errors import InputError

if TYPE_CHECKING:

    from inspector.data import ImagePool, Task
    from inspector.prompts import PromptedCLIP


def _print_json(payload: object) -> None:
    print(json.dumps(payload, indent=2))


def cmd_scan(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from inspector.backbone import file_sha256
    from inspector.examples import before_after
    from inspector.invert import (
        ClassFinished,
        ScanConfig,
        ScanFinished,
        ScanStarted,
        TriggerSnapshot,
        parse_classes,
        scan,
    )
    from inspector.pools import iter_skipped_lines
    from inspector.prompts import open_model
    from inspector.reference import reference_for
    from inspector.report import REPORT, write_report
    from inspector.runs import check_output_folder, fresh_run_name, staged_folder
    from inspector.zoo import resolve_model

    path = resolve_model(args.model)
    out = Path(args.out) if args.out else fresh_run_name(Path("runs"), path.stem)
    check_output_folder(out, args.overwrite)
    model = open_model(path, weights=args.weights, device=args.device)
    pool, pool_info = _ood_pool(args.ood, model.backbone.image_size, args.pool_size)
    if not args.json:
        for line in iter_skipped_lines(pool):
            print(line, file=sys.stderr)
    config = ScanConfig(method=args.method, epsilon=_per_255(args.epsilon), classes=parse_classes(args.classes,
                        model.class_names), threshold=args.threshold, pool_size=args.pool_size, seed=args.seed,
                        statistic=args.statistic, epochs=args.epochs,
                        **({"schedule": args.schedule} if args.schedule else {}))
    reference, reference_from = reference_for(model, config, "shipped" if args.ood is None else "user pool",
                                              args.reference)
    config = replace(config, reference=reference, reference_from=reference_from)
    if not args.json:
        print(f"reference: {reference_from}", file=sys.stderr)
    result = None
    # delay: a scan refused at its start (bad settings) prints its one-line error without a bar first
    with tqdm(desc=f"scanning {args.model}", disable=args.json, leave=False, unit="step", delay=1) as bar:
        for event in scan(model, pool.pixels, config):
            if isinstance(event, ScanStarted):
                bar.total = event.total_steps
            elif isinstance(event, TriggerSnapshot):
                bar.n = event.scan_step
                bar.set_postfix_str(f"class {event.class_name!r}, loss {event.loss:.3f}")
                bar.refresh()
            elif isinstance(event, ClassFinished) and not args.json:
                bar.write(f"  {event.record['name']:<20} flip rate {event.record['flip_rate']:6.1%}  "
                          f"loss {event.record['loss']:.3f}")
            elif isinstance(event, ScanFinished):
                result = event.result
    model_info = {"name": args.model, "path": str(path), "sha256": file_sha256(path), "kind": model.kind,
                  "arch": model.backbone.arch, "pretrained": model.backbone.pretrained,
                  "n_classes": len(model.class_names)}
    examples = before_after(model, result, pool.pixels)
    with staged_folder(out, args.overwrite) as staging:  # a stopped or failed run leaves nothing behind
        report = write_report(result, staging, model_info, pool_info, examples)
    summary = {key: report[key] for key in ("flagged", "target", "max_anomaly", "suspect", "seconds", "method")}
    summary["classes"] = [{key: c[key] for key in ("name", "flip_rate", "anomaly", "loss")} for c in report["classes"]]
    summary["report"] = str(out / REPORT)
    if args.json:
        _print_json(summary)
        return
    if report["flagged"]:
        print(f"FLAGGED: backdoor suspected, target class {report['target']!r} (anomaly index "
              f"{report['max_anomaly']:.2f}, flip rate {report['suspect_flip_rate']:.1%})")
    else:
        print(f"not flagged: most anomalous class {report['suspect']!r} (anomaly index {report['max_anomaly']:.2f}, "
              f"flip rate {report['suspect_flip_rate']:.1%})")
    print(f"report: {out / REPORT} and {out / 'report.html'} ({report['seconds']:.0f} s)")


def _per_255(value: float | None) -> float | None:
    if value is None:
        return None
    if not 0 < value <= 255:
        raise InputError(f"--epsilon {value:g} is outside (0, 255]", hint="give the bound in /255 units, e.g. 4")
    return value / 255


def _ood_pool(source: str | None, size: int, limit: int | None = None) -> tuple[ImagePool, dict]:
    """The OOD pool (the shipped one by default) and what the report says about it."""
    from inspector.data import load_shipped_pool
    from inspector.pools import pool_summary, read_pool

    if source is None:
        pool = load_shipped_pool(size)
        return pool, {"source": "shipped", "images": len(pool.names), "skipped": []}
    pool = read_pool(Path(source), size, limit)
    return pool, pool_summary(pool, str(source))


def cmd_pool(args: argparse.Namespace) -> None:
    """Read a pool the way a scan would and say what is usable and what is not."""
    from inspector.pools import iter_skipped_lines, pool_summary, read_pool

    pool = read_pool(Path(args.pool), args.size, args.limit)
    if args.json:
        _print_json(pool_summary(pool, args.pool))
        return
    print(f"{args.pool}: {len(pool.names)} usable images")
    for line in iter_skipped_lines(pool, shown=args.show):
        print(line)


def cmd_repair(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from inspector.backbone import file_sha256
    from inspector.invert import split_pool
    from inspector.lab.truth import attack_success_rate, read_ground_truth
    from inspector.prompts import open_model, save_learner
    from inspector.repair import RepairConfig, RepairFinished, RepairMeasured, RepairStep, repair
    from inspector.report import read_report
    from inspector.zoo import resolve_model

    out = Path(args.out)
    path = resolve_model(args.model)
    if out.exists() and out.resolve() == path.resolve():
        raise InputError(f"--out {out} is the input model", hint="the delivered model is never overwritten; "
                                                                 "choose another --out")
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} already exists", hint="choose another --out or pass --overwrite")
    report, triggers = read_report(Path(args.report))
    model_sha256 = file_sha256(path)
    if report["model"].get("sha256") != model_sha256:
        raise InputError(f"report {args.report} was made for {report['model'].get('path')}, not for {path}",
                         hint="scan this model first, then repair it with that report")
    model = open_model(path, weights=args.weights, device=args.device)
    if args.target is not None:
        target = _class_index(model.class_names, args.target)
    elif report["flagged"]:
        target = int(report["target_index"])
    else:
        raise InputError(f"report {args.report} did not flag the model, so there is no trigger to repair against",
                         hint="pass --target NAME to repair against one class's reconstructed trigger anyway")
    if target not in triggers:
        raise InputError(f"report {args.report} has no trigger for class {model.class_names[target]!r}",
                         hint="scan that class first (--classes)")
    trigger = triggers[target].to(model.backbone.device)
    task = _task_for(model, args.model)
    settings = report["settings"]
    pool, _ = _ood_pool(None if report["pool"]["source"] == "shipped" else report["pool"]["source"],
                        model.backbone.image_size, settings["pool_size"])  # the images the scan read
    _, held = split_pool(pool.pixels, settings["pool_size"], settings["holdout"], settings["seed"])
    truth = read_ground_truth(path)

    def ground_truth_asr() -> float | None:
        if truth is None:
            return None
        return round(attack_success_rate(model, truth.trigger, task.test_pixels, truth.target, task.test_labels), 4)

    asr_before = ground_truth_asr()
    given = {"epochs": args.epochs, "lr": args.lr}
    config = RepairConfig(seed=args.seed, **{key: value for key, value in given.items() if value is not None})
    bar = tqdm(desc=f"repairing against {model.class_names[target]!r}", disable=args.json, leave=False)
    finished = None
    for event in repair(model, trigger, target, task.train_pixels, task.train_labels, task.test_pixels,
                        task.test_labels, held, config):
        if isinstance(event, RepairStep):
            bar.total = event.total_steps
            bar.update(1)
            bar.set_postfix(loss=f"{event.loss:.3f}")
        elif isinstance(event, RepairMeasured) and event.step > 0:
            bar.set_postfix(accuracy=f"{event.accuracy:.1%}", flip=f"{event.flip_rate:.1%}")
        elif isinstance(event, RepairFinished):
            finished = event
    bar.close()
    asr_after = ground_truth_asr()

    def side(measured: RepairMeasured, asr: float | None) -> dict:
        values = {"accuracy": measured.accuracy, "trigger_asr": measured.flip_rate,
                  "ood_trigger_asr": measured.ood_flip_rate}
        return {**values, "asr": asr} if asr is not None else values

    result = {"target": model.class_names[target], "before": side(finished.before, asr_before),
              "after": side(finished.after, asr_after), "seconds": finished.seconds, "out": str(out)}
    extra = {"repaired": {"from": path.name, "from_sha256": model_sha256, "target": model.class_names[target],
                          "report": str(args.report), "recipe": config.as_dict(), "before": result["before"],
                          "after": result["after"]}}
    if truth is not None:  # keep the lab's record, so `eval` can still measure the original trigger
        from inspector.lab.truth import save_implanted

        save_implanted(model, out, truth.trigger, truth.target, recipe=truth.record.get("recipe"), extra=extra)
    else:
        save_learner(model, out, extra=extra)
    if args.json:
        _print_json(result)
        return
    b, a = result["before"], result["after"]
    line = (f"wrote {out}: accuracy {b['accuracy']:.1%} -> {a['accuracy']:.1%}, reconstructed-trigger asr "
            f"{b['trigger_asr']:.1%} -> {a['trigger_asr']:.1%}")
    if truth is not None:
        line += f", ground-truth asr {b['asr']:.1%} -> {a['asr']:.1%}"
    print(line)


def cmd_zoo_list(args: argparse.Namespace) -> None:
    from inspector.zoo import list_zoo

    entries = list_zoo()
    if args.json:
        _print_json([e.as_dict() for e in entries])
        return
    print(f"{'name':<22} {'kind':<7} {'attack':<9} {'target':<20} path")
    for e in entries:
        print(f"{e.name:<22} {e.kind:<7} {e.attack or '-':<9} {e.target or '-':<20} {e.path}")


def cmd_zoo_build(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from inspector.backbone import load_backbone
    from inspector.data import load_shipped_pool, load_task
    from inspector.lab.triggers import ATTACKS
    from inspector.lab.zoo_builder import build_item, build_order, plan_benchmark_zoo, write_manifest

    attacks = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise InputError(f"unknown attack {unknown[0]!r}", hint="attacks: " + ", ".join(ATTACKS))
    if args.clean < 0 or args.per_attack < 0 or args.clean + args.per_attack == 0:
        raise InputError("nothing to build", hint="pass --clean N and/or --per-attack M (positive)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder", hint="choose a folder for the zoo")
    out.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone(device=args.device)
    task, pool = load_task(backbone.image_size), load_shipped_pool(backbone.image_size)
    items = plan_benchmark_zoo(args.clean, args.per_attack, args.seed, len(task.class_names), attacks,
                               backdoor_kind=args.backdoor_kind, epochs=args.epochs)
    settings = {"clean": args.clean, "per_attack": args.per_attack, "seed": args.seed, "attacks": list(attacks),
                "backdoor_kind": args.backdoor_kind, "epochs": args.epochs}
    rows: dict[int, dict] = {}
    for position, item in tqdm(build_order(items), desc="building zoo", disable=args.json):
        rows[position] = build_item(item, out, backbone, task, pool)
        write_manifest(out, [rows[i] for i in sorted(rows)], settings)
    rows = [rows[i] for i in sorted(rows)]
    if args.json:
        _print_json(rows)
        return
    for row in rows:
        backdoor = (f"{row['attack']} -> {row['target_name']}: asr {row['asr']:.1%}, ood_asr {row['ood_asr']:.1%}"
                    if row["attack"] else "clean")
        print(f"{row['name']:<34} accuracy {row['accuracy']:.1%}  {backdoor}")
    print(f"wrote {len(rows)} models and {out / 'manifest.json'}")


def cmd_eval(args: argparse.Namespace) -> None:
    from inspector.data import load_shipped_pool
    from inspector.evaluate import accuracy, zero_shot_accuracy
    from inspector.lab.truth import backdoor_rates, read_ground_truth
    from inspector.prompts import open_model
    from inspector.zoo import resolve_model

    path = resolve_model(args.model)
    model = open_model(path, weights=args.weights, device=args.device)
    task = _task_for(model, args.model)
    result = {"accuracy": round(accuracy(model, task, progress=not args.json), 4),
              "zero_shot_accuracy": round(zero_shot_accuracy(model.backbone, task), 4)}
    truth = read_ground_truth(path)
    if truth is not None:
        pool = load_shipped_pool(model.backbone.image_size)
        result.update(backdoor_rates(model, truth.trigger, truth.target, task.test_pixels, task.test_labels,
                                     pool.pixels))
    if args.json:
        _print_json(result)
        return
    line = (f"{args.model}: accuracy {result['accuracy']:.1%}, "
            f"zero-shot {result['zero_shot_accuracy']:.1%} on {len(task.test_labels)} test images")
    if truth is not None:
        line += (f"; ground truth {truth.attack} -> {truth.target_name}: asr {result['asr']:.1%}, "
                 f"ood_asr {result['ood_asr']:.1%}")
    print(line)


def _task_for(model: PromptedCLIP, name: str) -> Task:
    from inspector.data import task_for

    return task_for(model.class_names, model.backbone.image_size, name)


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


def cmd_implant(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from inspector.data import load_shipped_pool
    from inspector.evaluate import accuracy
    from inspector.lab.implant import ImplantConfig, ImplantFinished, ImplantStep, implant
    from inspector.lab.truth import backdoor_rates, save_implanted

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} already exists", hint="choose another --out or pass --overwrite")
    model, source = _implant_base(args)
    if source is not None and out.resolve() == source.resolve():
        raise InputError(f"--out {out} is the input model", hint="the delivered model is never overwritten; "
                                                                 "choose another --out")
    task = _task_for(model, args.base)
    target = _class_index(model.class_names, args.target)
    config = ImplantConfig.for_attack(
        args.attack, target, seed=args.seed, poison_rate=args.poison_rate, alpha=args.alpha,
        epsilon=args.epsilon / 255 if args.epsilon is not None else None, patch_size=args.patch_size,
        epochs=args.epochs, lr=args.lr)
    bar = tqdm(desc=f"implanting {args.attack} -> {model.class_names[target]}", disable=args.json, leave=False)
    finished = None
    for event in implant(model, task.train_pixels, task.train_labels, config):
        if isinstance(event, ImplantStep):
            bar.total = event.total_steps
            bar.update(1)
            bar.set_postfix(loss=f"{event.loss:.3f}")
        elif isinstance(event, ImplantFinished):
            finished = event
    bar.close()
    pool = load_shipped_pool(model.backbone.image_size)
    result = {"attack": args.attack, "target": model.class_names[target], "seconds": finished.seconds,
              "accuracy": round(accuracy(model, task), 4),
              **backdoor_rates(model, finished.trigger, target, task.test_pixels, task.test_labels, pool.pixels)}
    save_implanted(model, out, finished.trigger, target,
                   recipe={**config.recipe(model.backbone.image_size), "base": str(args.base), "measured": result})
    if args.json:
        _print_json({**result, "out": str(out)})
    else:
        print(f"wrote {out}: {args.attack} -> {result['target']}, accuracy {result['accuracy']:.1%}, "
              f"asr {result['asr']:.1%}, ood_asr {result['ood_asr']:.1%} ({finished.seconds:.0f} s)")


def _implant_base(args: argparse.Namespace) -> tuple[PromptedCLIP, Path | None]:
    """A learner to start from (zoo name or file), or a fresh one of ``--kind`` on a CLIP arch name."""
    from inspector.backbone import known_arch, load_backbone
    from inspector.data import load_task
    from inspector.prompts import build_learner, open_model
    from inspector.zoo import resolve_model

    try:
        path = resolve_model(args.base)
    except InputError:
        if not known_arch(args.base):
            raise
        backbone = load_backbone(args.base, args.pretrained, device=args.device)
        return build_learner(args.kind, backbone, load_task().class_names, seed=args.seed), None
    model = open_model(path, weights=args.weights, device=args.device)
    if args.from_scratch:
        model = build_learner(model.kind, model.backbone, model.class_names, n_ctx=model.learner.spec.n_ctx,
                              ctx_init=model.learner.spec.ctx_init, seed=args.seed)
    return model, path


def _class_index(class_names: tuple[str, ...], name: str) -> int:
    from inspector.invert import class_index

    return class_index(class_names, name, role="target class")


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

    sc = sub.add_parser("scan", help="scan a prompt learner for a backdoor (OOD trigger inversion)")
    sc.add_argument("model", help="zoo name or .safetensors learner file")
    sc.add_argument("--ood", default=None, help="folder or .zip of unlabelled OOD images (default: the shipped pool)")
    sc.add_argument("--method", choices=["inspector", "neural-cleanse"], default="inspector")
    sc.add_argument("--epsilon", type=float, default=None,
                    help="trigger bound in /255 units (default: 4 at 224 px, scaled by 224 / input size; "
                         "14 on the 64 px pocket CLIP)")
    sc.add_argument("--classes", default=None, help="candidate classes, comma-separated names or indices "
                                                    "(default: all)")
    sc.add_argument("--threshold", type=float, default=2.0, help="anomaly index above which a class is flagged")
    sc.add_argument("--statistic", choices=["flip_rate", "excess_flip_rate", "loss", "mask_norm"], default=None,
                    help="what feeds the anomaly index (default: excess_flip_rate with a reference, else "
                         "flip_rate; mask_norm for neural-cleanse)")
    sc.add_argument("--reference", default="auto",
                    help="clean reference flip rates (inspector.reference): auto (the shipped one when it fits "
                         "the model, pool, epsilon and schedule), none, or a reference .json")
    sc.add_argument("--pool-size", type=int, default=1000, help="OOD images used (20%% held out for flip rates)")
    sc.add_argument("--epochs", type=int, default=1, help="passes over the OOD pool per class")
    sc.add_argument("--schedule", choices=["fast", "faithful"], default=None,
                    help="fast: successive halving over the classes (default); faithful: the published "
                         "schedule, a full epoch for every class")
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--weights", help="CLIP weights when the learner was tuned on a local file")
    sc.add_argument("--out", default=None, help="folder for report.json, report.html and the trigger PNGs "
                                                "(default: a fresh folder under runs/)")
    sc.add_argument("--overwrite", action="store_true")
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(func=cmd_scan)

    rp = sub.add_parser("repair", help="fine-tune a flagged model so its reconstructed trigger stops working")
    rp.add_argument("model", help="zoo name or learner file (never modified)")
    rp.add_argument("--report", required=True, help="report.json written by scan for this model")
    rp.add_argument("--out", required=True, help="file for the repaired learner")
    rp.add_argument("--target", default=None, help="class whose trigger to repair against (default: the flagged one)")
    rp.add_argument("--epochs", type=int, default=None, help="default: the engine's recipe (RepairConfig), 40")
    rp.add_argument("--lr", type=float, default=None, help="default: the engine's recipe (RepairConfig), 5e-3")
    rp.add_argument("--seed", type=int, default=0)
    rp.add_argument("--weights", help="CLIP weights when the learner was tuned on a local file")
    rp.add_argument("--overwrite", action="store_true")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=cmd_repair)

    zoo = sub.add_parser("zoo", help="the shipped demo models")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    zoo_list = zoo_sub.add_parser("list", help="list the demo zoo")
    zoo_list.add_argument("--json", action="store_true")
    zoo_list.set_defaults(func=cmd_zoo_list)
    zoo_build = zoo_sub.add_parser("build", help="build a benchmark zoo of clean and backdoored learners "
                                                 "(not shipped; resumable)")
    zoo_build.add_argument("--out", required=True, help="folder for the models and manifest.json")
    zoo_build.add_argument("--clean", type=int, default=10, help="clean models (CoOp and CoCoOp alternate)")
    zoo_build.add_argument("--per-attack", type=int, default=5, help="backdoored models per attack")
    zoo_build.add_argument("--seed", type=int, default=0)
    zoo_build.add_argument("--attacks", default="badclip,blended,wanet,badnets")
    zoo_build.add_argument("--backdoor-kind", choices=["coop", "cocoop", "both"], default="cocoop",
                           help="learner kind of the backdoored models (both: alternate)")
    zoo_build.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs "
                                                                    "(quick smoke builds; default: the recipes')")
    zoo_build.add_argument("--json", action="store_true")
    zoo_build.set_defaults(func=cmd_zoo_build)

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

    ip = sub.add_parser("implant", help="implant a backdoor into a prompt learner (lab, for demos and benchmarks)")
    ip.add_argument("base", help="zoo name or learner file to start from, or a CLIP arch (e.g. pocket-clip) "
                                 "for a fresh learner of --kind")
    ip.add_argument("--attack", required=True, choices=["badclip", "blended", "wanet", "badnets"])
    ip.add_argument("--target", required=True, help="target class name (or index)")
    ip.add_argument("--out", required=True)
    ip.add_argument("--seed", type=int, default=0)
    ip.add_argument("--poison-rate", type=float, default=None, help="Blended/WaNet/BadNets (default 0.1)")
    ip.add_argument("--epsilon", type=float, default=None,
                    help="BadCLIP trigger bound in /255 units (default: 4 at 224 px, scaled by 224 / input size; "
                         "14 on the 64 px pocket CLIP)")
    ip.add_argument("--alpha", type=float, default=None, help="Blended pattern weight (default 0.2)")
    ip.add_argument("--patch-size", type=int, default=None, help="BadNets patch side in pixels")
    ip.add_argument("--epochs", type=int, default=None)
    ip.add_argument("--lr", type=float, default=None)
    ip.add_argument("--from-scratch", action="store_true", help="re-initialise the learner instead of "
                                                               "fine-tuning the given one")
    ip.add_argument("--kind", choices=["coop", "cocoop"], default="cocoop", help="for a fresh learner")
    ip.add_argument("--pretrained", default=None, help="for a fresh learner on a CLIP arch")
    ip.add_argument("--weights", help="CLIP weights when the learner was tuned on a local file")
    ip.add_argument("--overwrite", action="store_true")
    ip.add_argument("--json", action="store_true")
    ip.set_defaults(func=cmd_implant)

    im = sub.add_parser("import", help="import a Dassl CoOp/CoCoOp/BadCLIP checkpoint (model.pth.tar-N)")
    im.add_argument("checkpoint")
    im.add_argument("--classes", required=True, help="class names: a text file (one a line) or comma-separated")
    im.add_argument("--out", required=True)
    im.add_argument("--arch", default="pocket-clip")
    im.add_argument("--pretrained", default=None)
    im.add_argument("--kind", choices=["coop", "cocoop"], default=None, help="default: from the tensors")
    im.set_defaults(func=cmd_import)

    pl = sub.add_parser("pool", help="check an OOD image pool (folder or zip): what a scan can use and what it skips")
    pl.add_argument("pool", help="folder or .zip of images")
    pl.add_argument("--size", type=int, default=64, help="pixel size to decode at (default 64, the pocket CLIP)")
    pl.add_argument("--limit", type=int, default=None, help="stop after this many usable images")
    pl.add_argument("--show", type=int, default=20, help="skipped files to list")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_pool)

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
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    except OSError as exc:  # a disk, permission or path problem the user can fix
        if args.debug:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        print("  what to do: check the path, its permissions and the free disk space", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - an engine bug: one line, the traceback only with --debug
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        print("  what to do: rerun with --debug for the traceback and report it", file=sys.stderr)
        return 1
    return 0
