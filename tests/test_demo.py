"""`tablelock demo` as a user runs it: one command, every printed URL answers, a diner pays through the
sandbox provider it starts, SIGTERM stops everything (the sandbox process too)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

from coordinator.redis_embedded import free_port

READY = "(Press CTRL+C to quit)"


class _Output:
    """The child's output, read line by line on a thread (select() cannot see Python's read buffer)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def until(self, marker: str, timeout: float) -> str:
        """Everything read until a line containing ``marker`` (bounded)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if marker in line:
                return "".join(self.seen)
        raise AssertionError(f"no {marker!r} within {timeout}s; output:\n{''.join(self.seen)}")

    def rest(self, timeout: float) -> str:
        """Everything the child still prints until it closes its output (bounded)."""
        self._thread.join(timeout)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return "".join(self.seen)
            if line is not None:
                self.seen.append(line)


def _processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((l for l in (entry / "status").read_text().splitlines() if l.startswith("State:")), "")
        except OSError:
            continue
        if text in cmdline and "Z" not in state.split(":", 1)[-1][:3]:
            pids.append(int(entry.name))
    return pids


def _json(url: str, body: dict | None = None, opener: urllib.request.OpenerDirector | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if body is not None:  # a browser sends its page's origin with every POST
        headers["Origin"] = url.split("/api/", 1)[0]
    request = urllib.request.Request(url, data=data, headers=headers)
    with (opener or urllib.request.build_opener()).open(request, timeout=5) as response:
        return json.loads(response.read())


class _WaiterBrowser:
    """A browser on one waiter page: opens the printed login link once, then keeps the session cookie."""

    def __init__(self, login_url: str) -> None:
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        with self.opener.open(login_url, timeout=5) as response:
            assert response.status == 200 and "key=" not in response.url  # the key is stripped by a redirect
            self.base = response.url

    def json(self, path: str, body: dict | None = None) -> dict:
        return _json(self.base + path, body, self.opener)


def _editor_lock_travels(pages: list[tuple[str, str]]) -> None:
    """Through the waiter pages' API: 服务员A opens T1's editor, 服务员B's page shows it (live events work)."""
    urls = dict(pages)
    a, b = _WaiterBrowser(urls["服务员A"]), _WaiterBrowser(urls["服务员B"])
    t1 = next(t for t in a.json("api/state")["tables"] if t["table_id"] == "T1")
    order_id = t1["order"]["order_id"]
    a.json(f"api/orders/{order_id}/editor", {"force": True})
    deadline = time.monotonic() + 5
    while True:
        seen = next(t for t in b.json("api/state")["tables"] if t["table_id"] == "T1")["locks"]
        if any(lock["kind"] == "order" and lock["holder"].get("name") == "服务员A" for lock in seen):
            break
        assert time.monotonic() < deadline, f"服务员B never saw 服务员A's editor lock: {seen}"
        time.sleep(0.1)
    a.json(f"api/orders/{order_id}/submit", {})


