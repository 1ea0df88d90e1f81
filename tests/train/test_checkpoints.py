"""Resume picks the newest checkpoint the Trainer finished writing."""

from __future__ import annotations

from medslm.train.engine import last_complete_checkpoint


def test_a_checkpoint_cut_short_by_a_kill_is_dropped_and_the_one_before_resumes(tmp_path):
    """A kill during a save (CI saw it under load) leaves checkpoint-N with the model and optimizer
    but no trainer_state.json; resuming from it failed. The newest complete one is chosen and the
    partial one removed (the run rewrites that step)."""
    for step, complete in ((1, True), (2, True), (10, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x")
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-notastep").mkdir()
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert not (tmp_path / "checkpoint-10").exists() and (tmp_path / "checkpoint-1").exists()
    assert (tmp_path / "checkpoint-notastep").exists()  # not a Trainer checkpoint: left alone


def test_no_complete_checkpoint_means_a_fresh_start(tmp_path):
    assert last_complete_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint-3").mkdir()
    assert last_complete_checkpoint(tmp_path) is None and not (tmp_path / "checkpoint-3").exists()
