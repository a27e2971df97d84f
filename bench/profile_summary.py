"""Where a coordinator's time goes, from py-spy's collapsed stacks (``py-spy record --format raw``).

    .venv/bin/python bench/profile_summary.py /tmp/p1.txt

Prints, as shares of all samples of the main thread (``--idle`` samples included, so the event
loop waiting in ``select`` shows as idle): self time by package (the leaf frame's), the heaviest
leaf functions, and inclusive time of the steps of a request.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")

#: Package of a frame, by the first marker found in its file path.
PACKAGES = [
    ("json (stdlib)", "/json/"), ("pydantic", "pydantic"), ("redis-py", "/redis/"), ("hiredis", "hiredis"),
    ("aiohttp", "/aiohttp/"), ("yarl/multidict", "yarl"), ("yarl/multidict", "multidict"),
    ("prometheus_client", "prometheus_client"), ("asyncio", "/asyncio/"), ("selectors", "selectors.py"),
    ("coordinator", "/coordinator/"), ("logging", "/logging/"), ("ssl/socket", "socket.py"),
]

#: Inclusive markers: (label, function name, file suffix).
STEPS = [
    ("HTTP handler (routing._wrap.handle)", "handle", "routing.py"),
    ("  authenticate (TIME + HGET terminal)", "authenticate", "routing.py"),
    ("  body parse (pydantic model_validate_json)", "model_validate_json", "main.py"),
    ("  engine.acquire", "acquire", "engine.py"),
    ("  engine.release", "release", "engine.py"),
    ("  engine.run (script + ZADD due)", "run", "engine.py"),
    ("  presence.online (TIME + ZRANGEBYSCORE)", "_online", "erp.py"),
    ("  reply serialisation (model_dump_json)", "model_dump_json", "main.py"),
    ("redis-py execute_command (all calls)", "execute_command", "client.py"),
    ("redis-py script call (EVALSHA)", "__call__", "commands/core.py"),
    ("event listener (events._on_message)", "_on_message", "events.py"),
    ("aiohttp request parsing/dispatch (web_protocol)", "data_received", "web_protocol.py"),
    ("aiohttp start/finish response", "finish_response", "web_protocol.py"),
    ("json.loads / json.dumps", "loads", "json/__init__.py"),
    ("json.dumps", "dumps", "json/__init__.py"),
]


def parse(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    """(frames root→leaf as (function, file), count) per collapsed line."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for raw in stack.split(";"):
            m = _FRAME.match(raw.strip())
            frames.append((m["func"], m["file"]) if m else (raw.strip(), ""))
        stacks.append((frames, int(count)))
    return stacks


def package(file: str) -> str:
    file = "/" + file  # py-spy prints paths relative to sys.path entries: "asyncio/events.py"
    for name, marker in PACKAGES:
        if marker in file:
            return name
    return "other" if file else "native/unknown"


def is_idle(frames: list[tuple[str, str]]) -> bool:
    func, file = frames[-1]
    # With --idle, a loop with nothing to do sits in select; busy loops pass through it too
    # (the syscall itself), so this counts both: read it with the package table below.
    return func.rsplit(".", 1)[-1] in ("select", "poll") and "selectors" in file


def summarize(path: Path) -> str:
    """The printed summary of one profile."""
    stacks = parse(path)
    # The main thread only: the loop. Other threads (redis-server's reaper, executor) are idle.
    main = [(f, n) for f, n in stacks if any("run_forever" in func or "run_app" in func for func, _ in f)] or stacks
    total = sum(n for _, n in main) or 1
    idle = sum(n for f, n in main if is_idle(f))
    by_package: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    for frames, n in main:
        if is_idle(frames):
            continue
        func, file = frames[-1]
        by_package[package(file)] += n
        by_leaf[f"{func} ({Path(file).name})"] += n
    lines = [f"samples {total}; idle in select {idle / total:.0%}; busy {1 - idle / total:.0%}",
             "self time by package (share of all samples):"]
    lines += [f"  {name:<28} {n / total:6.1%}" for name, n in by_package.most_common(12)]
    lines.append("heaviest leaf functions:")
    lines += [f"  {name:<60} {n / total:6.1%}" for name, n in by_leaf.most_common(15)]
    lines.append("inclusive time of the steps (share of all samples):")
    for label, func, suffix in STEPS:
        n = sum(count for frames, count in main
                if any(f.rsplit(".", 1)[-1] == func and file.endswith(suffix) for f, file in frames))
        lines.append(f"  {label:<52} {n / total:6.1%}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1])))
