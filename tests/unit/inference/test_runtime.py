"""The ONNX runtime wrapper: a model file is checked against its card, and a file that breaks it is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inference.runtime import (
    CPU_PROVIDER,
    Device,
    Model,
    ModelContractError,
    file_sha256,
    limit_blas_threads,
    load_model,
)


def _identity_model(path: Path, *, input_name: str = "map", shape: tuple[object, ...] = ("batch", 1, 8, 8),
                    elem_type: int = TensorProto.FLOAT) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", [input_name], ["out"])], "tiny",
        [helper.make_tensor_value_info(input_name, elem_type, list(shape))],
        [helper.make_tensor_value_info("out", elem_type, list(shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _card(path: Path, *, input_name: str = "map", shape: list[int | None] | None = None, sha: bool = True) -> None:
    card = {
        "name": "tiny", "version": "1.0",
        "inputs": [{"name": input_name, "shape": shape or [None, 1, 8, 8], "dtype": "float"}],
        "outputs": [{"name": "out", "shape": shape or [None, 1, 8, 8], "dtype": "float"}],
        "sha256": file_sha256(path) if sha else "",
    }
    path.with_suffix(".json").write_text(json.dumps(card))


def test_a_model_that_meets_its_card_runs_on_the_cpu(tmp_path: Path) -> None:
    path = _identity_model(tmp_path / "tiny.onnx")
    _card(path)
    model = Model(path, device=Device.CPU)
    assert model.providers[0] == CPU_PROVIDER
    values = np.linspace(-1, 1, 64).reshape(1, 1, 8, 8)  # float64 in: converted to the contract's float32
    out = model.run({"map": values})["out"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.maximum(values, 0), atol=1e-6)


def test_load_model_caches_one_session_per_file(tmp_path: Path) -> None:
    path = _identity_model(tmp_path / "tiny.onnx")
    _card(path)
    assert load_model(path, device="cpu") is load_model(path, device="cpu")


@pytest.mark.parametrize(
    ("model_kwargs", "card_kwargs", "message"),
    [
        ({"input_name": "image"}, {}, "has no input named 'map'"),
        ({"shape": ("batch", 1, 16, 16)}, {}, "has shape"),
        ({"elem_type": TensorProto.DOUBLE}, {}, "the contract says tensor(float)"),
    ],
)
def test_a_model_that_breaks_its_card_is_refused(tmp_path: Path, model_kwargs: dict, card_kwargs: dict,
                                                 message: str) -> None:
    path = _identity_model(tmp_path / "site.onnx", **model_kwargs)
    _card(path, **card_kwargs)
    with pytest.raises(ModelContractError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Model(path, device=Device.CPU)


def test_a_changed_file_fails_the_cards_sha256(tmp_path: Path) -> None:
    path = _identity_model(tmp_path / "tiny.onnx")
    _card(path)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelContractError, match="SHA-256"):
        Model(path, device=Device.CPU)


def test_missing_file_card_or_wrong_input_shape_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match="does not exist"):
        Model(tmp_path / "absent.onnx")
    path = _identity_model(tmp_path / "nocard.onnx")
    with pytest.raises(ModelContractError, match="model card"):
        Model(path)
    _card(path)
    model = Model(path, device=Device.CPU)
    with pytest.raises(ModelContractError, match="input 'map' has shape"):
        model.run({"map": np.zeros((1, 1, 9, 8))})
    with pytest.raises(ModelContractError, match="is missing"):
        model.run({})


def test_cuda_asked_for_without_a_gpu_provider_is_an_error(tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA; the refusal is checked where it does not")
    path = _identity_model(tmp_path / "tiny.onnx")
    _card(path)
    with pytest.raises(ModelContractError, match="CUDA was asked for"):
        Model(path, device=Device.CUDA)


def test_blas_is_limited_to_one_thread() -> None:
    from threadpoolctl import threadpool_info

    limit_blas_threads()
    blas = [library for library in threadpool_info() if library["user_api"] == "blas"]
    assert blas and all(library["num_threads"] == 1 for library in blas)
