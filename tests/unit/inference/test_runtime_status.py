"""The record of where the models run: written by the process that loaded them, read by the page's process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from inference.runtime_status import STATUS_FOLDER, read_providers, record_providers

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def test_a_record_reads_back_with_the_providers_in_words(tmp_path: Path) -> None:
    path = record_providers(tmp_path, {"segmentation": CUDA, "motion": CUDA, "qc_decoder": CPU}, "cuda")
    assert path.parent == tmp_path / STATUS_FOLDER and not list(path.parent.glob("*.partial"))
    (runtime,) = read_providers(tmp_path)
    assert (runtime.host, runtime.pid, runtime.device_asked) == (socket.gethostname(), os.getpid(), "cuda")
    assert runtime.summary == f"{CUDA} (qc_decoder: {CPU})"


def test_records_of_ended_processes_on_this_host_are_removed(tmp_path: Path) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    folder = tmp_path / STATUS_FOLDER
    folder.mkdir()
    stale = folder / f"models-{socket.gethostname()}-{int(ended.stdout)}.json"
    stale.write_text(json.dumps({"host": socket.gethostname(), "pid": int(ended.stdout), "device_asked": "auto",
                                 "loaded_at": "2026-01-01T00:00:00+00:00", "providers": {"segmentation": CPU}}))
    elsewhere = folder / "models-otherhost-1.json"  # another machine's worker: not ours to judge
    elsewhere.write_text(stale.read_text().replace(socket.gethostname(), "otherhost"))
    (folder / "models-broken-2.json").write_text("{not json")
    record_providers(tmp_path, {"segmentation": CPU}, "auto")
    assert not stale.exists() and elsewhere.exists()
    assert [runtime.host for runtime in read_providers(tmp_path)] == [socket.gethostname(), "otherhost"]


def test_no_record_before_the_models_are_loaded(tmp_path: Path) -> None:
    assert read_providers(tmp_path) == []
