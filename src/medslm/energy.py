"""Energy and carbon beside accuracy, with codecarbon.

codecarbon (the tool the sustainability literature and the Hugging Face Hub's ``co2_eq_emissions``
use) measures where the machine exposes it: RAPL counters for the CPU (Intel and AMD on Linux,
when readable), NVML for NVIDIA GPUs; otherwise it estimates the CPU's power from its TDP (a
table of CPU models, else 4 W per thread) times the measured CPU load, and the RAM's from its
size. Whichever it did is recorded as ``method``, so an estimate is never shown as a measurement.
Carbon is energy times the grid's intensity: codecarbon's offline figure for the country in
``MEDSLM_GRID_COUNTRY`` (ISO 3166 alpha-3, default ``USA``), recorded with the result.

Results carry ``energy``: Wh (CPU, RAM, GPU and total), Wh per 1,000 tokens processed, gCO2e and
the grid intensity used. ``MEDSLM_ENERGY=0`` turns it off (the test suite does, except its energy
tests: the hardware probe costs about a second per run).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator


def enabled() -> bool:
    return os.environ.get("MEDSLM_ENERGY", "1").strip().lower() not in ("0", "false", "no", "off")


def country() -> str:
    return os.environ.get("MEDSLM_GRID_COUNTRY", "USA").strip().upper() or "USA"


class Meter:
    """One codecarbon tracker for a run; :meth:`task` measures one part of it."""

    def __init__(self, scope: str = "process") -> None:
        """``scope``: ``process`` (this process's share of the CPU load: a model run in-process) or
        ``machine`` (the whole machine: a server in another process under a load generator)."""
        self.tracker = None
        self.method = ""
        if not enabled():
            return
        try:
            import logging

            from codecarbon import OfflineEmissionsTracker
        except ImportError:
            self.method = "not measured: codecarbon is not installed (pip install codecarbon)"
            return
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self.tracker = OfflineEmissionsTracker(country_iso_code=country(), output_methods=[], log_level="error",
                                               measure_power_secs=5, tracking_mode=scope)
        self.tracker.start()
        self.method = self._method()

    def _method(self) -> str:
        import codecarbon

        parts = []
        for h in getattr(self.tracker, "_hardware", []):
            kind = type(h).__name__
            if kind == "CPU":
                mode = getattr(h, "_mode", "?")
                parts.append("CPU measured by RAPL" if mode == "intel_rapl" else
                             f"CPU estimated: TDP {getattr(h, '_tdp', '?')} W x CPU load ({mode})")
            elif kind == "RAM":
                parts.append("RAM estimated from its size")
            elif kind == "GPU":
                parts.append("GPU measured by NVML")
        scope = getattr(self.tracker, "_tracking_mode", "process")
        return (f"codecarbon {codecarbon.__version__} ({scope}): " + "; ".join(parts or ["no hardware found"]))

    @contextmanager
    def task(self, name: str) -> Iterator[dict[str, Any]]:
        """Yields a dict that holds the figures once the block ends (``{}`` when not measured)."""
        out: dict[str, Any] = {}
        if self.tracker is None:
            if self.method:
                out["method"] = self.method
            yield out
            return
        self.tracker.start_task(name)
        try:
            yield out
        finally:
            d = self.tracker.stop_task()
            kwh = float(d.energy_consumed or 0.0)
            out.update({
                "wh": round(kwh * 1000, 9), "cpu_wh": round(float(d.cpu_energy or 0) * 1000, 9),
                "ram_wh": round(float(d.ram_energy or 0) * 1000, 9), "gpu_wh": round(float(d.gpu_energy or 0) * 1000, 9),
                "gco2e": round(float(d.emissions or 0) * 1000, 9),
                "grid_gco2e_per_kwh": round(float(d.emissions or 0) * 1e6 / (kwh * 1000), 1) if kwh > 0 else None,
                "country": country(), "seconds": round(float(d.duration or 0), 2), "method": self.method})

    def close(self) -> None:
        if self.tracker is not None:
            try:
                self.tracker.stop()
            except Exception:  # noqa: BLE001 - a failing meter must not fail the run it measured
                pass
            self.tracker = None


def per_tokens(energy: dict, tokens: int) -> dict:
    if energy.get("wh") is not None and tokens > 0:
        energy["tokens"] = tokens
        energy["wh_per_1k_tokens"] = round(1000 * energy["wh"] / tokens, 9)
    return energy
