"""The chat page in headless Chromium (Debian's ``chromium``), driven over the DevTools protocol.

The first token appears before the reply completes, Stop ends the stream and frees the server's
slot, citations render as numbered links, and model output containing HTML is shown as text.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.request

import pytest

pytest.importorskip("fastapi")
websockets = pytest.importorskip("websockets")

from helpers.serving import ScriptedRuntime, free_port, make_app, running  # noqa: E402

XSS = "<img src=x onerror=\"document.title='pwned'\">"


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    return exe


class Page:
    def __init__(self, url: str, tmp):
        from websockets.sync.client import connect

        port = free_port()
        self.proc = subprocess.Popen(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'profile'}", f"--remote-debugging-port={port}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.time()
        ws_url = None
        while ws_url is None:
            if time.time() - t0 > 60:
                raise RuntimeError("chromium did not open its DevTools port")
            try:
                pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2).read())
                ws_url = next((p["webSocketDebuggerUrl"] for p in pages if p.get("type") == "page"), None)
            except OSError:
                pass
            time.sleep(0.2)
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(ws_url, max_size=None))
        self.n = 0

    def eval(self, expr: str):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": "Runtime.evaluate",
                                 "params": {"expression": expr, "returnByValue": True}}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == self.n:
                return msg["result"]["result"].get("value")

    def wait(self, expr: str, timeout: float = 60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            v = self.eval(expr)
            if v:
                return v
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {expr}")

    def close(self):
        self._stack.close()
        self.proc.kill()
        self.proc.wait(10)


STATE = """JSON.stringify((() => { const d = document.querySelector('.msg.assistant');
  return d ? {done: d.dataset.done || null, first: +d.dataset.firstMs || null, end: +d.dataset.endMs || null,
              chunks: +d.dataset.chunks || 0, html: d.innerHTML, text: d.innerText,
              links: [...d.querySelectorAll('.sources a')].map(a => [a.textContent, a.href]),
              imgs: document.querySelectorAll('#log img').length, title: document.title} : null; })())"""


def test_the_page_streams_cites_escapes_html_and_stops(tmp_path):
    from medslm.rag.index import Doc, Index, build

    from importlib.resources import files

    assert len((files("medslm.serve") / "static" / "index.html").read_bytes()) <= 50 * 1024  # one small file
    docs = [Doc("d1", "What is scurvy?", "https://example.org/scurvy", "Scurvy is a lack of vitamin C.", "t")]
    rt = ScriptedRuntime(script=f"{XSS} Vitamin C **deficiency** [1]. " * 2, delay=0.02, n_ctx=4096)
    app = make_app(rt, max_tokens=400)
    app.state.medslm.rag = Index(build(docs, tmp_path / "ix").path)
    eng = app.state.medslm.engine
    with running(app) as base:
        page = Page(base + "/#ask=What%20causes%20scurvy%3F&rag=1", tmp_path)
        try:
            st = json.loads(page.wait(f"(() => {{ const s = {STATE}; return JSON.parse(s) && JSON.parse(s).done ? s : null }})()"))
        finally:
            page.close()
        assert st["first"] is not None and st["first"] < st["end"]  # streamed: first token well before the end
        assert st["chunks"] > 5
        assert "&lt;img" in st["html"] and st["imgs"] == 0 and st["title"] != "pwned"
        assert "<b>deficiency</b>" in st["html"]
        assert st["links"] == [["What is scurvy?", "https://example.org/scurvy"]]

        rt2 = ScriptedRuntime(script="z" * 400, delay=0.03, n_ctx=4096)
        eng.load([rt2])
        page = Page(base + "/#ask=Hello&stop=3", tmp_path)
        try:
            st = json.loads(page.wait(f"(() => {{ const s = {STATE}; return JSON.parse(s) && JSON.parse(s).done ? s : null }})()"))
            t0 = time.time()
            while eng.running and time.time() - t0 < 5:
                time.sleep(0.02)
        finally:
            page.close()
        assert st["chunks"] == 3 and eng.running == 0
        assert rt2.calls < 20  # Stop cancelled generation on the server, far short of 400 tokens
