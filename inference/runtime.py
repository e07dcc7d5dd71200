"""ONNX Runtime sessions of the node's models: one cached session per model file, provider chosen and verified.

A model is an ONNX file with a JSON model card beside it (same name, ``.json``). The card states the contract:
input and output names, shapes (``null`` for the batch axis) and element types. Loading checks the file against
its card, so a site that drops in its own model gets a clear :class:`ModelContractError` rather than a shape error
in the middle of a job.

Provider: CUDA when the configured device allows it and onnxruntime offers it, else the CPU. onnxruntime-gpu lists
the CUDA provider even on a machine without a GPU and then silently runs on the CPU, so the providers the session
really uses (``get_providers()``) are what this module reports and logs.

A card may name an int8 copy of its model for the CPU (``cpu_int8``: file, SHA-256, how it was quantised and what
it measured against the float model). On the CPU the session runs that copy (about half the time of the float
model's convolutions) where the CPU sums int8 products exactly; on a GPU, or with ``quantised=False``, the float
model. An x86 CPU without VNNI multiplies onnxruntime's uint8 activations by int8 weights with an instruction that
saturates its 16-bit pair sums (``vpmaddubsw``), so the same int8 copy segments otherwise there than where it was
measured (on the held-out Sunnybrook patient: myocardium Dice 0.7434 on an AVX2 CPU against the card's 0.7418,
mid-wall coverage 0.9072 against 0.9045), while the float model gives the card's figures on both: such a CPU runs
the float model (:func:`int8_sums_exactly`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from inference.errors import AnalysisError

LOGGER = logging.getLogger(__name__)

MODELS_FOLDER = Path(__file__).resolve().parent / "models"
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
_ONNX_TYPES: dict[str, type[np.generic]] = {
    "float": np.float32, "float16": np.float16, "int64": np.int64, "bool": np.bool_
}


class ModelContractError(AnalysisError):
    """A model file that is missing, unreadable or does not meet the contract its card states."""


class Device(str, Enum):
    """Where the models run: ``auto`` takes CUDA when it really works, else the CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model card: name, shape (None for a free axis) and element type."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float"

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> TensorSpec:
        # ``item`` is decoded JSON; a malformed one raises KeyError, TypeError or ValueError for ModelCard.read
        shape = tuple(None if d is None else int(d) for d in item["shape"])
        return cls(str(item["name"]), shape, str(item.get("dtype", "float")))


