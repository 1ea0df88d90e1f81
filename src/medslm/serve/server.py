"""Start the server: check the security settings, print the limits, load the model, run uvicorn.

The HTTP port opens first and ``/health`` answers 503 while the model loads in a thread, then 200;
every other route answers 503 ("still loading") until then.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medslm.errors import MedslmError
from medslm.serve.engine import Engine, Limits


@dataclass
class ServeOptions:
    model: str = "gemma3-270m"
    backend: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: list[str] = field(default_factory=list)
    insecure: bool = False
    cors_origins: list[str] = field(default_factory=list)
    threads: int | None = None
    n_ctx: int = 2048
    device: str = "cpu"
    dtype: str | None = None  # hf / vllm weights' precision (None: the backend's default)
    served_name: str | None = None
    rag: str | None = None
    log_file: str | None = None
    limits: Limits = field(default_factory=Limits)


def read_keys(keys: list[str], key_file: str | None) -> list[str]:
    out = [k for k in keys if k]
    if key_file:
        p = Path(key_file).expanduser()
        if not p.is_file():
            raise MedslmError(f"--api-key-file {p}: no such file (one key per line)")
        out += [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    short = [k for k in out if len(k) < 16]
    if short:
        raise MedslmError(f"{len(short)} API key(s) shorter than 16 characters; use long random keys "
                          "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return out


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_security(o: ServeOptions) -> None:
    if not is_loopback(o.host) and not o.api_keys and not o.insecure:
        raise MedslmError(f"--host {o.host} exposes the model beyond this machine without an API key; "
                          "give --api-key/--api-key-file, or --insecure if the network is trusted")


def load_runtimes(model: str, backend: str, slots: int, **kw: Any) -> list:
    """The server's ``slots`` runtimes: one model instance each, or for ``vllm`` one engine they
    share (its continuous batching decodes them together; :mod:`medslm.serve.vllm_runtime`)."""
    if backend == "vllm":
        from medslm.serve.vllm_runtime import load_vllm_runtimes

        return load_vllm_runtimes(model, slots, **kw)
    from medslm.serve.runtime import load_runtime

    return [load_runtime(model, backend, **kw) for _ in range(slots)]


def build(o: ServeOptions, load_async: bool = True) -> Any:
    """The ASGI app; the model loads in a worker thread at start-up (``load_async``) or right now."""
    from medslm.serve.app import ServerConfig, create_app
    from medslm.serve.metrics import Metrics

    check_security(o)
    engine = Engine(None, o.limits, Metrics())
    name = o.served_name or Path(o.model).name or o.model
    cfg = ServerConfig(model_name=name, api_keys=o.api_keys, cors_origins=o.cors_origins)
    app = create_app(engine, cfg)
    log = logging.getLogger("medslm.serve")

    def load() -> None:
        rts = load_runtimes(o.model, o.backend, o.limits.slots, threads=o.threads, n_ctx=o.n_ctx, device=o.device,
                            dtype=o.dtype)
        if o.rag:
            from medslm.rag.index import Index

            app.state.medslm.rag = Index(o.rag)
        engine.load(rts)
        log.info("model loaded: %s (%s), %d slot(s)", name, type(getattr(rts[0], "backend", rts[0])).__name__, len(rts))

    if not load_async:
        load()
        return app

    @asynccontextmanager
    async def lifespan(_app: Any):
        task = asyncio.get_running_loop().run_in_executor(None, load)

        def failed(f: Any) -> None:
            if f.exception() is not None:
                log.error("model failed to load: %s", f.exception())
        task.add_done_callback(failed)
        yield
        engine.close()

    app.router.lifespan_context = lifespan
    return app


def setup_logging(log_file: str | None) -> None:
    h: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    lg = logging.getLogger("medslm.serve")
    lg.handlers[:] = [h]
    lg.setLevel(logging.INFO)
    lg.propagate = False


def serve(o: ServeOptions) -> None:
    import uvicorn

    setup_logging(o.log_file)
    app = build(o)
    print(f"medslm serve: {o.model} on http://{o.host}:{o.port}  (backend {o.backend}, "
          f"{'API key required' if o.api_keys else 'no API key'}, CORS "
          f"{','.join(o.cors_origins) if o.cors_origins else 'off'})", file=sys.stderr)
    print(f"medslm serve: limits: {o.limits.summary()}", file=sys.stderr)
    # uvicorn's access log prints paths and client addresses; ours prints metadata only
    uvicorn.run(app, host=o.host, port=o.port, access_log=False, log_level="warning",
                limit_concurrency=None, timeout_keep_alive=5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_subprocess(args: list[str], timeout: float = 300.0) -> tuple[Any, str]:
    """Start ``medslm serve ARGS --port P`` in a child process; return it and its URL once /health is 200."""
    import os
    import subprocess
    import time
    import urllib.request

    import tempfile

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # stderr to a file, not a pipe nobody drains: a chatty runtime (vLLM's logs) would fill the pipe
    # and block the server mid-benchmark
    err = tempfile.TemporaryFile()
    # its own process group, so stop_subprocess also ends the children a runtime spawns (vLLM's
    # engine processes outlive a terminated server otherwise)
    proc = subprocess.Popen([sys.executable, "-m", "medslm", "serve", *args, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=err, env=os.environ.copy(), start_new_session=True)

    def tail() -> str:
        err.seek(0)
        return err.read().decode(errors="replace")[-500:]
    t0 = time.time()
    while True:
        try:
            if urllib.request.urlopen(url + "/health", timeout=2).status == 200:
                return proc, url
        except OSError:
            pass
        if proc.poll() is not None:
            raise MedslmError("medslm serve exited: " + tail())
        if time.time() - t0 > timeout:
            proc.terminate()
            raise MedslmError(f"medslm serve did not become ready in {timeout:.0f} s: " + tail())
        time.sleep(0.5)


def stop_subprocess(proc: Any, timeout: float = 30.0) -> None:
    """Stop a server from :func:`start_subprocess` and every process it started."""
    import os
    import signal
    import subprocess

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
            os.killpg(proc.pid, signal.SIGKILL)  # children left behind by the leader
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        return
