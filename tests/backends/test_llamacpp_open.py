"""open_llama: llama.cpp's extra buffer types (AMX tiles, repacks) are off on AMX CPUs, where ggml's
AMX matmul segfaults in the first decode, and on where they are safe; the env override is checked."""

import pytest

llama_cpp = pytest.importorskip("llama_cpp", reason="pip install 'medslm[llamacpp]' (dev installs it)")

from medslm.backends import llamacpp as lc  # noqa: E402
from medslm.errors import MedslmError  # noqa: E402


@pytest.mark.parametrize("flags,env,want", [
    ({"avx2", "avx512f", "amx_int8", "amx_tile"}, "", False),
    ({"avx2", "avx512f"}, "", True),
    ({"avx2", "amx_int8"}, "1", True),
    ({"avx2"}, "off", False),
])
def test_repack_follows_the_cpu_and_the_override(monkeypatch, flags, env, want):
    monkeypatch.setattr(lc, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setenv("MEDSLM_LLAMACPP_REPACK", env)
    assert lc.repack_weights() is want


def test_a_bad_override_names_the_variable(monkeypatch):
    monkeypatch.setenv("MEDSLM_LLAMACPP_REPACK", "maybe")
    with pytest.raises(MedslmError, match="MEDSLM_LLAMACPP_REPACK='maybe'"):
        lc.repack_weights()


@pytest.mark.parametrize("amx", [True, False])
def test_the_model_params_llama_sees(monkeypatch, amx):
    import llama_cpp.llama_cpp as low

    seen = {}

    class Fake:  # stands in for Llama: reads the default params as Llama.__init__ does
        def __init__(self, **kw):
            seen["bufts"] = low.llama_model_default_params().use_extra_bufts
            seen["kw"] = kw

    monkeypatch.setattr(llama_cpp, "Llama", Fake)
    monkeypatch.setattr(lc, "cpu_flags", lambda: frozenset({"avx2", "amx_int8"} if amx else {"avx2"}))
    monkeypatch.delenv("MEDSLM_LLAMACPP_REPACK", raising=False)
    before = low.llama_model_default_params
    lc.open_llama(model_path="m.gguf", n_ctx=64)
    assert seen == {"bufts": not amx, "kw": {"model_path": "m.gguf", "n_ctx": 64}}
    assert low.llama_model_default_params is before  # restored after the call
    assert low.llama_model_default_params().use_extra_bufts  # llama.cpp's own default is on
