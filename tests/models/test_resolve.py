import pytest
from helpers import tiny

from medslm.errors import ModelNotFound
from medslm.models.loading import resolve


def test_local_dir(tmp_path):
    tiny.save_artifact("llama", tmp_path / "m")
    r = resolve(str(tmp_path / "m"))
    assert r.kind == "dir" and r.artifact().meta.source == "tiny-random:llama"


def test_plain_hf_dir_gets_synthesized_provenance(tmp_path):
    tiny.model("gpt2").save_pretrained(tmp_path / "m")
    tiny.tokenizer().save_pretrained(tmp_path / "m")
    art = resolve(str(tmp_path / "m")).artifact()
    assert art.meta.architecture == "GPT2LMHeadModel" and art.meta.steps == []
    assert art.hash.startswith("sha256:")


def test_directory_without_config(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ModelNotFound, match="without config.json"):
        resolve(str(tmp_path / "x"))


def test_unknown_name_suggests_presets():
    with pytest.raises(ModelNotFound, match="Did you mean gemma3-270m"):
        resolve("gemma3-207m")


def test_credentialed_preset_says_how_to_get_it():
    with pytest.raises(ModelNotFound, match="PhysioNet.*--model PATH"):
        resolve("me-llama")


def test_hub_id_offline_fails_at_once(monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(ModelNotFound, match="HF_HUB_OFFLINE.*--model PATH"):
        resolve("org/unknown-model")
    assert time.time() - t < 5


def test_hub_download_from_local_server(tmp_path, monkeypatch):
    """The hub path for real: a local HTTP server speaking the hub's file API."""
    import http.server
    import json
    import threading

    src = tmp_path / "served"
    tiny.model("gpt2").save_pretrained(src)
    tiny.tokenizer().save_pretrained(src)
    files = sorted(p.name for p in src.iterdir())

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _file(self, head):
            # /{repo_id}/resolve/{revision}/{filename}
            name = self.path.split("/resolve/", 1)[1].split("/", 1)[1]
            data = (src / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{hash(data) & 0xffffffff:x}"')
            self.send_header("X-Repo-Commit", "0" * 40)
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def do_HEAD(self):
            self._file(True)

        def do_GET(self):
            if "/resolve/" in self.path:
                return self._file(False)
            if "/tree/" in self.path:  # newer huggingface_hub lists the repository tree
                body = json.dumps([{"type": "file", "path": f, "size": (src / f).stat().st_size,
                                    "oid": "0" * 40} for f in files]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            repo = self.path.split("/api/models/", 1)[-1].split("/revision")[0]
            body = json.dumps({"id": repo, "modelId": repo, "sha": "0" * 40, "private": False, "siblings": [{"rfilename": f} for f in files]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        import os
        import subprocess
        import sys

        env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{srv.server_port}",
                   HF_HUB_CACHE=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1")
        env.pop("HF_HUB_OFFLINE", None)
        run = lambda *a: subprocess.run([sys.executable, "-m", "medslm", *a], env=env,
                                        capture_output=True, text=True, timeout=120)
        p = run("models", "pull", "tiny-org/tiny-gpt2")
        assert p.returncode == 0, p.stderr
        p = run("models", "info", "tiny-org/tiny-gpt2", "--json")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["architecture"] == "GPT2LMHeadModel"
        # and it is in the cache now: offline works
        env["HF_HUB_OFFLINE"] = "1"
        p = run("models", "info", "tiny-org/tiny-gpt2", "--json")
        assert p.returncode == 0, p.stderr
    finally:
        srv.shutdown()