@dataclass(frozen=True)
class ModelCard:
    """What the JSON card beside a model says (the part the runtime relies on)."""

    name: str
    version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sha256: str
    raw: dict[str, Any]  # the whole card as decoded JSON

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        try:
            raw = json.loads(path.read_text())
            return cls(
                name=str(raw["name"]),
                version=str(raw["version"]),
                inputs=tuple(TensorSpec.from_json(item) for item in raw["inputs"]),
                outputs=tuple(TensorSpec.from_json(item) for item in raw["outputs"]),
                sha256=str(raw.get("sha256", "")),
                raw=raw,
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelContractError(f"model card {path} cannot be read: {error}") from error


def card_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Model:
    """One loaded model: an onnxruntime session checked against its card."""

    def __init__(self, path: Path, *, device: Device = Device.AUTO, threads: int = 0,
                 quantised: bool | None = None) -> None:
        import onnxruntime as ort  # imported here: the node's other parts do not need it

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelContractError(f"model file {self.path} does not exist")
        self.card = ModelCard.read(card_path(self.path))
        if self.card.sha256 and self.card.sha256 != file_sha256(self.path):
            raise ModelContractError(f"{self.path.name} does not match the SHA-256 its model card states")
        wanted = _providers(device, ort.get_available_providers())
        #: The file the session runs: the card's int8 copy on the CPU (``quantised`` None: where the CPU sums int8
        #: products exactly; True: on any CPU, for measurements), else the model itself. The copy is checked even
        #: where it is not run, so that a broken card is refused on every machine.
        copy = self._int8_copy() if quantised is not False and wanted == [CPU_PROVIDER] else self.path
        self.session_path = copy if quantised or int8_sums_exactly() else self.path
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads would hold the CPU between calls that the node's other work needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.session_path), sess_options=options, providers=wanted)
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise ModelContractError(f"{self.session_path.name} cannot be loaded by onnxruntime: {error}") from error
        self.providers = tuple(self.session.get_providers())
        if device is Device.CUDA and CUDA_PROVIDER not in self.providers:
            raise ModelContractError(f"{self.path.name}: CUDA was asked for but the session runs on {self.providers}")
        self._check_contract()
        LOGGER.info("model %s %s loaded on %s%s", self.card.name, self.card.version, self.providers[0],
                    " (int8)" if self.int8 else " (float: this CPU does not sum int8 products exactly)"
                    if copy != self.path else "")

    @property
    def int8(self) -> bool:
        """Whether the session runs the card's int8 copy of the model."""
        return self.session_path != self.path

    def _int8_copy(self) -> Path:
        """The card's int8 copy for the CPU, checked against the SHA-256 the card states; the model itself when
        the card names none."""
        copy = self.card.raw.get("cpu_int8")
        if not copy:
            return self.path
        try:
            copy_path, sha256 = self.path.parent / Path(str(copy["file"])).name, str(copy["sha256"])
        except (KeyError, TypeError) as error:
            raise ModelContractError(f"{self.path.name}: the card's cpu_int8 entry lacks {error}") from error
        if not copy_path.is_file():
            raise ModelContractError(f"{self.path.name}: its int8 copy {copy_path.name} does not exist")
        if sha256 != file_sha256(copy_path):
            raise ModelContractError(f"{copy_path.name} does not match the SHA-256 the card of {self.path.name} states")
        return copy_path

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] == CUDA_PROVIDER

    def _check_contract(self) -> None:
        for kind, specs, actual in (
            ("input", self.card.inputs, self.session.get_inputs()),
            ("output", self.card.outputs, self.session.get_outputs()),
        ):
            by_name = {item.name: item for item in actual}
            for spec in specs:
                found = by_name.get(spec.name)
                if found is None:
                    raise ModelContractError(f"{self.path.name} has no {kind} named {spec.name!r}; "
                                             f"it has {sorted(by_name)}")
                shape = tuple(d if isinstance(d, int) else None for d in found.shape)
                fixed_match = all(s is None or a is None or s == a for s, a in zip(spec.shape, shape, strict=False))
                if len(shape) != len(spec.shape) or not fixed_match:
                    raise ModelContractError(f"{self.path.name} {kind} {spec.name!r} has shape {found.shape}, "
                                             f"the contract says {list(spec.shape)}")
                expected_type = f"tensor({spec.dtype})"
                if found.type != expected_type:
                    raise ModelContractError(f"{self.path.name} {kind} {spec.name!r} is {found.type}, "
                                             f"the contract says {expected_type}")

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model; inputs are converted to the contract's element types and checked for shape."""
        feed = {}
        for spec in self.card.inputs:
            if spec.name not in inputs:
                raise ModelContractError(f"{self.card.name}: input {spec.name!r} is missing")
            array = np.ascontiguousarray(inputs[spec.name], dtype=_ONNX_TYPES.get(spec.dtype, np.float32))
            if array.ndim != len(spec.shape) or any(
                s is not None and s != a for s, a in zip(spec.shape, array.shape, strict=True)
            ):
                raise ModelContractError(f"{self.card.name}: input {spec.name!r} has shape {array.shape}, "
                                         f"the contract says {list(spec.shape)}")
            feed[spec.name] = array
        names = outputs or [spec.name for spec in self.card.outputs]
        return dict(zip(names, self.session.run(names, feed), strict=True))


def _providers(device: Device, available: list[str]) -> list[str]:
    if device is Device.CPU:
        return [CPU_PROVIDER]
    if CUDA_PROVIDER in available:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if device is Device.CUDA:
        raise ModelContractError(f"CUDA was asked for but onnxruntime offers only {available}")
    return [CPU_PROVIDER]


_CACHE: dict[tuple[Path, Device, int], Model] = {}
_CACHE_LOCK = threading.Lock()


#: x86 CPU flags (Linux's names) of an int8 dot product that sums exactly, which onnxruntime uses when present.
EXACT_INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
_X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


def int8_sums_exactly(machine: str | None = None, cpu_flags: frozenset[str] | None = None) -> bool:
    """Whether onnxruntime's int8 convolutions sum exactly on this CPU (or on ``machine`` with ``cpu_flags``): any
    non-x86 CPU (Arm's products are widened before they are summed), or an x86 CPU with VNNI or AMX. False where
    the flags cannot be read: the float model is the safe choice."""
    machine = (machine or platform.machine()).lower()
    if machine not in _X86_MACHINES:
        return True
    flags = _cpu_flags() if cpu_flags is None else cpu_flags
    return bool(flags & EXACT_INT8_FLAGS)


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def load_model(path: Path | str, *, device: Device | str = Device.AUTO, threads: int = 0) -> Model:
    """The cached :class:`Model` of ``path`` (one session per file, device and thread count per process)."""
    key = (Path(path).resolve(), Device(device), int(threads))
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is None:
            model = Model(key[0], device=key[1], threads=key[2])
            _CACHE[key] = model
        return model


def shipped_model_path(file_name: str) -> Path:
    """A model shipped in inference/models/."""
    return MODELS_FOLDER / file_name


def limit_blas_threads(threads: int = 1) -> None:
    """Cap the BLAS libraries that numpy and scipy load at ``threads`` threads, for the whole process.

    The node parallelises over slices and jobs, and onnxruntime has its own threads; BLAS threads spin for a while
    after each call and take the cores from both (100 slices on 2 cores: 4.6 s with BLAS' default threads, 2.8 s
    with one; benchmarks/bench_analysis.py).
    """
    import scipy.linalg  # noqa: F401  limits reach only libraries already loaded: load scipy's BLAS first
    import scipy.optimize  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")
