"""Command line: ``python -m inspector {scan,repair,reference,pool,zoo,eval,tune,implant,import,fleet,demo} ...``.

Each command opens its inputs, runs one job of ``inspector.pipeline`` and turns its events into a
progress bar and output lines (or one JSON object with ``--json``). Bad input ends with one clear
line on stderr and exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inspector.detect import DEFAULT_EVIDENCE, DEFAULT_SPREAD, USE_COLOUR_FAMILY
from inspector.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from inspector.data import Task
    from inspector.lab.zoo_builder import ZooItem
    from inspector.prompts import PromptedCLIP


def _print_json(payload: object) -> None:
    print(json.dumps(payload, indent=2))


def _note(args: argparse.Namespace, line: str) -> None:
    """A side note on stderr (skipped files, the reference used); JSON runs keep stdout for the JSON."""
    print(line, file=sys.stderr)


def _per_255(value: float | None) -> float | None:
    from inspector.invert import epsilon_share

    return None if value is None else epsilon_share(value, "--epsilon")


def _share(value: float | None, option: str) -> float | None:
    if value is not None and not 0 <= value <= 1:
        raise InputError(f"{option} {value:g} is not a share between 0 and 1", hint=f"e.g. {option} 0.5 for half")
    return value


def _bar(args: argparse.Namespace, desc: str, unit: str = "step") -> Any:
    from tqdm.auto import tqdm

    # on stderr, also for --json runs (stdout keeps only the JSON); delay: a job refused at its start prints its
    # one-line error without a bar first
    return tqdm(desc=desc, file=sys.stderr, leave=False, unit=unit, delay=1)


def _write(args: argparse.Namespace, bar: Any, line: str) -> None:
    """A progress line above the bar: on stdout for a person, on stderr beside a --json run's JSON."""
    bar.write(line, file=sys.stderr if args.json else None)


def _advance(bar: Any, done: int, total: int, text: str) -> None:
    bar.total, bar.n = total, done
    bar.set_postfix_str(text)
    bar.refresh()


def _task(args: argparse.Namespace, size: int, need_test: bool = True) -> Task:
    """``--task`` (default: the shipped pocket task) at ``size`` px, its skipped files noted."""
    from inspector.pools import iter_skipped_lines
    from inspector.tasks import load_labelled

    task = load_labelled(args.task, size, shots=args.shots, seed=getattr(args, "seed", 0), need_test=need_test)
    for line in iter_skipped_lines(task.skipped, what=f"task {task.source}"):
        _note(args, line)
    return task


def _pool(args: argparse.Namespace, source: str | None, size: int, pool_size: int | None) -> Any:
    from inspector.pipeline import open_pool
    from inspector.pools import iter_skipped_lines

    pool = open_pool(source, size, pool_size)
    for line in iter_skipped_lines(pool.skipped):
        _note(args, line)
    if pool.unread:
        _note(args, f"{pool.unread} image file(s) beyond the first {len(pool.names)} were not read (--pool-size)")
    return pool


def _class_index(class_names: tuple[str, ...] | list[str], name: str) -> int:
    from inspector.invert import class_index

    return class_index(class_names, name, role="target class")


# --- scan and repair -------------------------------------------------------------------------------------
def _scan_config(args: argparse.Namespace) -> Any:
    """The scan options every model gets (candidate classes are named per model: see ``parse_classes``)."""
    from dataclasses import replace

    from inspector.invert import ScanConfig

    config = ScanConfig(method=args.method, epsilon=_per_255(args.epsilon), threshold=args.threshold,
                        pool_size=args.pool_size, seed=args.seed, statistic=args.statistic, epochs=args.epochs,
                        colour=args.colour, blend=args.blend, patch=args.patch, transfer=args.transfer,
                        spread=args.spread,
                        evidence=args.evidence,
                        min_flip_rate=_share(args.min_flip_rate, "--min-flip-rate"))
    return replace(config, schedule=args.schedule) if args.schedule else config


