"""Helpers for the serving tests: a scripted fake runtime and a real uvicorn server on loopback."""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np

from medslm.serve.runtime import Runtime
from medslm.serve.server import free_port  # noqa: F401 (re-exported for the tests)

EOS, BOS = 256, 257


class ScriptedRuntime(Runtime):
    """Byte-level tokens (0..255, EOS 256, BOS 257) whose greedy continuation is ``script``.

    ``delay`` seconds per forward call make it slow enough to test queueing and cancellation;
    ``calls`` counts forward calls (the tokens it has generated).
    """

    def __init__(self, script: str = "Hello wörld. The end.", delay: float = 0.0, n_ctx: int = 512,
                 eos_at_end: bool = True):
        self.script = list(script.encode("utf-8")) + ([EOS] if eos_at_end else [])
        self.delay = delay
        self.n_ctx = n_ctx
        self.bos_id, self.bos_text = BOS, "<s>"
        self.eos_ids = frozenset({EOS})
        self.add_bos = True
        self.vocab_size = 258
        self.model_id = "scripted"
        self.calls = 0
        self._plen = 0

    def tokenize(self, text, *, bos=None, special=False):
        ids = list(text.encode("utf-8"))
        if special and text.startswith("<s>"):
            ids = [BOS] + list(text[3:].encode("utf-8"))
            return ids
        return ([BOS] if (self.add_bos if bos is None else bos) else []) + ids

    def detokenize(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", "replace")

    def token_text(self, i):
        return "<s>" if i == BOS else ("</s>" if i == EOS else bytes([i]).decode("latin-1"))

    def forward(self, ids, keep, all_logits=False):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if keep == 0:
            self._plen = len(ids)
        rows = []
        for n in (range(1, len(ids) + 1) if all_logits else [len(ids)]):
            k = n - self._plen
            nxt = self.script[k] if 0 <= k < len(self.script) else (self.script[-1] if k >= 0 else ids[n] if n < len(ids) else 32)
            r = np.full(self.vocab_size, -5.0, dtype=np.float32)
            r[nxt] = 5.0
            rows.append(r)
        return np.stack(rows)




@contextlib.contextmanager
def running(app, log_file=None):
    """Run ``app`` under uvicorn on a free loopback port; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, access_log=False,
                                           log_level="warning", timeout_keep_alive=5))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    t0 = time.time()
    while not server.started:
        if time.time() - t0 > 30:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        th.join(10)


def make_app(rt=None, *, slots: int = 1, queue: int = 64, keys=(), max_tokens: int = 16,
             request_seconds: float = 60.0, max_body: int = 1 << 20):
    from medslm.serve.app import ServerConfig, create_app
    from medslm.serve.engine import Engine, Limits
    from medslm.serve.metrics import Metrics

    rts = rt if isinstance(rt, list) else [rt or ScriptedRuntime()]
    eng = Engine(rts, Limits(slots=len(rts), queue=queue, max_tokens_default=max_tokens,
                             request_seconds=request_seconds, max_body_bytes=max_body), Metrics())
    return create_app(eng, ServerConfig(model_name="test-model", api_keys=list(keys)))


@contextlib.contextmanager
def running_process(**make_kw):
    """Like :func:`running`, but the server runs in its own process (no GIL shared with the client),
    on a :class:`ScriptedRuntime` built from ``make_kw`` (script, delay, eos_at_end, plus make_app's)."""
    import json
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    from helpers import env

    code = ("import sys, json; import uvicorn; "
            "from helpers.serving import ScriptedRuntime, make_app; kw = json.loads(sys.argv[1]); "
            "rt = ScriptedRuntime(**{k: kw.pop(k) for k in ('script', 'delay', 'eos_at_end', 'n_ctx') if k in kw}); "
            f"uvicorn.run(make_app(rt, **kw), host='127.0.0.1', port={port}, access_log=False, log_level='warning')")
    p = subprocess.Popen([sys.executable, "-c", code, json.dumps(make_kw)], env=env())
    base = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while True:
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            break
        except OSError:
            if p.poll() is not None or time.time() - t0 > 60:
                raise RuntimeError("the test server did not start")
            time.sleep(0.1)
    try:
        yield base
    finally:
        p.terminate()
        p.wait(10)
