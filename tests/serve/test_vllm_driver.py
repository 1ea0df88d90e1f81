"""The vLLM runtime's driver thread against a scripted engine (no vLLM needed): the engine is only
ever called from the driver's thread, one call at a time; a submit does not wait for the step in
progress; a request the engine refuses fails alone; an engine failure reaches every waiting request."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from medslm.serve.vllm_runtime import Driver


class ScriptedEngine:
    """Each request yields ``n`` outputs, one per step; ``gate`` (when set) holds a step open."""

    def __init__(self):
        self.live: dict[str, int] = {}
        self.calls: list[tuple[str, str]] = []
        self.threads: set[str] = set()
        self.busy = threading.Lock()
        self.gate: threading.Event | None = None
        self.in_step = threading.Event()
        self.fail_step = False

    def _enter(self, name: str, rid: str = "") -> None:
        assert self.busy.acquire(blocking=False), f"{name} while another engine call runs"
        self.threads.add(threading.current_thread().name)
        self.calls.append((name, rid))

    def add_request(self, rid, prompt, params):
        self._enter("add", rid)
        try:
            if prompt == "too long":
                raise ValueError("the prompt is longer than max_model_len")
            self.live[rid] = params
        finally:
            self.busy.release()

    def abort_request(self, rids):
        self._enter("abort", rids[0])
        self.live.pop(rids[0], None)
        self.busy.release()

    def has_unfinished_requests(self):
        return bool(self.live)

    def step(self):
        self._enter("step")
        try:
            self.in_step.set()
            if self.gate is not None:
                self.gate.wait(5)
            if self.fail_step:
                raise RuntimeError("engine core died")
            outs = []
            for rid in list(self.live):
                self.live[rid] -= 1
                outs.append(SimpleNamespace(request_id=rid, finished=self.live[rid] == 0))
                if self.live[rid] == 0:
                    del self.live[rid]
            return outs
        finally:
            self.in_step.clear()
            self.busy.release()


def drain(q, timeout=5.0):
    got = []
    while True:
        o = q.get(timeout=timeout)
        got.append(o)
        if isinstance(o, BaseException) or o.finished:
            return got


def test_the_engine_is_called_from_the_driver_thread_only_and_submit_does_not_wait_for_a_step():
    eng = ScriptedEngine()
    d = Driver(eng)
    try:
        _, q1 = d.submit("p1", 3)
        eng.gate = threading.Event()  # the next step stays open until the gate opens
        assert eng.in_step.wait(5)
        t0 = time.perf_counter()
        rid2, q2 = d.submit("p2", 2)  # while the step runs
        waited = time.perf_counter() - t0
        assert waited < 0.5, f"submit waited {waited:.2f} s for the step in progress"
        assert ("add", rid2) not in eng.calls  # added between steps, not during this one
        eng.gate.set()
        eng.gate = None
        assert [o.finished for o in drain(q1)][-1] and len(drain(q2)) == 2
        assert eng.threads == {"medslm-vllm"}
    finally:
        d.close()


def test_a_refused_request_fails_alone_and_an_abort_reaches_the_engine():
    eng = ScriptedEngine()
    d = Driver(eng)
    try:
        _, bad = d.submit("too long", 2)
        rid, good = d.submit("p", 10**9)  # runs until aborted
        err = bad.get(timeout=5)
        assert isinstance(err, ValueError) and "max_model_len" in str(err)
        assert good.get(timeout=5).request_id == rid  # the other request still decodes
        d.abort(rid)
        deadline = time.time() + 5
        while ("abort", rid) not in eng.calls and time.time() < deadline:
            time.sleep(0.01)
        assert ("abort", rid) in eng.calls and rid not in eng.live and rid not in d.queues
    finally:
        d.close()


def test_an_engine_failure_reaches_every_waiting_request_and_later_submits():
    eng = ScriptedEngine()
    d = Driver(eng)
    eng.gate = threading.Event()  # the first step stays open while the second request arrives
    _, q1 = d.submit("a", 5)
    assert eng.in_step.wait(5)
    _, q2 = d.submit("b", 5)
    eng.fail_step = True
    eng.gate.set()
    for q in (q1, q2):
        e = drain(q)[-1]
        assert isinstance(e, RuntimeError) and "engine core died" in str(e)
    with pytest.raises(RuntimeError, match="the vLLM engine failed: engine core died"):
        d.submit("c", 1)
    d.close()