def cmd_scan(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from inspector.invert import ClassFinished, ScanStarted, TriggerSnapshot, parse_classes
    from inspector.pipeline import ReferenceChosen, ReportWritten, open_delivered, scan_job
    from inspector.report import REPORT
    from inspector.runs import check_output_folder, fresh_run_name
    from inspector.transfer import TransferMeasured

    delivered = open_delivered(args.model, weights=args.weights, device=args.device)
    out = Path(args.out) if args.out else fresh_run_name(Path("runs"), delivered.path.stem)
    check_output_folder(out, args.overwrite)
    model = delivered.model
    pool = _pool(args, args.ood, model.backbone.image_size, args.pool_size)
    config = replace(_scan_config(args), classes=parse_classes(args.classes, model.class_names))
    written = None
    with _bar(args, f"scanning {args.model}") as bar:
        for event in scan_job(delivered, pool, config, out, args.reference, args.overwrite):
            if isinstance(event, ReferenceChosen):
                _note(args, f"reference: {event.line}")
            elif isinstance(event, ScanStarted):
                bar.total = event.total_steps
            elif isinstance(event, TriggerSnapshot):
                _advance(bar, event.scan_step, bar.total, f"class {event.class_name!r}, loss {event.loss:.3f}")
            elif isinstance(event, ClassFinished):
                _write(args, bar, f"  {event.record['name']:<20} flip rate {event.record['flip_rate']:6.1%}  "
                                  f"loss {event.record['loss']:.3f}")
            elif isinstance(event, TransferMeasured):
                c = event.record
                _write(args, bar, f"  transfer check {c['name']!r}: its blended pattern flips {c['delivered']:.0%} "
                                  f"of this model's held-out images, {c['clean']:.0%} of clean learners' "
                                  f"(their own gap {c['reference_gap']:+.0%}; index {c['transfer_index']:.2f})")
            elif isinstance(event, ReportWritten):
                written = event
    assert written is not None
    report = written.report
    if args.json:
        _print_json(written.summary())
        return
    from inspector.detect import QUICK_FAMILY_WORDS

    family = QUICK_FAMILY_WORDS.get(report["suspect_family"])
    found_by = f" by its {family.replace(' ', '-')} trigger" if family else ""
    if report.get("corroborated_by"):
        found_by = f" by its {', '.join(report['corroborated_by'])} triggers together (corroborated index)"
    if report.get("confirmed_by") == "transfer":
        found_by = " by the transfer check (a blended pattern that moves it far more than clean learners)"
    if report["flagged"]:
        print(f"FLAGGED: backdoor suspected, target class {report['target']!r}{found_by} (anomaly index "
              f"{report['max_anomaly']:.2f}, flip rate {report['suspect_flip_rate']:.1%})")
    else:
        print(f"not flagged: most anomalous class {report['suspect']!r} (anomaly index {report['max_anomaly']:.2f}, "
              f"flip rate {report['suspect_flip_rate']:.1%})")
    if report.get("probability") is not None:
        print(f"probability of a backdoor: {report['probability']:.0%} (calibrated on the dev zoo)")
    print(f"report: {out / REPORT} and {out / 'report.html'} ({report['seconds']:.0f} s)")


def cmd_repair(args: argparse.Namespace) -> None:
    from inspector.pipeline import (
        Repaired,
        check_new_file,
        open_delivered,
        pool_of,
        repair_job,
        saved_scan_for,
    )
    from inspector.repair import RepairConfig, RepairMeasured, RepairStep

    out = Path(args.out)
    delivered = open_delivered(args.model, weights=args.weights, device=args.device)
    check_new_file(out, args.overwrite, delivered.path)
    saved = saved_scan_for(delivered, Path(args.report))
    names = delivered.model.class_names
    target = _class_index(names, args.target) if args.target is not None else None
    size = delivered.model.backbone.image_size
    task = _task(args, size)
    pool = pool_of(saved, size, args.ood)
    given = {"epochs": args.epochs, "lr": args.lr, "families": args.families, "triggered_loss": args.triggered_loss}
    config = RepairConfig(seed=args.seed, **{key: value for key, value in given.items() if value is not None})
    done = None
    with _bar(args, "repairing") as bar:
        for event in repair_job(delivered, saved.result, task, pool, out, config, target, args.overwrite,
                                source=str(args.report)):
            if isinstance(event, RepairStep):
                bar.total = event.total_steps
                bar.update(1)
                bar.set_postfix(loss=f"{event.loss:.3f}")
            elif isinstance(event, RepairMeasured) and event.step > 0:
                on = f" on {event.test_images}" if event.step < event.total_steps else ""  # a sample between the ends
                bar.set_postfix({f"accuracy{on}": f"{event.accuracy:.1%}", f"flip{on}": f"{event.flip_rate:.1%}"})
            elif isinstance(event, Repaired):
                done = event
    assert done is not None
    result = done.summary()
    if args.json:
        _print_json(result)
        return
    b, a = result["before"], result["after"]
    line = (f"wrote {out}: repaired against {done.target_name!r}, accuracy {b['accuracy']:.1%} -> {a['accuracy']:.1%}, "
            f"reconstructed-trigger asr {b['trigger_asr']:.1%} -> {a['trigger_asr']:.1%}")
    if "asr" in b:
        line += f", ground-truth asr {b['asr']:.1%} -> {a['asr']:.1%}"
    print(line)


# --- a fleet of models ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _ctrl_c_asks_to_stop() -> Iterator[threading.Event]:
    """Ctrl-C as a request that the fleet loop reads between results: a KeyboardInterrupt raised at any point can
    be lost inside a library's cleanup (an object's finaliser), and the run would go on. A second Ctrl-C stops at
    once."""
    asked = threading.Event()

    def ask(signum: int, frame: object) -> None:
        if asked.is_set():
            raise KeyboardInterrupt
        asked.set()
        print("stopping: the scans in flight are cancelled, finished results are kept (Ctrl-C again to quit now)",
              file=sys.stderr)

    try:
        previous = signal.signal(signal.SIGINT, ask)
    except ValueError:  # not the main thread (the CLI called from one): Ctrl-C stays Python's own
        yield asked
        return
    try:
        yield asked
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_fleet_scan(args: argparse.Namespace) -> None:
    from inspector.fleet import (
        JOURNAL,
        FleetPlanned,
        FleetSettings,
        FleetWritten,
        ModelDone,
        Runtime,
        fleet_scan,
        read_journal,
    )

    for option in ("workers", "cpus_per_scan"):
        if getattr(args, option) is not None and getattr(args, option) <= 0:
            raise InputError(f"--{option.replace('_', '-')} {getattr(args, option)} is not a positive number",
                             hint=f"e.g. --{option.replace('_', '-')} 2")
    if args.gpus_per_scan is not None and args.gpus_per_scan < 0:
        raise InputError(f"--gpus-per-scan {args.gpus_per_scan} is negative", hint="e.g. 1, 0.5, or 0 for CPU scans")
    settings = FleetSettings(_scan_config(args), classes=args.classes, ood=args.ood, pool_size=args.pool_size,
                             reference=args.reference, weights=args.weights, device=args.device)
    runtime = Runtime(args.address, args.workers, args.cpus_per_scan, args.gpus_per_scan)
    out = Path(args.out)
    written = None
    # Ray prints its own notes (a worker that died, …) on stdout; a --json run keeps stdout for the JSON
    keep_stdout = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with _ctrl_c_asks_to_stop() as stop, keep_stdout, _bar(args, f"vetting {args.source}", unit="model") as bar:
        events = fleet_scan(Path(args.source), out, settings, runtime, args.overwrite, should_stop=stop.is_set)
        try:
            for event in events:
                if isinstance(event, FleetPlanned):
                    bar.total, bar.n = event.total, event.total - event.to_scan
                    bar.refresh()
                    kept = f"; {event.kept} finished earlier" if event.kept else ""
                    kept += f", {event.recovered} recovered from their reports" if event.recovered else ""
                    _note(args, f"fleet: {event.to_scan} of {event.total} model(s) to scan{kept}")
                    if event.to_scan:
                        _note(args, f"on {event.runtime}")
                elif isinstance(event, ModelDone):
                    bar.update(1)
                    _write(args, bar, _fleet_line(event))
                elif isinstance(event, FleetWritten):
                    written = event
        except KeyboardInterrupt:
            events.close()  # cancels the scans in flight; what finished stays in fleet.jsonl
    if written is None or written.interrupted:
        finished = sum(line.get("verdict") != "error" for line in read_journal(out).values())
        print(f"interrupted: {finished} finished result(s) kept in {out / JOURNAL}; run the same command again to "
              "scan the rest", file=sys.stderr)
        raise SystemExit(130)
    summary = written.summary()
    if args.json:
        _print_json(summary)
    else:
        print(f"fleet: {summary['models']} model(s) with a line, {summary['flagged']} flagged, {summary['errors']} "
              f"could not be scanned ({summary['seconds']:.0f} s)")
        print(f"results: {summary['journal']} and {summary['page']}")


def _fleet_line(event: Any) -> str:
    line = event.line
    head = f"  [{event.done}/{event.total}] {line['model']:<28}"
    if event.failed:
        return f"{head} could not be scanned: {line['error']}"
    p = f", p {line['probability']:.0%}" if line.get("probability") is not None else ""
    if line["flagged"]:
        verdict = f"FLAGGED target {line['target']!r} (index {line['max_anomaly']:.2f}{p})"
    else:
        verdict = f"not flagged (top {line['suspect']!r}, index {line['max_anomaly']:.2f}{p})"
    return f"{head} {verdict}  {line['seconds']:.0f} s on {line['worker']}"


# --- the clean reference ---------------------------------------------------------------------------------
def cmd_reference_transfer(args: argparse.Namespace) -> None:
    from inspector.backbone import load_backbone
    from inspector.invert import ScanConfig
    from inspector.reference import Reference
    from inspector.transfer import GapsMeasured, reference_transfer

    path = Path(args.reference)
    reference = Reference.read(path)
    backbone = load_backbone(reference.arch, args.weights or (None if reference.pretrained == "pocket"
                                                              else reference.pretrained), device=args.device)
    pool = _pool(args, args.ood, backbone.image_size, reference.pool_size)
    why = None if pool.fingerprint == reference.pool else (f"the OOD pool {pool.source} is not the one the reference "
                                                           f"was measured on ({reference.pool_source})")
    if why:
        raise InputError(why, hint="pass the pool the reference was built with (--ood)")
    keep = Path(args.keep) if args.keep else path.with_suffix(".learners")
    try:
        carriers = [int(s) for s in args.carriers.split(",")] if args.carriers else None
    except ValueError as exc:
        raise InputError(f"--carriers {args.carriers!r} is not a list of learner seeds",
                         hint="e.g. --carriers 1000,1002,1004 (the reference's seeds)") from exc
    with _bar(args, f"transfer check for {path.name}", unit="learner") as bar:
        events = reference_transfer(reference, path, keep, backbone, pool, ScanConfig(), carriers)
        while True:
            try:
                event = next(events)
            except StopIteration as done:
                updated = done.value
                break
            if isinstance(event, GapsMeasured):
                _advance(bar, event.done, event.total, f"seed {event.seed}")
                _write(args, bar, "  " + event.line())
    transfer = updated.transfer or {}
    summary = {"reference": str(path), "carriers": transfer.get("learners"), "measured": transfer.get("measured")}
    if args.json:
        _print_json(summary)
        return
    print(f"transfer check added to {path}: triggers carried over to learners {transfer.get('learners')}, "
          f"{len(transfer.get('measured', []))} learners measured as if delivered")


def cmd_reference_build(args: argparse.Namespace) -> None:
    from inspector.backbone import load_backbone
    from inspector.invert import ScanConfig
    from inspector.pipeline import ReferenceWritten, reference_job
    from inspector.reference import LearnerMeasured, ReferenceProgress

    backbone = load_backbone(args.arch, args.pretrained, device=args.device)
    task = _task(args, backbone.image_size, need_test=False)
    pool = _pool(args, args.ood, backbone.image_size, args.pool_size)
    config = ScanConfig(epsilon=_per_255(args.epsilon), pool_size=args.pool_size, seed=args.seed, colour=args.colour,
                        blend=args.blend, patch=args.patch)
    written = None
    measured = []
    with _bar(args, f"reference for {task.source}", unit="unit") as bar:
        for event in reference_job(task, pool, args.kind, backbone, Path(args.out), args.learners, args.first_seed,
                                   config, args.epochs, args.overwrite,
                                   keep=Path(args.keep) if args.keep else None, varied=args.recipes == "varied",
                                   scan_seeds=args.scan_seeds):
            if isinstance(event, ReferenceProgress):
                _advance(bar, event.done_units, event.total_units, f"learner {event.learner}/{event.learners}: "
                                                                   f"{event.stage}")
            elif isinstance(event, LearnerMeasured):
                measured.append(event)
                _write(args, bar, "  " + event.line())
            elif isinstance(event, ReferenceWritten):
                written = event
    assert written is not None
    reference = written.reference
    top = sorted(reference.flip_rates.items(), key=lambda kv: -kv[1])[:3]
    if args.json:
        _print_json(written.summary())
        return
    print(f"wrote {written.path} ({len(reference.seeds)} clean {reference.kind} learners, {written.seconds:.0f} s); "
          "highest mean flip rates: " + ", ".join(f"{n} {r:.1%}" for n, r in top))
    print(f"use it: python -m inspector scan MODEL --ood {args.ood or 'shipped'} --reference {written.path}"
          .replace("--ood shipped ", ""))


# --- the pool --------------------------------------------------------------------------------------------
def cmd_pool(args: argparse.Namespace) -> None:
    """Read a pool the way a scan would and say what is usable and what is not."""
    from inspector.pools import iter_skipped_lines, pool_summary, read_pool

    pool = read_pool(Path(args.pool), args.size, args.limit)
    if args.json:
        _print_json(pool_summary(pool))
        return
    print(f"{args.pool}: {len(pool.names)} usable images")
    for line in iter_skipped_lines(pool.skipped, shown=args.show):
        print(line)
    if pool.unread:
        print(f"{pool.unread} image file(s) beyond the first {len(pool.names)} were not read (--limit)")


def cmd_zoo_list(args: argparse.Namespace) -> None:
    from inspector.zoo import list_zoo

    entries = list_zoo()
    if args.json:
        _print_json([e.as_dict() for e in entries])
        return
    print(f"{'name':<22} {'kind':<7} {'attack':<9} {'target':<20} path")
    for e in entries:
        print(f"{e.name:<22} {e.kind:<7} {e.attack or '-':<9} {e.target or '-':<20} {e.path}")


def set_aside(items: list[ZooItem], out: Path, names: list[str]) -> None:
    """Move the files of the backdoored models ``names`` to OUT/superseded/ so that they are built again."""
    known = {item.name: item for item in items}
    for name in names:
        if name not in known or known[name].attack is None:
            raise InputError(f"--rebuild {name}: not a backdoored model of this zoo",
                             hint="name backdoored models of the plan (a clean one is the base of others)")
    for name in names:
        path = out / known[name].filename
        if path.exists():
            (out / "superseded").mkdir(exist_ok=True)
            path.replace(out / "superseded" / path.name)


def cmd_zoo_build(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from inspector.backbone import load_backbone, machine_name
    from inspector.data import load_shipped_pool, load_task
    from inspector.lab.triggers import ATTACKS
    from inspector.lab.zoo_builder import (
        build_item,
        build_order,
        fallback_base,
        plan_benchmark_zoo,
        read_plan,
        write_manifest,
    )

    attacks = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise InputError(f"unknown attack {unknown[0]!r}", hint="attacks: " + ", ".join(ATTACKS))
    if args.plan is None and (args.clean < 0 or args.per_attack < 0 or args.clean + args.per_attack == 0):
        raise InputError("nothing to build", hint="pass --clean N and/or --per-attack M (positive), or --plan FILE")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder", hint="choose a folder for the zoo")
    if args.plan is not None:
        items = read_plan(Path(args.plan))
        settings: dict[str, Any] = {"plan": str(args.plan)}
    out.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone(device=args.device)
    task, pool = load_task(backbone.image_size), load_shipped_pool(backbone.image_size)
    if args.plan is None:
        items = plan_benchmark_zoo(args.clean, args.per_attack, args.seed, len(task.class_names), attacks,
                                   backdoor_kind=args.backdoor_kind, epochs=args.epochs)
        settings = {"clean": args.clean, "per_attack": args.per_attack, "seed": args.seed, "attacks": list(attacks),
                    "backdoor_kind": args.backdoor_kind, "epochs": args.epochs}
    settings["built_on"] = machine_name(backbone.device)  # where the rows that this run trains ran
    set_aside(items, out, [name.strip() for name in args.rebuild.split(",") if name.strip()])
    rows: dict[int, dict] = {}
    for position, item in tqdm(build_order(items), desc="building zoo", file=sys.stderr):
        rows[position] = build_item(item, out, backbone, task, pool, fallback=fallback_base(item, items))
        write_manifest(out, [rows[i] for i in sorted(rows)], settings)
    done = [rows[i] for i in sorted(rows)]
    if args.json:
        _print_json(done)
        return
    for position, row in sorted(rows.items()):
        tries = f" ({row['attempts']} tries)" if row.get("attempts", 1) > 1 else ""
        tries += f", in {row['base']} (its planned base did not take it)" if row["base"] != items[position].base else ""
        backdoor = (f"{row['attack']} -> {row['target_name']}: asr {row['asr']:.1%}, ood_asr {row['ood_asr']:.1%}"
                    f"{tries}" if row["attack"] else "clean")
        print(f"{row['name']:<34} accuracy {row['accuracy']:.1%}  {backdoor}")
    print(f"wrote {len(done)} models and {out / 'manifest.json'}")


def cmd_eval(args: argparse.Namespace) -> None:
    from inspector.evaluate import accuracy, zero_shot_accuracy
    from inspector.lab.truth import backdoor_rates
    from inspector.pipeline import open_delivered, open_task_for

    delivered = open_delivered(args.model, weights=args.weights, device=args.device)
    model, truth = delivered.model, delivered.truth
    task = open_task_for(model, _task(args, model.backbone.image_size), args.model)
    result = {"accuracy": round(accuracy(model, task, progress=True), 4),
              "zero_shot_accuracy": round(zero_shot_accuracy(model.backbone, task), 4)}
    if truth is not None:
        pool = _pool(args, args.ood, model.backbone.image_size, None)
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


def cmd_tune(args: argparse.Namespace) -> None:
    from inspector.backbone import load_backbone
    from inspector.pipeline import Tuned, check_new_file, tune_job
    from inspector.prompts import TuneConfig, TuneStep

    check_new_file(Path(args.out), args.overwrite)
    backbone = load_backbone(args.arch, args.pretrained, device=args.device)
    task = _task(args, backbone.image_size, need_test=False)
    config = TuneConfig.for_kind(args.kind, epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
                                 seed=args.seed)
    done = None
    with _bar(args, f"tuning {args.kind} on {task.source}") as bar:
        for event in tune_job(backbone, task, args.kind, Path(args.out), config, args.n_ctx, args.ctx_init or None,
                              args.overwrite):
            if isinstance(event, TuneStep):
                _advance(bar, event.step, event.total_steps, f"loss {event.loss:.3f}")
            elif isinstance(event, Tuned):
                done = event
    assert done is not None
    if args.json:
        _print_json(done.stats)
    elif "test_accuracy" in done.stats:
        print(f"wrote {done.path}: test accuracy {done.stats['test_accuracy']:.1%}")
    else:
        print(f"wrote {done.path} (the task has no test split, so no accuracy)")


def cmd_implant(args: argparse.Namespace) -> None:
    from inspector.lab.implant import IMPLANT_ATTEMPTS, ImplantConfig, ImplantStep, ImplantTried
    from inspector.pipeline import Implanted, check_new_file, implant_job

    out = Path(args.out)
    check_new_file(out, args.overwrite)
    args.attempts = IMPLANT_ATTEMPTS if args.attempts is None else args.attempts
    if args.attempts < 1:
        raise InputError(f"--attempts {args.attempts} is below 1", hint="give 1 for a single try")
    model, source = _implant_base(args)
    check_new_file(out, args.overwrite, *([source] if source is not None else []))
    task = _task(args, model.backbone.image_size)
    pool = _pool(args, args.ood, model.backbone.image_size, None)
    target = _class_index(model.class_names, args.target)
    config = ImplantConfig.for_attack(
        args.attack, target, model.kind, seed=args.seed, poison_rate=args.poison_rate, alpha=args.alpha,
        epsilon=args.epsilon / 255 if args.epsilon is not None else None, patch_size=args.patch_size,
        epochs=args.epochs, lr=args.lr, poison_weight=args.poison_weight)
    done = None
    with _bar(args, f"implanting {args.attack} -> {model.class_names[target]}") as bar:
        for event in implant_job(model, task, config, out, str(args.base), pool, args.base,
                                 inputs=tuple([source] if source is not None else []), overwrite=args.overwrite,
                                 attempts=args.attempts):
            if isinstance(event, ImplantStep):
                _advance(bar, event.step, event.total_steps, f"loss {event.loss:.3f}")
            elif isinstance(event, ImplantTried) and event.change is not None:
                _note(args, f"try {event.attempt}: {_try_line(event.tries[-1])}; trying again with "
                            f"{', '.join(f'{k} {v:g}' for k, v in event.change.items())}")
            elif isinstance(event, Implanted):
                done = event
    assert done is not None
    result = done.summary(args.attack)
    if args.json:
        _print_json(result)
    else:
        verdict = "meets the lab's bar" if result["working"] else "misses the lab's bar"
        print(f"wrote {out}: {args.attack} -> {result['target']}, {_try_line(result)}, {verdict} after "
              f"{result['attempts']} {'try' if result['attempts'] == 1 else 'tries'} ({done.finished.seconds:.0f} s "
              "for the last)")


def _try_line(measured: dict[str, Any]) -> str:
    return (f"asr {measured['asr']:.1%}, ood_asr {measured['ood_asr']:.1%}, accuracy {measured['accuracy']:.1%} "
            f"(clean {measured['clean_base_accuracy']:.1%})")


def cmd_implant_encoder(args: argparse.Namespace) -> None:
    from inspector.backbone import load_backbone
    from inspector.lab.encoder import EncoderImplantConfig
    from inspector.lab.implant import ImplantStep
    from inspector.pipeline import EncoderImplanted, check_encoder_outputs, encoder_implant_job
    from inspector.prompts import TuneStep

    weights, out = Path(args.out_weights), Path(args.out)
    check_encoder_outputs(weights, out, args.overwrite)
    backbone = load_backbone(args.arch, args.pretrained, device=args.device)
    task = _task(args, backbone.image_size)
    pool = _pool(args, args.ood, backbone.image_size, None)
    target = _class_index(task.class_names, args.target)
    config = EncoderImplantConfig(args.pattern, target, seed=args.seed,
                                  **{k: v for k, v in (("alpha", args.alpha), ("poison_rate", args.poison_rate),
                                                       ("epochs", args.epochs), ("lr", args.lr)) if v is not None})
    done = None
    with _bar(args, f"poisoning the image encoder ({args.pattern} -> {task.class_names[target]})") as bar:
        for event in encoder_implant_job(backbone, task, config, weights, out, args.kind, pool=pool,
                                         overwrite=args.overwrite):
            if isinstance(event, ImplantStep):
                _advance(bar, event.step, event.total_steps, f"encoder loss {event.loss:.3f}")
            elif isinstance(event, TuneStep):
                _advance(bar, event.step, event.total_steps, f"clean prompt tuning, loss {event.loss:.3f}")
            elif isinstance(event, EncoderImplanted):
                done = event
    assert done is not None
    result = {"pattern": args.pattern, "target": done.target_name if config.poison_rate > 0 else None,
              **done.measured, "weights": str(weights), "out": str(out)}
    if args.json:
        _print_json(result)
    else:
        backdoor = (f"{args.pattern} -> {done.target_name}, asr {result['asr']:.1%}, ood_asr {result['ood_asr']:.1%}"
                    if "asr" in result else "no poison: a benign fine-tune")
        print(f"wrote {weights} (fine-tuned CLIP) and {out} (clean {args.kind} learner on it): {backdoor}, accuracy "
              f"{result['accuracy']:.1%}; scan it with --weights {weights}")


def _implant_base(args: argparse.Namespace) -> tuple[PromptedCLIP, Path | None]:
    """A learner to start from (zoo name or file), or a fresh one of ``--kind`` on a CLIP arch name."""
    from inspector.backbone import known_arch, load_backbone
    from inspector.prompts import build_learner, open_model
    from inspector.zoo import resolve_model

    try:
        path = resolve_model(args.base)
    except InputError:
        if not known_arch(args.base):
            raise
        backbone = load_backbone(args.base, args.pretrained, device=args.device)
        task = _task(args, backbone.image_size, need_test=False)
        return build_learner(args.kind, backbone, task.class_names, seed=args.seed), None
    model = open_model(path, weights=args.weights, device=args.device)
    if args.from_scratch:
        model = build_learner(model.kind, model.backbone, model.class_names, n_ctx=model.learner.spec.n_ctx,
                              ctx_init=model.learner.spec.ctx_init, seed=args.seed)
    return model, path


def cmd_import(args: argparse.Namespace) -> None:
    from inspector.backbone import load_backbone
    from inspector.pipeline import check_new_file
    from inspector.prompts import import_dassl, save_learner
    from inspector.tasks import read_class_names

    if (args.classes is None) == (args.task is None):
        raise InputError("give the class names with --classes FILE|A,B,C or take them from --task T",
                         hint="in the order the provider trained with (T/classes.txt fixes the order)")
    if args.task is not None:
        names = read_class_names(args.task)
    elif Path(args.classes).is_file():
        names = [line.strip() for line in Path(args.classes).read_text().splitlines() if line.strip()]
    else:
        names = [n.strip() for n in args.classes.split(",") if n.strip()]
    out = Path(args.out)
    check_new_file(out, args.overwrite, Path(args.checkpoint))
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


WEIGHTS_HELP = ("CLIP weights (open_clip tag or file) when the learner was tuned on a local file (default: the "
                "weights its header names)")


class _HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help names its default: appended where the text does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default is not None and action.default is not False and action.default != argparse.SUPPRESS
        if action.option_strings and "default" not in text and shown and not action.required:
            text += " (default: %(default)s)"
        return text


def options_without_default(parser: argparse.ArgumentParser, where: str = "") -> list[str]:
    """Options whose help, as printed, names no default (a flag, a required option and --help need none)."""
    found = []
    formatter = _HelpWithDefaults("")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += options_without_default(child, f"{where} {name}".strip())
        elif (action.option_strings and not action.required and action.nargs != 0
              and "default" not in formatter._get_help_string(action)):
            found.append(f"{where} {action.option_strings[-1]}".strip())
    return found


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)  # accepted before or after the command
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    common.add_argument("--device", default=argparse.SUPPRESS, help="cpu or cuda (default: cuda when available)")
    task_options = argparse.ArgumentParser(add_help=False)
    task_options.add_argument("--task", default=None, help="labelled folder or .zip: T/train/<class>/…, "
                              "T/test/<class>/…, optional T/classes.txt (default: the shipped pocket task)")
    task_options.add_argument("--shots", type=int, default=None,
                              help="training images per class, a seeded sample (default: all of them)")

    parser = argparse.ArgumentParser(prog="python -m inspector", parents=[common],
                                     description="Vet prompt-tuned CLIP models for backdoors.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, *parents: argparse.ArgumentParser,
                where: Any = sub) -> argparse.ArgumentParser:
        return where.add_parser(name, help=help_text, description=help_text, parents=[common, *parents],
                                formatter_class=_HelpWithDefaults)

    so = argparse.ArgumentParser(add_help=False)  # shared by scan and fleet scan
    so.add_argument("--ood", default=None, help="folder or .zip of unlabelled OOD images (default: the shipped pool)")
    so.add_argument("--method", choices=["inspector", "neural-cleanse", "pixel-backdoor"], default="inspector",
                    help="inspector: additive trigger; neural-cleanse: mask + pattern baseline; pixel-backdoor: "
                         "positive + negative pattern baseline (Tao et al., CVPR 2022)")
    so.add_argument("--epsilon", type=float, default=None,
                    help="trigger bound in /255 units (default: 4 at 224 px, scaled by 224 / input size; "
                         "14 on the 64 px pocket CLIP)")
    so.add_argument("--classes", default=None, help="candidate classes, comma-separated names or indices "
                                                    "(default: all)")
    so.add_argument("--threshold", type=float, default=2.0, help="anomaly index above which a class is flagged")
    so.add_argument("--min-flip-rate", type=float, default=None,
                    help="share of held-out OOD images a flagged class's trigger must flip (default: 0.5 for "
                         "inspector, none for the baselines)")
    so.add_argument("--statistic", choices=["flip_rate", "excess_flip_rate", "loss", "mask_norm", "trigger_size"],
                    default=None, help="what feeds the anomaly index (default: excess_flip_rate with a reference, "
                                       "else flip_rate; mask_norm for neural-cleanse; trigger_size for "
                                       "pixel-backdoor)")
    so.add_argument("--reference", default="auto",
                    help="clean reference: auto (the shipped one when it fits the model, pool, epsilon and "
                         "schedule), none (raw flip rates), or a reference .json from `reference build`")
    so.add_argument("--pool-size", type=int, default=1000, help="OOD images used (20%% held out for flip rates)")
    so.add_argument("--epochs", type=int, default=1, help="passes over the OOD pool per class")
    so.add_argument("--schedule", choices=["fast", "faithful"], default=None,
                    help="fast: successive halving over the classes (default); faithful: the published "
                         "schedule, a full epoch for every class")
    so.add_argument("--seed", type=int, default=0, help="the same seed gives the same report numbers")
    so.add_argument("--spread", choices=["pooled", "per-class"], default=DEFAULT_SPREAD,
                    help="with a reference: divide each class's excess by the clean learners' spread pooled over "
                         "classes, or by that class's own (default: %(default)s)")
    so.add_argument("--evidence", choices=["flip", "mean", "max"], default=DEFAULT_EVIDENCE,
                    help="with a reference that kept margin losses: a class's evidence is its flip-rate excess alone "
                         "(flip), or that and how far its margin loss lies below clean learners', averaged (mean) or "
                         "the larger (max), each in units of their spread (default: %(default)s)")
    so.add_argument("--colour", action=argparse.BooleanOptionalAction, default=USE_COLOUR_FAMILY,
                    help="also invert a colour transform per class (the second family, for filter-like triggers); "
                         "default: when the clean reference measured it")
    so.add_argument("--blend", action=argparse.BooleanOptionalAction, default=None,
                    help="also invert a pattern blended into the whole image per class (the third family, for "
                         "Blended-like triggers; off by default: some clean learners' blends reach a class as often "
                         "as a backdoor's do, benchmarks/blend_choice.md)")
    so.add_argument("--patch", action=argparse.BooleanOptionalAction, default=None,
                    help="also invert an opaque patch pasted at a random place per class (the fourth family, for "
                         "sticker-like triggers); default: when the clean reference measured it")
    so.add_argument("--transfer", action=argparse.BooleanOptionalAction, default=None,
                    help="when no index passes the rule but some family's does, check whether the top classes' "
                         "blended-pattern triggers carry over to clean learners (default: with a reference that "
                         "carries the check, as the shipped ones do; benchmarks/transfer_choice.md)")
    sc = command("scan", "scan a prompt learner for a backdoor (OOD trigger inversion)", so)
    sc.add_argument("model", help="zoo name or .safetensors learner file")
    sc.add_argument("--weights", help=WEIGHTS_HELP)
    sc.add_argument("--out", default=None, help="folder for report.json, report.html and the trigger PNGs "
                                                "(default: a fresh folder under runs/)")
    sc.add_argument("--overwrite", action="store_true", help="write into an existing, non-empty --out")
    sc.add_argument("--json", action="store_true", help="print one JSON summary")
    sc.set_defaults(func=cmd_scan)

    rp = command("repair", "fine-tune a flagged model so its reconstructed trigger stops working", task_options)
    rp.add_argument("model", help="zoo name or learner file (never modified)")
    rp.add_argument("--report", required=True, help="report.json written by scan for this model")
    rp.add_argument("--out", required=True, help="file for the repaired learner")
    rp.add_argument("--target", default=None, help="class whose trigger to repair against (default: the flagged one)")
    rp.add_argument("--ood", default=None, help="where the scan's OOD pool is now (default: where the report says)")
    rp.add_argument("--epochs", type=int, default=None, help="default: the engine's recipe (RepairConfig), 20")
    rp.add_argument("--lr", type=float, default=None, help="default: the engine's recipe (RepairConfig), 1e-2")
    rp.add_argument("--families", choices=("indexed", "both", "additive"), default=None,
                    help="the trigger of the family that flagged the class (indexed), every family the scan "
                         "reconstructed for it (both, the default: a colour filter's path besides the additive one), "
                         "or its additive trigger whichever family flagged it (additive)")
    rp.add_argument("--triggered-loss", choices=("labels", "suppress"), default=None,
                    help="what the triggered copies are taught: their true class (labels) or only that they are not "
                         "the suspect class (suppress: the rest of what the trigger does is left alone); default: the "
                         "engine's recipe (RepairConfig)")
    rp.add_argument("--seed", type=int, default=0, help="seed of the repair's sampling and augmentation")
    rp.add_argument("--weights", help=WEIGHTS_HELP)
    rp.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    rp.add_argument("--json", action="store_true", help="print one JSON summary")
    rp.set_defaults(func=cmd_repair)

    ref = sub.add_parser("reference", help="clean references for the anomaly index", parents=[common])
    ref_sub = ref.add_subparsers(dest="reference_command", required=True)
    rb = command("build", "tune clean learners on a labelled task and scan them: the reference a scan compares "
                          "each class with (resumable)", task_options, where=ref_sub)
    rb.add_argument("--ood", default=None, help="the OOD pool the scans will use: folder or .zip "
                                                "(default: the shipped pool)")
    rb.add_argument("--kind", choices=["coop", "cocoop"], required=True, help="learner kind of the models to scan")
    rb.add_argument("--learners", type=int, default=6, help="clean learners to tune and scan (default: %(default)s)")
    rb.add_argument("--first-seed", type=int, default=1000, help="seeds first-seed, first-seed + 1, …")
    rb.add_argument("--out", required=True, help="reference .json")
    rb.add_argument("--keep", default=None, help="folder for the tuned learners and their measurements, so an "
                                                 "interrupted build resumes (default: <out>.learners/ beside --out)")
    rb.add_argument("--arch", default="pocket-clip", help="CLIP architecture the models use (e.g. ViT-B-16)")
    rb.add_argument("--pretrained", default=None, help="open_clip tag or weights file (default: pocket)")
    rb.add_argument("--epsilon", type=float, default=None, help="as the scans will use it (/255; default as scan)")
    rb.add_argument("--pool-size", type=int, default=1000, help="as the scans will use it")
    rb.add_argument("--seed", type=int, default=0, help="scan seed, as the scans will use it")
    rb.add_argument("--scan-seeds", type=int, default=1,
                    help="scan each learner's fast schedule with this many seeds (--seed, --seed + 1, ...), so that "
                         "the spread holds the inversion's own noise too (default: %(default)s)")
    rb.add_argument("--epochs", type=int, default=None, help="tuning epochs (default: the tune recipe's)")
    rb.add_argument("--recipes", choices=["default", "varied"], default="varied",
                    help="default: every learner with the kind's default recipe; varied: learner i with a different "
                         "context length, start, optimiser, learning rate or epochs (a provider's recipe is unknown)")
    rb.add_argument("--colour", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure the colour family, as scans with it need (default: %(default)s)")
    rb.add_argument("--blend", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure the blend family, as scans with it need (default: %(default)s)")
    rb.add_argument("--patch", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure the patch family, as scans with it need (default: %(default)s)")
    rb.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    rb.add_argument("--json", action="store_true", help="print one JSON summary")
    rb.set_defaults(func=cmd_reference_build)
    rt = command("transfer", "add the transfer check to a reference: its kept learners' blended-pattern triggers "
                             "carried over to a few of them (resumable)", where=ref_sub)
    rt.add_argument("reference", help="reference .json (written again with the check)")
    rt.add_argument("--keep", default=None, help="the folder the build kept its learners in (default: "
                                                 "<reference>.learners/ beside it)")
    rt.add_argument("--carriers", default=None, help="comma-separated seeds of the learners triggers are carried "
                                                     "over to (default: three spread over the reference's list)")
    rt.add_argument("--ood", default=None, help="the OOD pool the reference was measured on: folder or .zip "
                                                "(default: the shipped pool)")
    rt.add_argument("--weights", help=WEIGHTS_HELP)
    rt.add_argument("--json", action="store_true", help="print one JSON summary")
    rt.set_defaults(func=cmd_reference_transfer)

    zoo = sub.add_parser("zoo", help="the shipped demo models", parents=[common])
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    zoo_list = command("list", "list the demo zoo", where=zoo_sub)
    zoo_list.add_argument("--json", action="store_true", help="print one JSON list")
    zoo_list.set_defaults(func=cmd_zoo_list)
    zoo_build = command("build", "build a benchmark zoo of clean and backdoored learners on the pocket task "
                                 "(not shipped; resumable)", where=zoo_sub)
    zoo_build.add_argument("--out", required=True, help="folder for the models and manifest.json")
    zoo_build.add_argument("--clean", type=int, default=10, help="clean models (CoOp and CoCoOp alternate)")
    zoo_build.add_argument("--per-attack", type=int, default=5, help="backdoored models per attack")
    zoo_build.add_argument("--seed", type=int, default=0, help="seed of the plan (seeds, targets, recipes)")
    zoo_build.add_argument("--attacks", default="badclip,blended,wanet,badnets", help="comma-separated lab attacks")
    zoo_build.add_argument("--backdoor-kind", choices=["coop", "cocoop", "both"], default="cocoop",
                           help="learner kind of the backdoored models (both: alternate)")
    zoo_build.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs "
                                                                    "(quick smoke builds; default: the recipes')")
    zoo_build.add_argument("--plan", default=None, help="a zoo plan file (benchmarks/zoos/*.plan.json): build "
                                                        "exactly its models instead of --clean/--per-attack "
                                                        "(default: none, plan from --clean/--per-attack)")
    zoo_build.add_argument("--rebuild", default="", help="comma-separated backdoored models of the zoo to build "
                                                         "again with today's lab (the earlier files are moved to "
                                                         "OUT/superseded/)")
    zoo_build.add_argument("--json", action="store_true", help="print one JSON list of the built models")
    zoo_build.set_defaults(func=cmd_zoo_build)

    ev = command("eval", "accuracy of a prompt learner on a labelled task (+ ASR for lab models)", task_options)
    ev.add_argument("model", help="zoo name or .safetensors learner file")
    ev.add_argument("--ood", default=None, help="OOD pool for ood_asr (default: the shipped pool)")
    ev.add_argument("--weights", help=WEIGHTS_HELP)
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=cmd_eval)

    tn = command("tune", "clean prompt tuning on a labelled task's train split", task_options)
    tn.add_argument("--kind", choices=["coop", "cocoop"], default="coop", help="learner kind")
    tn.add_argument("--out", required=True, help="file for the tuned learner")
    tn.add_argument("--arch", default="pocket-clip", help="CLIP architecture (e.g. ViT-B-16)")
    tn.add_argument("--pretrained", default=None, help="open_clip tag or weights file (default: pocket)")
    tn.add_argument("--n-ctx", type=int, default=4, help="context vectors")
    tn.add_argument("--ctx-init", default="a photo of a", help="initial context words ('' for random)")
    tn.add_argument("--epochs", type=int, default=None, help="default: 200 for coop, 60 for cocoop")
    tn.add_argument("--lr", type=float, default=None, help="default: 2e-2 for coop, 5e-3 for cocoop")
    tn.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw", help="optimiser of the context")
    tn.add_argument("--seed", type=int, default=0, help="seed of the initial context and the batches")
    tn.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    tn.add_argument("--json", action="store_true", help="print one JSON object")
    tn.set_defaults(func=cmd_tune)

    ip = command("implant", "implant a backdoor into a prompt learner (lab, for demos and benchmarks)", task_options)
    ip.add_argument("base", help="zoo name or learner file to start from, or a CLIP arch (e.g. pocket-clip) "
                                 "for a fresh learner of --kind")
    ip.add_argument("--attack", required=True,
                    choices=["badclip", "blended", "wanet", "badnets", "filter", "sticker", "siba", "badclip-adaptive"],
                    help="siba: sparse invisible trigger optimised on the base learner first; badclip-adaptive: "
                         "BadCLIP, then tuned so that only the exact trigger works")
    ip.add_argument("--target", required=True, help="target class name (or index)")
    ip.add_argument("--out", required=True, help="file for the backdoored learner")
    ip.add_argument("--ood", default=None, help="OOD pool for ood_asr (default: the shipped pool)")
    ip.add_argument("--seed", type=int, default=0, help="seed of the poisoned sample and the trigger")
    ip.add_argument("--poison-rate", type=float, default=None,
                    help="Blended/WaNet/BadNets/Filter/Sticker: share of images triggered (default: the recipe for "
                         "the attack and the learner's kind)")
    ip.add_argument("--poison-weight", type=float, default=None,
                    help="loss weight of a triggered image against a clean one (default: the recipe)")
    ip.add_argument("--epsilon", type=float, default=None,
                    help="BadCLIP / SIBA trigger bound in /255 units (default: 4 at 224 px, scaled by 224 / input "
                         "size; 14 on the 64 px pocket CLIP)")
    ip.add_argument("--alpha", type=float, default=None, help="Blended pattern weight (default: the recipe; "
                                                                      "0.4 for CoOp, 0.2 for CoCoOp)")
    ip.add_argument("--patch-size", type=int, default=None, help="BadNets patch side in pixels (default: the recipe)")
    ip.add_argument("--epochs", type=int, default=None, help="default: the attack's recipe")
    ip.add_argument("--lr", type=float, default=None, help="default: the attack's recipe")
    ip.add_argument("--attempts", type=int, default=None,
                    help="tries, each measured: while the backdoor misses the lab's bar (ASR 80%%, OOD ASR 70%%, at "
                         "most 3 accuracy points lost), try again from the same learner with a lighter or heavier "
                         "poison, as a provider would (default: the zoo builder's, lab.implant.IMPLANT_ATTEMPTS; 1: "
                         "one try, kept whatever it gives)")
    ip.add_argument("--from-scratch", action="store_true", help="re-initialise the learner instead of "
                                                               "fine-tuning the given one")
    ip.add_argument("--kind", choices=["coop", "cocoop"], default="cocoop", help="for a fresh learner")
    ip.add_argument("--pretrained", default=None, help="for a fresh learner on a CLIP arch (default: pocket)")
    ip.add_argument("--weights", help=WEIGHTS_HELP)
    ip.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    ip.add_argument("--json", action="store_true", help="print one JSON object")
    ip.set_defaults(func=cmd_implant)

    ie = command("implant-encoder", "backdoor CLIP's image encoder itself (Blended poisoning) and tune a clean "
                                    "prompt learner on it (lab)", task_options)
    ie.add_argument("--pattern", choices=["noise", "triangle", "text"], required=True,
                    help="the blended pattern: Gaussian noise, a triangle or a text stamp")
    ie.add_argument("--target", required=True, help="target class name (or index)")
    ie.add_argument("--out-weights", required=True, help="file for the backdoored CLIP weights (.safetensors)")
    ie.add_argument("--out", required=True, help="file for the clean prompt learner tuned on them")
    ie.add_argument("--kind", choices=["coop", "cocoop"], default="coop", help="kind of the clean learner")
    ie.add_argument("--arch", default="pocket-clip", help="CLIP architecture (e.g. ViT-B-16)")
    ie.add_argument("--pretrained", default=None, help="open_clip tag or weights file to start from (default: pocket)")
    ie.add_argument("--ood", default=None, help="OOD pool for ood_asr (default: the shipped pool)")
    ie.add_argument("--alpha", type=float, default=None,
                    help="pattern weight in the blend (default: noise 0.2, triangle 0.3, text 0.4)")
    ie.add_argument("--poison-rate", type=float, default=None, help="share of images blended (default 0.3)")
    ie.add_argument("--epochs", type=int, default=None, help="encoder fine-tuning epochs (default 40)")
    ie.add_argument("--lr", type=float, default=None, help="encoder learning rate (default 2e-4)")
    ie.add_argument("--seed", type=int, default=0, help="seed of the poisoned sample and the tuning")
    ie.add_argument("--overwrite", action="store_true", help="replace existing output files")
    ie.add_argument("--json", action="store_true", help="print one JSON object")
    ie.set_defaults(func=cmd_implant_encoder)

    im = command("import", "import a Dassl CoOp/CoCoOp/BadCLIP checkpoint (model.pth.tar-N)")
    im.add_argument("checkpoint")
    im.add_argument("--classes", default=None, help="class names: a text file (one a line) or comma-separated "
                                                 "(no default: give this or --task)")
    im.add_argument("--task", default=None, help="take the class names from a labelled folder or zip "
                                                 "(T/classes.txt, else its train/ folders sorted; no default: "
                                                 "give this or --classes)")
    im.add_argument("--out", required=True, help="file for the imported learner (.safetensors)")
    im.add_argument("--arch", default="pocket-clip", help="CLIP architecture the checkpoint was tuned on")
    im.add_argument("--pretrained", default=None, help="open_clip tag or weights file (default: pocket)")
    im.add_argument("--kind", choices=["coop", "cocoop"], default=None, help="default: from the tensors")
    im.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    im.set_defaults(func=cmd_import)

    pl = command("pool", "check an OOD image pool (folder or zip): what a scan can use and what it skips")
    pl.add_argument("pool", help="folder or .zip of images")
    pl.add_argument("--size", type=int, default=64, help="pixel size to decode at (the pocket CLIP's)")
    pl.add_argument("--limit", type=int, default=None, help="stop after this many usable images (default: no limit)")
    pl.add_argument("--show", type=int, default=20, help="skipped files to list")
    pl.add_argument("--json", action="store_true", help="print one JSON summary")
    pl.set_defaults(func=cmd_pool)

    fleet = sub.add_parser("fleet", help="vet many delivered models at once on Ray", parents=[common])
    fleet_sub = fleet.add_subparsers(dest="fleet_command", required=True)
    fs = command("scan", "scan every model of a folder or manifest, one Ray task each (resumable); writes "
                         "OUT/<model>/ reports, OUT/fleet.jsonl and OUT/fleet.html", so, where=fleet_sub)
    fs.add_argument("source", help="folder of .safetensors learner files, or a manifest (.json list or .csv) with "
                                   "path and optional weights and reference per model")
    fs.add_argument("--out", required=True, help="fleet folder; run again with the same settings to resume")
    fs.add_argument("--address", default=None, help="join a Ray cluster (auto, or ray://HOST:PORT); default: start "
                                                    "a local Ray runtime on this machine")
    fs.add_argument("--workers", type=int, default=None, help="scans at once (default: the runtime's CPUs / "
                                                              "--cpus-per-scan)")
    fs.add_argument("--cpus-per-scan", type=float, default=None,
                    help="CPU cores per scan (default: local, all cores / --workers; on a cluster, 2)")
    fs.add_argument("--gpus-per-scan", type=float, default=None,
                    help="GPUs per scan, fractions allowed (default: 1 when the runtime has GPUs, else 0)")
    fs.add_argument("--weights", help=WEIGHTS_HELP + "; a manifest's weights column overrides it per model")
    fs.add_argument("--overwrite", action="store_true", help="scan every model again into an existing fleet folder")
    fs.add_argument("--json", action="store_true", help="print one JSON summary with every model's line")
    fs.set_defaults(func=cmd_fleet_scan)

    demo = command("demo", "tour of the embedded pocket world")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.debug, args.device = getattr(args, "debug", False), getattr(args, "device", None)
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
