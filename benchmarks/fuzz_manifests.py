"""Coverage-guided fuzzing of the manifest reader and validator (`ftjob validate`'s loader).

    python -m benchmarks.fuzz_manifests [--seconds 120] [--corpus DIR]

Runs atheris (libFuzzer for Python; `pip install atheris`) in a child process on
`manifest_reader.load_bytes` + `validate_document`, seeded with examples/*.yaml. The contract
under test: any bytes give documents of JSON values that validate without raising, or one
`ManifestError` line naming the file. Anything else is a crash; libFuzzer saves the input under
the artifact folder and the figures below report it. Prints execs, coverage (libFuzzer's `cov`
edges and `ft` features), corpus size and crashes. Not part of the test suite: the hypothesis
tests in tests/unit/api/test_manifest_reader.py run the same contract on every `make test`.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child() -> None:
    import atheris

    with atheris.instrument_imports():
        import yaml  # noqa: F401  (instrumented: the pure-Python scanner and parser)

        from ftjob_api import manifest_reader, manifests, validation

    def one_input(data: bytes) -> None:
        try:
            documents = manifest_reader.load_bytes(data, "fuzz.yaml")
        except manifests.ManifestError as exc:
            message = str(exc)
            if "\n" in message or not message.startswith("fuzz.yaml"):
                raise AssertionError(f"not one line naming the file: {message!r}") from None
            return
        for doc in documents:
            json.dumps(doc.body, allow_nan=False)
            for problem in validation.validate_document(doc.body):
                doc.locate(problem.path)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


_STATS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--corpus", help="keep the corpus here (default: a temporary folder)")
    args = parser.parse_args(sys.argv[1:])
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("fuzz_manifests: not run (pip install atheris)")
        return

    work = Path(tempfile.mkdtemp(prefix="ftjob-fuzz-"))
    corpus = Path(args.corpus) if args.corpus else work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        shutil.copy(example, corpus / example.name)
    artifacts = work / "crashes"
    artifacts.mkdir()
    command = [sys.executable, "-m", "benchmarks.fuzz_manifests", "--child",
               f"-max_total_time={args.seconds}", "-max_len=4096", "-timeout=10",
               "-rss_limit_mb=4096", f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
               str(corpus)]
    started = time.monotonic()
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    stats = _STATS.findall(run.stderr)
    execs, cov, ft, corp = (int(x) for x in stats[-1]) if stats else (0, 0, 0, 0)
    crashes = sorted(p.name for p in artifacts.iterdir())
    print(f"fuzz_manifests: {execs} inputs in {elapsed:.0f} s ({execs / max(elapsed, 1e-9):.0f}/s), "
          f"coverage {cov} edges / {ft} features, corpus {corp}, crashes {len(crashes)}")
    if crashes or run.returncode not in (0,):
        tail = "\n".join(run.stderr.splitlines()[-30:])
        print(f"fuzzer exit {run.returncode}; artifacts in {artifacts}: {', '.join(crashes)}\n"
              f"{tail}")
    if not args.corpus and not crashes:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if "--child" in sys.argv:
        sys.argv.remove("--child")
        child()
    else:
        main()
