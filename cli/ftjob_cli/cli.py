"""The `ftjob` command: validate manifests, inspect what a job will train on, print the CRD,
run a job locally, draw a run."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ftjob_api import api, contract
from ftjob_api.manifest_reader import read_manifest
from ftjob_api.manifests import ManifestError
from ftjob_api.problems import errors
from ftjob_api.validation import validate_document


# Exit codes of the `ftjob` command (docs/exit-codes.md).
EXIT_OK = 0
EXIT_INVALID = 1  # validate: a file is unreadable, not YAML, or holds an invalid FineTuneJob
EXIT_USAGE = 2  # bad arguments; `run --local`: the manifest cannot be run (message says why)
EXIT_INTERNAL = 3  # a bug in ftjob: one line on stderr, the traceback with FTJOB_DEBUG=1
EXIT_WARNINGS = 4  # inspect --strict: the data has problems (the warnings say which)


def cmd_validate(args: argparse.Namespace) -> int:
    """Exit 0 only when every FineTuneJob in every file is valid."""
    failed = False
    checked = 0
    for path in args.files:
        try:
            documents = read_manifest(path)
        except ManifestError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
            continue
        if not documents:
            print(f"error: {path}: no documents", file=sys.stderr)
            failed = True
        for doc in documents:
            body = doc.body
            if isinstance(body, dict) and body.get("kind") not in (api.KIND, None):
                if not args.quiet:
                    print(f"{doc.label}: skipped ({body.get('kind')} is not a {api.KIND})",
                          file=sys.stderr)
                continue
            checked += 1
            problems = validate_document(body)
            for problem in problems:
                stream = sys.stdout if problem.severity == "error" else sys.stderr
                print(f"{doc.locate(problem.path)}: {problem.severity}: {problem}", file=stream)
            if errors(problems):
                failed = True
            elif not args.quiet:
                print(f"{doc.label}: valid", file=sys.stderr)
    if checked == 0 and not failed:
        print(f"error: no {api.KIND} found in {', '.join(args.files)}", file=sys.stderr)
        return 1
    return 1 if failed else 0


def cmd_crd(args: argparse.Namespace) -> int:
    from ftjob_api.crd import render_crd_yaml

    text = render_crd_yaml()
    if args.output:
        with open(args.output, "w") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if not args.local:
        print("error: only `ftjob run FILE --local` exists; to run on a cluster use "
              "`kubectl apply -f FILE`", file=sys.stderr)
        return 2
    try:
        from ftjob_trainer.local import run_local
    except ImportError as exc:
        print(f"error: `ftjob run --local` needs the trainer extra (pip install 'ftjob[trainer]'): "
              f"{exc}", file=sys.stderr)
        return 2
    try:
        read_manifest(args.file)  # the strict reader first: one line for any bytes
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run_local(args.file, nproc=args.nproc, output=args.output, job_name=args.name,
                         push=args.push, plain_http=args.plain_http)
    except OSError as exc:  # e.g. an output folder that cannot be created
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE


def cmd_inspect(args: argparse.Namespace) -> int:
    """Exit 0 with the figures; 1 when the manifest or its data cannot be used (the
    trainer would fail the job the same way); 4 with --strict when there are warnings."""
    try:
        from ftjob_trainer import inspection, inspection_view
        from ftjob_trainer.exits import TrainerError
        from ftjob_trainer.local import LocalJobError, read_local_job
    except ImportError as exc:
        print(f"error: `ftjob inspect` needs the trainer extra (pip install 'ftjob[trainer]'): "
              f"{exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        # Libraries that print on import (DeepSpeed's accelerator notice) must not mix
        # into the figures on stdout.
        with contextlib.redirect_stdout(sys.stderr):
            metadata, spec = read_local_job(args.file, args.name)
            rate, rate_from = args.steps_per_second, "--steps-per-second"
            if args.from_run:
                rate = inspection.trainer_steps_per_second(Path(args.from_run))
                rate_from = f"measured in {args.from_run}"
            inspected = inspection.prepare(api.parse_spec(spec), args.split)
            report = inspection.report(inspected, rate, rate_from if rate else None)
            shown = inspection_view.examples(inspected, args.split or "train", args.show)
    except LocalJobError as exc:
        exc.print()
        return EXIT_INVALID
    except (TrainerError, FileNotFoundError) as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        import json

        print(json.dumps({"name": metadata["name"], **report,
                          **({"examples": shown} if args.show else {})}, indent=1))
    else:
        from rich.console import Console

        inspection_view.print_report(report, shown, metadata["name"], Console(soft_wrap=True))
    return EXIT_WARNINGS if args.strict and report["warnings"] else EXIT_OK


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def cmd_report(args: argparse.Namespace) -> int:
    try:
        from ftjob_trainer.report import report
    except ImportError as exc:
        print(f"error: `ftjob report` needs the trainer extra and matplotlib: {exc}",
              file=sys.stderr)
        return 2
    try:
        path = report(Path(args.dir), Path(args.output) if args.output else None)
    except ImportError as exc:
        print(f"error: `ftjob report` needs matplotlib (pip install matplotlib): {exc}",
              file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftjob", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check FineTuneJob manifests before kubectl apply")
    validate.add_argument("files", nargs="+", metavar="FILE", help="YAML files (multi-document)")
    validate.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    validate.set_defaults(func=cmd_validate)

    inspect = sub.add_parser(
        "inspect", help="what a job will train on (tokens, truncation, masking, packing) and "
        "how many steps it takes, through the trainer's own data path, before any GPU is held")
    inspect.add_argument("file", metavar="FILE", help="a FineTuneJob manifest (local files or "
                         "a dataset this machine can reach)")
    inspect.add_argument("--split", choices=("train", "eval", "test"),
                         help="only this split (default: every split the job has)")
    inspect.add_argument("--show", type=int, default=0, metavar="N",
                         help="print the first N examples with the trained tokens set apart")
    inspect.add_argument("--json", action="store_true", help="every figure as JSON on stdout")
    inspect.add_argument("--strict", action="store_true",
                         help=f"exit {EXIT_WARNINGS} when there is any warning")
    rate = inspect.add_mutually_exclusive_group()
    rate.add_argument("--steps-per-second", type=_positive, metavar="RATE",
                      help="optimizer steps per second, for the wall time and GPU-hours")
    rate.add_argument("--from-run", metavar="DIR", help="take the step rate from a finished "
                      "run's output folder (its trainer_state.json)")
    inspect.add_argument("--name", help="which job, when FILE holds several")
    inspect.set_defaults(func=cmd_inspect)

    crd = sub.add_parser("crd", help="print the FineTuneJob CustomResourceDefinition")
    crd.add_argument("-o", "--output", help="write to this file instead of stdout")
    crd.set_defaults(func=cmd_crd)

    run = sub.add_parser("run", help="run a FineTuneJob on this machine with torchrun")
    run.add_argument("file", metavar="FILE", help="a FineTuneJob manifest")
    run.add_argument("--local", action="store_true", help="run here, not on a cluster")
    run.add_argument("--nproc", type=int, default=None,
                     help="training processes (default: GPUs in the spec, or 2 on CPU)")
    run.add_argument("--output", help="output folder (default ./ftjob-runs/<name>)")
    run.add_argument("--name", help="which job, when FILE holds several")
    run.add_argument("--push", metavar="REPOSITORY[:TAG]",
                     help="once trained, push the model to this OCI registry (as the "
                     "manifest's spec.output.oci; credentials from `docker login` or "
                     "FTJOB_PUSH_CONFIG, a private CA from FTJOB_REGISTRY_CA)")
    run.add_argument("--plain-http", action="store_true",
                     help="with --push: a registry without TLS (test registries only)")
    run.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="draw a run's loss, learning rate and eval metrics "
                            "(PNG)")
    report.add_argument("dir", metavar="DIR", help="the job's output folder (checkpoints, "
                        "trainer_state.json)")
    report.add_argument("-o", "--output", help="PNG to write (default DIR/report.png)")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last net: one line, never a traceback
        if contract.debugging(os.environ):
            raise
        print(f"error: internal error in ftjob {args.command} ({type(exc).__name__}: {exc}); "
              "please report it, with FTJOB_DEBUG=1 for the traceback", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