def _diner_adds_a_dish(h5_url: str, master_page: str) -> None:
    """Through the H5 API: a diner on T1 adds a beer; the master accepts it over RPC and its page shows it."""
    base, qr = h5_url.split("/h5/?qr=", 1)
    session = _json(f"{base}/api/v1/h5/sessions", {"qr_token": qr})
    request = urllib.request.Request(
        f"{base}/api/v1/h5/items", data=json.dumps({"items": [{"sku": "beer", "qty": 1}], "request_id": "demo-1"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {session['session_token']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        order = json.loads(response.read())["order"]
    assert order["items"][-1]["source"] == "h5"
    t1 = next(t for t in _WaiterBrowser(master_page).json("api/state")["tables"] if t["table_id"] == "T1")
    assert t1["order"]["version"] == order["version"]


def _diner_pays_through_the_sandbox(h5_url: str, sandbox_url: str, token_file: Path, master_page: str) -> None:
    """Through the H5 API and the sandbox's control API: T1's diner pays by WeChat Pay; the ERP has it paid."""
    base, qr = h5_url.split("/h5/?qr=", 1)
    session = _json(f"{base}/api/v1/h5/sessions", {"qr_token": qr})

    def h5(path: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{base}/api/v1/h5/{path}", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {session['session_token']}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    grant = h5("checkout", {})
    started = h5("payments/start", {"token": grant["lock"]["token"], "provider": "wechatpay"})
    assert started["pay_url"].startswith(sandbox_url)  # the store's WeChat Pay settings point at the sandbox
    pay = urllib.request.Request(
        f"{sandbox_url}/sandbox/trades/{started['out_trade_no']}/pay", data=json.dumps({"outcome": "paid"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token_file.read_text().strip()}"})
    with urllib.request.urlopen(pay, timeout=10) as response:
        assert response.status == 200
    cashier = _WaiterBrowser(master_page)
    deadline = time.monotonic() + 10
    while next(t for t in cashier.json("api/state")["tables"] if t["table_id"] == "T1")["order"] is not None:
        assert time.monotonic() < deadline, "the ERP never had T1's order paid"
        time.sleep(0.1)


def test_demo_prints_working_urls_and_stops_cleanly_on_sigterm(tmp_path):
    """Every printed URL answers 200, locks and a diner's dishes travel live, SIGTERM ends it all."""
    data_dir = tmp_path / "demo-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABLELOCK_")}
    env.update({"TABLELOCK_PORT": str(free_port()), "TABLELOCK_HOST": "127.0.0.1",
                "TABLELOCK_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "demo", "--pages-port", "0"], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    child = _Output(proc)
    try:
        output = child.until(READY, timeout=60)
        urls = re.findall(r"https?://\S+", output)
        assert len(urls) >= 7, output  # API, readiness, three waiter pages, H5 for T1, sandbox (+ admin console)
        assert sum("waiter page" in line for line in output.splitlines()) == 3
        assert "▀" in output or "█" in output  # the QR code drawn in the terminal
        answers = {}
        for url in urls:  # each opened as by a fresh browser: a waiter page's link logs it in
            browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
            try:
                with browser.open(url, timeout=5) as response:
                    answers[url] = response.status
            except urllib.error.HTTPError as e:
                answers[url] = e.code
        assert set(answers.values()) == {200}, answers
        assert _processes_mentioning(str(data_dir)), "the embedded redis-server runs under the data dir"
        pages = re.findall(r"waiter page (\S+) \(\w+\): (\S+)", output)
        _editor_lock_travels(pages)
        h5_url = re.search(r"H5 page for T1.*?: (\S+)", output).group(1)
        _diner_adds_a_dish(h5_url, dict(pages)["收银台"])
        sandbox_url = re.search(r"sandbox payments .*?: (\S+)", output).group(1).rstrip("/")
        token_file = Path(re.search(r"bearer token in (\S+)", output).group(1))
        assert _processes_mentioning(str(data_dir / "sandbox-pay")), "the sandbox provider runs beside the demo"
        _diner_pays_through_the_sandbox(h5_url, sandbox_url, token_file, dict(pages)["收银台"])

        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        rest = child.rest(timeout=5)
        assert proc.returncode == 0, rest
        assert "embedded Redis stopped" in rest
        deadline = time.monotonic() + 5
        while _processes_mentioning(str(data_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_mentioning(str(data_dir)) == [], "a redis-server or the sandbox outlived the demo"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_demo_reuses_its_store_and_terminals_on_a_second_run(tmp_path):
    """A second `tablelock demo` on the same data dir comes up with the same terminals and T1 order."""
    data_dir = tmp_path / "demo-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABLELOCK_")}
    env.update({"TABLELOCK_HOST": "127.0.0.1", "TABLELOCK_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"})
    outputs = []
    for _ in range(2):
        env["TABLELOCK_PORT"] = str(free_port())
        proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "demo", "--pages-port", "0"], env=env,
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            outputs.append(_Output(proc).until(READY, timeout=60))
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            assert proc.returncode == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    tokens = (data_dir / "demo" / "terminals-demo.json").read_text()
    assert tokens.count("erp~demo~") == 3
    first, second = (re.findall(r"H5 page for T1.*?(qr=\S+)", o)[0] for o in outputs)
    assert first == second  # same store, same table, same QR secret
