"""Throughput and peak memory of `raysft data check` on a realistic chat JSONL (no tokenizer).

Run: python benchmarks/bench_data_check.py [lines]   (prints one JSON object)

The file mixes short classification tickets, long single-turn answers, multi-turn chats, Chinese text,
prompt/completion records, ~2% exact and ~1% near duplicates and ~1% broken lines. The check runs in
a fresh child process so its memory is measured alone: `peak_rss_mb` is that process's peak resident
set size (getrusage RUSAGE_SELF ru_maxrss, read in the child after the check), which includes the
interpreter and imports; `rss_before_check_mb` is the same measure just before the check starts.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Union

__all__ = ["run", "write_dataset"]

_REPO = Path(__file__).resolve().parents[1]
_WORDS = (
    "order parcel refund charge invoice account password login tracking delivery week app crash screen "
    "update payment card address support team please thanks help issue error device setting email"
).split()
_ZH = "我的订单在哪里应用打开就闪退请帮我查一下退款什么时候到账密码无法登录"
_LABELS = ["billing", "shipping", "technical", "account"]

# Runs in the child: import, measure the baseline, check, measure the peak.
_CHILD = """
import json, resource, sys, time
from raysft.data.check import check_file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
report = check_file(sys.argv[1])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "before_kb": before, "peak_kb": peak, "total": report["total"],
                  "valid": report["valid"], "warnings": report["warnings_total"]}))
"""


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(_WORDS, k=words)).capitalize() + "."


def _record(rng: random.Random, i: int) -> dict:
    kind = rng.random()
    if kind < 0.4:  # classification ticket
        return {"messages": [{"role": "system", "content": "Route the ticket to one team."},
                             {"role": "user", "content": f"#{i} " + _text(rng, rng.randint(8, 40))},
                             {"role": "assistant", "content": rng.choice(_LABELS)}]}
    if kind < 0.7:  # long single-turn answer
        return {"messages": [{"role": "user", "content": f"#{i} " + _text(rng, rng.randint(10, 60)) + "?"},
                             {"role": "assistant", "content": _text(rng, rng.randint(40, 300))}],
                "metadata": {"source": "kb", "id": i}}
    if kind < 0.85:  # multi-turn chat
        messages = []
        for _ in range(rng.randint(2, 4)):
            messages.append({"role": "user", "content": f"#{i} " + _text(rng, rng.randint(5, 30))})
            messages.append({"role": "assistant", "content": _text(rng, rng.randint(10, 80))})
        return {"messages": messages}
    if kind < 0.93:  # Chinese
        question = f"{i}：" + "".join(rng.choices(_ZH, k=rng.randint(10, 60))) + "？"
        answer = "".join(rng.choices(_ZH, k=rng.randint(20, 200))) + "。"
        return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
    return {"prompt": f"#{i} " + _text(rng, rng.randint(10, 50)), "completion": _text(rng, rng.randint(5, 60))}


def write_dataset(path: Union[str, Path], lines: int, seed: int = 0) -> None:
    """Write `lines` lines of realistic chat JSONL (duplicates and errors included) to `path`."""
    rng = random.Random(seed)
    written: list[str] = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):
            roll = rng.random()
            if roll < 0.02 and written:
                line = rng.choice(written)  # exact duplicate
            elif roll < 0.03 and written:
                line = rng.choice(written).replace("#", "# ")  # near duplicate (exact for Chinese rows)
            elif roll < 0.04:
                line = '{"messages": [{"role": "user", "content": "truncated'
            else:
                line = json.dumps(_record(rng, i), ensure_ascii=False)
            if len(written) < 1000:
                written.append(line)
            f.write(line + "\n")


def run(lines: int = 200_000, workdir: Optional[Union[str, Path]] = None) -> dict:
    """Write a `lines`-line chat JSONL, check it in a child process, and measure the check.

    Args:
        lines: lines to write and check.
        workdir: where to write the file; a temporary directory when None.

    Returns:
        {"lines", "seconds" (check_file only), "lines_per_s", "peak_rss_mb", "rss_before_check_mb",
        "file_mb", "valid", "warnings"}.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(workdir or tmp) / "bench_chat.jsonl"
        write_dataset(path, lines)
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, check=True, cwd=_REPO
        )
        file_mb = path.stat().st_size / 2**20
    result = json.loads(child.stdout)
    return {
        "lines": result["total"],
        "seconds": round(result["seconds"], 3),
        "lines_per_s": round(result["total"] / result["seconds"]),
        "peak_rss_mb": round(result["peak_kb"] / 1024, 1),
        "rss_before_check_mb": round(result["before_kb"] / 1024, 1),
        "file_mb": round(file_mb, 1),
        "valid": result["valid"],
        "warnings": result["warnings"],
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)))
