import os
from pathlib import Path

import pytest

from helpers import fixtures


@pytest.fixture(scope="session")
def data_dir():
    d = os.environ.get("MEDSLM_DATA_DIR")
    if not d or not Path(d).is_dir():
        pytest.skip("MEDSLM_DATA_DIR is not set to the data mirror")
    return Path(d)


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory):
    from helpers import tiny

    root = tmp_path_factory.mktemp("tiny-models")
    return {a: tiny.save_artifact(a, root / a) for a in tiny.ARCHS}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch, request):
    # unit tests never touch the user's cache; integration tests use the real one (conversion is slow)
    if "integration" not in request.keywords:
        monkeypatch.setenv("MEDSLM_CACHE", str(tmp_path / "medslm-cache"))
    if "energy" not in request.keywords:  # the meter's hardware probe costs a second a run
        monkeypatch.setenv("MEDSLM_ENERGY", "0")


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    fixtures.pubmedqa(root / "pubmedqa")
    fixtures.medmcqa(root / "medmcqa")
    fixtures.medqa(root / "medqa")
    fixtures.mmlu(root / "mmlu_medical")
    fixtures.medquad(root / "medquad")
    fixtures.medtext(root / "medtext")
    fixtures.amega(root / "amega")
    fixtures.drugcomb_summary(root / "drugcomb")
    fixtures.mimic3(root / "mimic3")
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(root))
    return root
