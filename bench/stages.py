"""Split a py-spy profile (`--format raw`: collapsed stacks) of the gateway into request stages.

    .venv/bin/python bench/stages.py bench/results/latest-profile/profile.txt --us-per-request 250

Each sample is a stack, outermost frame first. It is attributed to the innermost frame that
belongs to a stage (rules below, on the frame's file and function); frames of general-purpose
code (asyncio, uvloop/libuv, yarl, multidict, aiohttp's shared writer/stream/helpers, the C
parser, libc) belong to no stage, so their time goes to the stage that called them: a send()
from a response write counts as relay, a parse of the upstream's answer as upstream. A sample
with no stage frame at all (libuv polling and reading sockets, task scheduling) is
"event loop/other". With --native, time in CPython's cyclic garbage collector is its own stage
(it runs inside whichever allocation triggered it).

With --us-per-request (gateway CPU time / requests from a run without the profiler), each
stage's share is also given as µs per request.
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

OTHER = "event loop/other"

# (stage, paths, function prefixes): a frame matches when its file contains one of the paths or
# its function name starts with one of the prefixes. Checked in order; first match wins.
GC = "gc (cyclic collector)"
RULES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    # Only visible with py-spy --native: the collector runs inside whatever allocation set it off.
    (GC, ("gcmodule.c",), ("gc_collect", "collect_with_callback", "gc_collect_main")),
    ("parse (aiohttp server protocol)", (), ("ProtocolHandler.data_received",)),
    ("log", ("gateway/logs.py", "structlog/", "logging/", "orjson"), ()),
    ("metrics", ("prometheus_client/", "gateway/metrics.py"), ()),
    ("normalize", ("gateway/paths.py",), ()),
    (
        "hygiene (headers, cookies, rules)",
        ("gateway/forwarded.py", "gateway/cookies.py", "gateway/policy.py", "gateway/pages.py"),
        (),
    ),
    (
        "auth/cache",
        (
            "gateway/auth.py",
            "gateway/cache.py",
            "gateway/shield.py",
            "gateway/shared_cache.py",
            "hmac.py",
        ),
        (),
    ),
    (
        "upstream (gateway.upstream client)",
        (
            "gateway/upstream.py",
            "aiohttp/client.py",
            "aiohttp/client_reqrep.py",
            "aiohttp/client_proto.py",
            "aiohttp/connector.py",
            "aiohttp/tracing.py",
            "aiohttp/cookiejar.py",
            "aiohttp/client_exceptions.py",
        ),
        (),
    ),
    ("relay (gateway.proxy, response)", ("gateway/proxy.py", "aiohttp/web_response.py"), ()),
    (
        "parse (aiohttp server protocol)",
        (
            "aiohttp/web_protocol.py",
            "aiohttp/http_parser.py",
            "aiohttp/web_request.py",
            "aiohttp/web_server.py",
        ),
        (),
    ),
    ("handler (gateway.server, routing)", ("gateway/server.py", "gateway/routing.py"), ()),
)
STAGES = [
    "parse (aiohttp server protocol)",
    "normalize",
    "hygiene (headers, cookies, rules)",
    "auth/cache",
    "handler (gateway.server, routing)",
    "upstream (gateway.upstream client)",
    "relay (gateway.proxy, response)",
    "log",
    "metrics",
    GC,
    OTHER,
]
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True, slots=True)
class Frame:
    func: str
    file: str

    @property
    def python(self) -> bool:
        return self.file.endswith(".py")

    def __str__(self) -> str:
        return f"{self.func} ({self.file})"


def parse_frame(text: str) -> Frame:
    match = _FRAME.match(text.strip())
    if match is None:
        return Frame(text.strip(), "")
    return Frame(match["func"], match["file"])


def stage_of(frame: Frame) -> str | None:
    for stage, paths, funcs in RULES:
        if any(p in frame.file for p in paths) or (funcs and frame.func.startswith(funcs)):
            return stage
    return None


def read_samples(path: Path) -> list[tuple[list[Frame], int]]:
    samples = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples.append(([parse_frame(f) for f in stack.split(";")], int(count)))
    return samples


def attribute(stack: Sequence[Frame]) -> str:
    for frame in reversed(stack):
        stage = stage_of(frame)
        if stage is not None:
            return stage
    return OTHER


def innermost_python(stack: Sequence[Frame]) -> Frame | None:
    for frame in reversed(stack):
        if frame.python:
            return frame
    return None


def table(rows: Iterable[Sequence[str]], header: Sequence[str]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def summarize(samples: list[tuple[list[Frame], int]], us_per_request: float | None) -> str:
    total = sum(count for _, count in samples)
    if total == 0:
        return "no samples\n"
    by_stage: collections.Counter[str] = collections.Counter()
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for stack, count in samples:
        stage = attribute(stack)
        by_stage[stage] += count
        leaf = innermost_python(stack) if stage != OTHER else stack[-1]
        leaves[stage][str(leaf) if leaf is not None else str(stack[-1])] += count
        self_time[str(stack[-1])] += count
        for name in {str(f) for f in stack if f.file.startswith("gateway/")}:
            inclusive[name] += count

    def pct(n: int) -> str:
        return f"{100 * n / total:.1f}%"

    def us(n: int) -> str:
        return "-" if us_per_request is None else f"{us_per_request * n / total:.1f}"

    lines = [f"{total} samples (on-CPU stacks of the gateway's main thread)", ""]
    lines += ["## CPU by stage", ""]
    rows = [
        (stage, str(by_stage[stage]), pct(by_stage[stage]), us(by_stage[stage]))
        for stage in sorted(STAGES, key=lambda s: -by_stage[s])
    ]
    rows.append(("**total**", str(total), "100%", us(total)))
    lines += table(rows, ("stage", "samples", "share", "µs/request"))
    lines += ["", "## Where each stage spends it (innermost Python frame; top 6)", ""]
    rows = []
    for stage in sorted(STAGES, key=lambda s: -by_stage[s]):
        for name, count in leaves[stage].most_common(6):
            rows.append((stage, name, pct(count), us(count)))
    lines += table(rows, ("stage", "frame", "share", "µs/request"))
    lines += ["", "## Gateway functions, inclusive (top 25)", ""]
    lines += table(
        ((name, pct(count), us(count)) for name, count in inclusive.most_common(25)),
        ("function", "share (incl. callees)", "µs/request"),
    )
    lines += ["", "## Self time, innermost frame of any kind (top 25)", ""]
    lines += table(
        ((name, pct(count), us(count)) for name, count in self_time.most_common(25)),
        ("frame", "share", "µs/request"),
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="py-spy collapsed stacks -> CPU by stage")
    parser.add_argument("profile", type=Path, help="py-spy record --format raw output")
    parser.add_argument(
        "--us-per-request", type=float, default=None, help="gateway CPU µs per request"
    )
    args = parser.parse_args()
    print(summarize(read_samples(args.profile), args.us_per_request), end="")


if __name__ == "__main__":
    main()
