"""`myomap serve` runs the queue's workers in a child process: restarted when it dies, stopped with the node, and
gone with a node killed by SIGKILL."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import pytest

from tests.integration.node_harness import NodeProcess, dcmtk_available, free_port, wait_until

pytestmark = pytest.mark.skipif(not dcmtk_available(), reason="DCMTK (echoscu) is not installed")

STARTED = re.compile(r"analysis workers started in process (\d+)")
HELPERS = re.compile(r"slice helper processes started \(([\d, ]+)\)")
#: The analysis process forks a slice helper per further core it may use (dicomnode/analysis/slice_helper.py).
EXPECTED_HELPERS = len(os.sched_getaffinity(0)) - 1


def _analysis_pids(node: NodeProcess) -> list[int]:
    return [int(pid) for pid in STARTED.findall(node.log())]


def _helper_pids(node: NodeProcess, after: int = 0) -> list[int]:
    """The slice helpers of the analysis process started ``after`` earlier ones."""
    wait_until(lambda: len(HELPERS.findall(node.log())) > after or EXPECTED_HELPERS == 0, timeout_s=60,
               what="the slice helpers started")
    found = HELPERS.findall(node.log())
    pids = [int(pid) for pid in found[after].split(", ")] if len(found) > after else []
    assert len(pids) == EXPECTED_HELPERS
    return pids


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _start(tmp_path: Path) -> tuple[NodeProcess, int]:
    node = NodeProcess(tmp_path / "node", free_port(), free_port(), free_port())
    node.write_config()
    node.start()
    try:
        return node, _checked_child(node)
    except BaseException:
        node.kill()
        raise


def _checked_child(node: NodeProcess) -> int:
    wait_until(lambda: bool(_analysis_pids(node)), timeout_s=30, what="the analysis process started")
    child = _analysis_pids(node)[0]
    assert node.process is not None
    assert child != node.process.pid and _alive(child)
    # Its own process group: Ctrl-C at the terminal reaches the node only, which stops it gracefully.
    node_group = os.getpgid(node.process.pid)
    wait_until(lambda: os.getpgid(child) != node_group, timeout_s=30, what="the analysis process in its own group")
    # Below the node's priority: receiving goes first when the CPUs are short.
    node_priority = os.getpriority(os.PRIO_PROCESS, node.process.pid)
    wait_until(lambda: os.getpriority(os.PRIO_PROCESS, child) == node_priority + 10, timeout_s=30,
               what="the analysis process at a lower priority")
    return child


def test_a_dead_analysis_process_is_restarted_and_stops_with_the_node(tmp_path: Path) -> None:
    node, child = _start(tmp_path)
    try:
        helpers = _helper_pids(node)
        assert all(_alive(pid) and _parent(pid) == child for pid in helpers)
        os.kill(child, signal.SIGKILL)
        wait_until(lambda: not any(_alive(pid) for pid in helpers), timeout_s=5,
                   what="the slice helpers gone with their analysis process")
        wait_until(lambda: len(_analysis_pids(node)) >= 2, timeout_s=40, what="the analysis process restarted")
        restarted = _analysis_pids(node)[-1]
        assert restarted != child and _alive(restarted)
        assert "ended (exit code -9): restarting it" in node.log()
        new_helpers = _helper_pids(node, after=1)
        assert all(_alive(pid) for pid in new_helpers)
    finally:
        status = node.stop(timeout_s=90)
    assert status == 0, node.log()
    assert not _alive(restarted)
    assert not any(_alive(pid) for pid in new_helpers)
    assert "analysis workers stopped" in node.log()


def test_healthz_says_where_the_analysis_process_runs_the_models(tmp_path: Path) -> None:
    node, child = _start(tmp_path)
    try:
        def recorded() -> list[dict]:
            response = httpx.get(f"http://127.0.0.1:{node.web_port}/healthz", timeout=10)
            response.raise_for_status()
            return response.json()["models"]

        wait_until(lambda: bool(recorded()), timeout_s=60, what="the models' providers on /healthz")
        (runtime,) = recorded()
        assert runtime["pid"] == child and runtime["summary"] == "CPUExecutionProvider"
    finally:
        assert node.stop(timeout_s=90) == 0, node.log()


def test_a_node_killed_takes_its_analysis_process_with_it(tmp_path: Path) -> None:
    node, child = _start(tmp_path)
    helpers = _helper_pids(node)
    node.kill()
    wait_until(lambda: not _alive(child), timeout_s=5, what="the analysis process gone with the node")
    wait_until(lambda: not any(_alive(pid) for pid in helpers), timeout_s=5, what="the slice helpers gone with it")
