"""Peak memory and throughput of a whole `distill generate` as the run grows, with every stage on.

Usage: python benchmarks/scale.py [--sizes 1000,10000,30000] [--docs 170] [--no-judge]

For each size, a fresh Python process builds a config over the project's corpus (copied to --docs documents), with
every stage on: exact and near-duplicate dedup, coverage with the mix top-up (`max_extra_conversations` left at its
default, half the run), the offline judge (`judge.enabled: true`, unless --no-judge) and the export; it runs
`generate` on the offline teacher and prints the conversations asked, requested (with the top-up), the wall time,
conversations requested per second and the peak RSS of the process (`ru_maxrss`, which includes the interpreter and
the imports). The target of issue 15: peak RSS at 30k within 1.2x of the 1k figure and under 500 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from distill.config import config_from_dict
from distill.generation.pipeline import generate

work, size, judge = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
raw = {
    "name": "scale",
    "tools": [{"name": "Vector Search Tool", "description": "Searches the docs.", "kind": "retriever", "top_k": 3}],
    "sources": [{"path": "docs"}],
    "teacher": {"provider": "offline"},
    "generation": {"conversations": size, "seed": 0},
    "judge": {"enabled": judge},
}
config = config_from_dict(raw, file=str(work / "scale.yaml"), base_dir=work)
started = time.perf_counter()
result = generate(config, work / "run", progress=False)
elapsed = time.perf_counter() - started
c = result.conversations
print(json.dumps({"asked": size, "requested": c["requested"], "accepted": c["accepted"], "seconds": elapsed,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,30000")
    parser.add_argument("--docs", type=int, default=170, help="documents (copies of the corpus files)")
    parser.add_argument("--no-judge", action="store_true", help="leave the (offline) judge stage off")
    parser.add_argument("--keep", action="store_true", help="keep the run folders (printed)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="distill-scale-"))
    docs = work / "docs"
    docs.mkdir()
    files = sorted((REPO / "corpus").glob("*.md"))
    for i in range(args.docs):
        src = files[i % len(files)]
        shutil.copy(src, docs / f"{i:04d}-{src.name}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    print(f"{args.docs} documents; every stage on (dedup, coverage + mix top-up, "
          f"{'no judge' if args.no_judge else 'offline judge'}, export); load average {os.getloadavg()[0]:.2f}")
    print(f"{'asked':>8} {'requested':>10} {'accepted':>9} {'wall s':>8} {'conv/s':>8} {'peak RSS MB':>12}")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        run = work / f"n{size}"
        run.mkdir()
        (run / "docs").symlink_to(docs)
        out = subprocess.run([sys.executable, "-c", CHILD, str(run), str(size), "0" if args.no_judge else "1"],
                             env=env, capture_output=True, text=True, check=False)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"the {size:,} run failed")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{size:>8,} {row['requested']:>10,} {row['accepted']:>9,} {row['seconds']:>8.1f} "
              f"{row['requested'] / row['seconds']:>8,.0f} {row['peak_mb']:>12,.0f}", flush=True)
        if not args.keep:
            shutil.rmtree(run, ignore_errors=True)
    if len(rows) > 1:
        ratio = rows[-1]["peak_mb"] / rows[0]["peak_mb"]
        print(f"peak RSS {rows[-1]['asked']:,} / {rows[0]['asked']:,}: {ratio:.2f}x (target <= 1.2x and < 500 MB); "
              f"load average {os.getloadavg()[0]:.2f}")
    if args.keep:
        print(f"run folders under {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    sys.exit(main())
