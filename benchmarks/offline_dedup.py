"""How many distinct conversations the offline teacher writes when asked for more conversations than there are chunks.

Usage: python benchmarks/offline_dedup.py [N ...] [--judge]   (default 3000 10000 30000)

Builds a corpus of about 2,000 chunks of real, distinct prose — the project's corpus/, docs/ and README.md plus the
docstrings of the Python standard library's modules, classes and functions (sorted by module name, one file per
module, until the chunk count is reached; the exact text depends on the Python version, which is printed) — then
runs `distill generate` on the offline teacher with one retriever, the default mix, dedup and top-up, at each size.
Prints, per size: the duplicates dropped by export's dedup (count, and % of the conversations that reached it), the
extra conversations the mix top-up requested, and the accepted conversations and examples. With --judge, the offline
lexical judge is on too (its rejects are counted as well).
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHUNKS = 2000


def _stdlib_docstrings(module_file: Path) -> str:
    """The docstrings of a standard-library module, its classes and functions, as paragraphs."""
    try:
        tree = ast.parse(module_file.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return ""
    parts: list[str] = []
    for node in [tree, *ast.walk(tree)]:
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 120:
                parts.append(doc)
    return "\n\n".join(dict.fromkeys(parts))  # once each, in order


def build_corpus(folder: Path, chunks: int = CHUNKS) -> int:
    """Write the corpus into `folder`; returns the number of chunks distill cuts it into."""
    from distill.config import ChunkingConfig
    from distill.generation.sources import _chunk_text

    settings = ChunkingConfig()

    def chunk_text(text: str, settings: ChunkingConfig) -> list[str]:
        return _chunk_text(text, settings.max_chars, settings.overlap)

    total = 0
    files = [*sorted((REPO / "corpus").glob("*.md")), *sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
    for i, path in enumerate(files):
        text = path.read_text(encoding="utf-8")
        (folder / f"{i:04d}-{path.name}").write_text(text, encoding="utf-8")
        total += len(chunk_text(text, settings))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    modules = [p for p in stdlib.rglob("*.py") if not {"test", "tests", "idlelib", "site-packages"} & set(p.parts)]
    for path in sorted(modules, key=lambda p: p.relative_to(stdlib).as_posix()):
        if total >= chunks:
            break
        text = _stdlib_docstrings(path)
        if len(text) < 300:
            continue
        name = path.relative_to(stdlib).with_suffix("").as_posix().replace("/", ".")
        (folder / f"py-{name}.md").write_text(text, encoding="utf-8")
        total += len(chunk_text(text, settings))
    return total


def run(size: int, docs: Path, work: Path, judge: bool) -> dict[str, object]:
    from distill.config import config_from_dict
    from distill.generation.pipeline import generate

    config = config_from_dict(
        {
            "name": f"dedup-{size}",
            "tools": [{"name": "Vector Search Tool", "description": "Searches the docs.", "kind": "retriever",
                       "top_k": 3}],
            "sources": [{"path": str(docs)}],
            "teacher": {"provider": "offline"},
            "generation": {"conversations": size, "seed": 0},
            **({"judge": {"enabled": True}} if judge else {}),
        },
        file=str(work / "bench.yaml"),
        base_dir=work,
    )
    started = time.perf_counter()
    result = generate(config, work / f"run-{size}", progress=False)
    elapsed = time.perf_counter() - started
    manifest = json.loads(result.manifest.read_text(encoding="utf-8"))
    dropped = manifest["duplicates"]["dropped"]
    reasons = manifest["duplicates"]["by_reason"]
    judged = sum(n for r, n in manifest["rejects_by_reason"].items() if r.startswith("judge_"))
    conv = manifest["conversations"]
    reached = conv["accepted"] + dropped  # what export's dedup saw (the rollouts' and the judge's accepted)
    return {
        "asked": size,
        "rolled": conv["requested"],
        "dropped": dropped,
        "share": dropped / reached if reached else 0.0,
        "reasons": reasons,
        "top_up": manifest["top_up"]["extra_conversations"],
        "mix_met": manifest["top_up"]["mix_met"],
        "judged_out": judged,
        "accepted": conv["accepted"],
        "examples": manifest["examples"]["train"] + manifest["examples"]["validation"],
        "seconds": elapsed,
        "chunks": sum(1 for _ in (result.run_dir / "index" / "chunks.jsonl").open(encoding="utf-8")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[3000, 10000, 30000])
    parser.add_argument("--judge", action="store_true", help="the offline lexical judge on as well")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="distill-dedup-bench-"))
    docs = work / "docs"
    docs.mkdir()
    chunks = build_corpus(docs)
    print(f"corpus: {len(list(docs.iterdir()))} files, {chunks} chunks (Python {platform.python_version()} stdlib "
          f"docstrings + the project's corpus/, docs/, README.md); distill from {sys.modules['distill'].__file__}")
    for size in args.sizes:
        r = run(size, docs, work, args.judge)
        print(f"{r['asked']:>6} asked ({r['rolled']} rolled): duplicates dropped {r['dropped']} ({r['share']:.1%}) "
              f"{r['reasons']}; top-up requested {r['top_up']} (mix met: {r['mix_met']}); "
              + (f"judged out {r['judged_out']}; " if args.judge else "")
              + f"accepted {r['accepted']} conversations, {r['examples']} examples; {r['chunks']} chunks indexed; "
              f"{r['seconds']:.0f} s", flush=True)
        shutil.rmtree(work / f"run-{size}")
    shutil.rmtree(work)


if __name__ == "__main__":
    import distill  # noqa: F401  (so the banner can say which checkout ran)

    main()
