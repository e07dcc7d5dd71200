"""The admin page's screenshots in docs/screenshots/, from a real node run on phantom data.

Run from the repository root: ``.venv/bin/python docs/screenshots/make_screenshots.py [--work DIR]``.

It generates three phantom studies (MOLLI and T2-prep with breathing motion in every series; MOLLI without
motion; a T1 phantom of vials with no heart, whose analysis fails), starts ``myomap serve`` on loopback with the
DICOM storescp of DCMTK as the scanner console and an archive peer that never answers (its transfers are given
up), sends the studies with storescu, waits until every job and transfer settled, and then has headless Chromium
(``--screenshot``) take the studies list, the page of the series with motion and the transfers page. The node
serves the pages itself; its login is off for the run (the node listens on 127.0.0.1 only), so that Chromium,
which keeps no cookie between runs, sees the pages an administrator sees.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from tests.integration.browser import Chromium  # noqa: E402
from tests.integration.node_harness import (  # noqa: E402
    Console,
    NodeProcess,
    free_port,
    make_phantom,
    myomap_executable,
    send,
    wait_until,
)

OUT = Path(__file__).resolve().parent
WINDOW_WIDTH = 1280


def _vials_study(out: Path, *, seed: int) -> Path:
    subprocess.run(
        [*myomap_executable(), "phantom", "--out", str(out), "--studies", "1", "--seed", str(seed),
         "--sequence", "molli", "--vendor", "siemens", "--readers", "", "--slices", "1", "--workers", "1",
         "--vials"],
        check=True, capture_output=True, timeout=300,
    )
    return out


def _dicom_files(study: Path) -> list[Path]:
    return sorted(path for path in study.rglob("*.dcm") if "readers" not in path.parts)


def _settled(node: NodeProcess) -> bool:
    base = f"http://127.0.0.1:{node.web_port}"
    studies = httpx.get(f"{base}/api/studies", params={"limit": 100}, timeout=10).json()
    for study in studies:
        detail = httpx.get(f"{base}/api/studies/{study['study_instance_uid']}", timeout=10).json()
        if any(series["state"] in ("receiving", "complete") for series in detail["series"]):
            return False
    transfers = httpx.get(f"{base}/api/transfers", params={"limit": 1000}, timeout=10).json()
    return bool(transfers) and all(t["state"] != "pending" for t in transfers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the phantom and the node's data (kept)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="myomap-screenshots-"))
    work.mkdir(parents=True, exist_ok=True)

    # Sent in this order, so that the list (newest first) shows the failed study, then the one with motion.
    studies = [
        make_phantom(work / "phantom-still", seed=12, sequence="molli", motion_rate=0.0),
        make_phantom(work / "phantom-motion", seed=11, sequence="all", motion_rate=1.0),
        _vials_study(work / "phantom-vials", seed=13),
    ]
    console = Console(work / "console", free_port())
    console.start()
    node_folder = work / "node"
    shutil.rmtree(node_folder, ignore_errors=True)
    node = NodeProcess(node_folder, free_port(), free_port(), console.port)
    # ARCHIVE listens nowhere: its transfers are given up after two attempts.
    node.write_config(
        quiet_seconds=1.0,
        overrides={"web": {"login": False}, "scu": {"max_attempts": 2, "backoff_initial_s": 0.5},
                   "logging": {"level": "INFO"}},
        peers=[{"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": free_port(), "receives": ["sr", "seg", "sc"]}],
    )
    node.start()
    try:
        for study in studies:
            statuses = send(node.dicom_port, _dicom_files(study))
            if not statuses or any(status != "Success" for status in statuses.values()):
                raise RuntimeError(f"the node did not store every file of {study}: {set(statuses.values())}")
        wait_until(lambda: _settled(node), timeout_s=600, interval_s=1.0, what="every series analysed")
        time.sleep(1.0)
        base = f"http://127.0.0.1:{node.web_port}"
        # The raw MOLLI series with motion: its page holds the analysis (the map series points to it).
        motion_series = next(
            series["series_instance_uid"]
            for study in httpx.get(f"{base}/api/studies", timeout=10).json()
            for series in httpx.get(f"{base}/api/studies/{study['study_instance_uid']}", timeout=10).json()["series"]
            if series["verdict"]["kind"] == "motion" and series["role"] == "raw_ir"
        )
        for name, path, height in (("studies.png", "/", 1500), ("series.png", f"/series/{motion_series}", 2200),
                                   ("transfers.png", "/transfers", 1100)):
            Chromium(window_size=(WINDOW_WIDTH, height)).screenshot(base + path, OUT / name)
            print(f"wrote {OUT / name}")
    finally:
        print(f"node data and log: {node_folder}")
        node.stop()
        console.stop()


if __name__ == "__main__":
    main()
