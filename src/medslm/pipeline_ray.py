"""A recipe's variants as Ray tasks (``medslm run RECIPE --ray [ADDRESS]``).

Each variant is one task reserving its declared resources (``cpus``, default 1, which its
evaluation uses as threads; ``gpus``, default 0), built and evaluated exactly as the serial run does
(:func:`medslm.pipeline.run_variant`): artifacts in the medslm cache and results in the run's
folder, which on a cluster must be shared storage (the same paths on every node). Steps that
several variants share are built once (a file lock per step). The driver gathers the results and
writes the report. ``local`` starts a local cluster of this machine's cores (the tests use it);
the medslm environment variables (cache, data mirror, energy) travel to the workers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medslm.errors import MedslmError

ENV = ("MEDSLM_CACHE", "MEDSLM_DATA_DIR", "MEDSLM_ENERGY", "MEDSLM_GRID_COUNTRY", "HF_HOME", "HF_HUB_OFFLINE")


def run_variants(recipe: Any, results: Path, address: str, log, variant_task,
                 names: list[str] | None = None) -> list[tuple]:
    """``variant_task(recipe_json, name, results)`` for every variant (those in ``names`` if given),
    as Ray tasks; their returns."""
    try:
        import ray
    except ImportError as e:
        raise MedslmError("--ray needs Ray: pip install -e '.[ray]' -c constraints.txt") from e
    from medslm.system import usable_cores

    env = {k: os.environ[k] for k in ENV if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                    os.environ.get("PYTHONPATH")) if p)
    kw: dict[str, Any] = {"runtime_env": {"env_vars": env}, "include_dashboard": False, "log_to_driver": True,
                          "configure_logging": False}
    if address == "local":
        kw["num_cpus"] = usable_cores()
    else:
        kw["address"] = address
    variants = [v for v in recipe.variants if names is None or v.name in names]
    ray.init(**kw)
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        big = [v.name for v in variants if v.cpus > cpus]
        if big:
            raise MedslmError(f"--ray: variants {', '.join(big)} ask for more CPUs than the cluster has ({cpus:g}); "
                              "lower their `cpus:`")
        task = ray.remote(variant_task)
        log(f"ray: {len(variants)} variants as tasks on {cpus:g} CPUs "
            f"({ray.cluster_resources().get('GPU', 0):g} GPUs)")
        futures = [task.options(num_cpus=v.cpus, num_gpus=v.gpus, name=f"medslm:{v.name}", max_retries=0)
                   .remote(recipe.model_dump_json(), v.name, str(results)) for v in variants]
        try:
            return ray.get(futures)
        except ray.exceptions.RayTaskError as e:
            cause = e.as_instanceof_cause()
            if isinstance(cause, MedslmError):
                raise MedslmError(str(cause).split("\n")[-1] or str(cause)) from None
            raise
    finally:
        ray.shutdown()
