"""The shipped segmentation model: accuracy on fresh phantom studies, its card and contract, and the runtime's
post-processing and input checks."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from scipy import ndimage

from inference.contour_fit import fit_contours
from inference.errors import AnalysisError
from inference.grids import image_centre_grid, normalise_map, sample
from inference.metrics import dice
from inference.runtime import (
    CPU_PROVIDER,
    Device,
    Model,
    ModelContractError,
    file_sha256,
    int8_sums_exactly,
    load_model,
    shipped_model_path,
)
from inference.segmentation import (
    CAVITY,
    MYOCARDIUM,
    map_probabilities,
    mirrored_segmentations,
    segment_map,
    segment_maps,
    segmentation_from_probabilities,
)
from phantom.sidecar import PHANTOM_VERSION
from training.phantom_slices import VALIDATION_SEED, study_cases

MODEL_PATH = shipped_model_path("segmentation.onnx")
FRESH_SEED = 4321  # below 100000: never used for training or checkpoint selection
FRESH_STUDIES = 4
MIN_MEAN_DICE = 0.90


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model(MODEL_PATH, device=Device.CPU)


@pytest.fixture(scope="module")
def fresh_cases():
    return [case for study in range(FRESH_STUDIES) for case in study_cases(FRESH_SEED, study)]


@pytest.mark.slow
def test_fresh_phantom_maps_are_segmented_with_high_dice_and_fit_contours(model, fresh_cases) -> None:
    segmentations = segment_maps([c.map_ms for c in fresh_cases], [c.pixel_spacing_mm for c in fresh_cases], model)
    scores: dict[str, list[float]] = {"T1": [], "T2": []}
    for case, segmentation in zip(fresh_cases, segmentations, strict=True):
        assert segmentation.myocardium_mask.shape == case.map_ms.shape
        scores["T1" if case.is_t1 else "T2"].append(dice(segmentation.myocardium_mask, case.myocardium_mask))
        contours = fit_contours(segmentation.cavity_mask, segmentation.myocardium_mask, case.pixel_spacing_mm)
        assert len(contours.endo_px) == len(contours.epi_px) == 128
    assert len(scores["T1"]) == 2 * FRESH_STUDIES * 3 and len(scores["T2"]) == FRESH_STUDIES * 3
    for kind, values in scores.items():
        assert np.mean(values) >= MIN_MEAN_DICE, f"{kind} mean myocardium Dice {np.mean(values):.3f}"


def test_one_map_gives_one_ring_on_its_own_pixels(model, fresh_cases) -> None:
    case = fresh_cases[1]
    segmentation = segment_map(case.map_ms, case.pixel_spacing_mm, model)
    probabilities = map_probabilities(case.map_ms, case.pixel_spacing_mm, model)
    assert probabilities.shape == (3, *case.map_ms.shape)
    assert np.allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    # Decided in the box where the cavity or the myocardium may win: the masks of the whole image's decision.
    whole = segmentation_from_probabilities(probabilities)
    assert np.array_equal(segmentation.myocardium_mask, whole.myocardium_mask)
    assert np.array_equal(segmentation.cavity_mask, whole.cavity_mask)
    assert not (segmentation.cavity_mask & segmentation.myocardium_mask).any()
    # One ring: filling the myocardium's hole gives exactly the cavity.
    filled = ndimage.binary_fill_holes(segmentation.myocardium_mask)
    assert np.array_equal(filled & ~segmentation.myocardium_mask, segmentation.cavity_mask)
    assert ndimage.label(segmentation.myocardium_mask, structure=np.ones((3, 3)))[1] == 1


def test_batched_and_single_runs_agree(model, fresh_cases) -> None:
    chosen = fresh_cases[:3]
    batched = segment_maps([c.map_ms for c in chosen], [c.pixel_spacing_mm for c in chosen], model)
    for case, together in zip(chosen, batched, strict=True):
        alone = segment_map(case.map_ms, case.pixel_spacing_mm, model)
        assert np.array_equal(alone.myocardium_mask, together.myocardium_mask)
        assert np.array_equal(alone.cavity_mask, together.cavity_mask)


def test_pixels_beyond_the_grid_are_background(model, fresh_cases) -> None:
    case = fresh_cases[0]
    # A matrix three times as wide: the 160 mm grid covers only the middle.
    wide = np.pad(case.map_ms, ((0, 0), (case.map_ms.shape[1], case.map_ms.shape[1])))
    segmentation = segment_map(wide, case.pixel_spacing_mm, model)
    assert np.all(map_probabilities(wide, case.pixel_spacing_mm, model)[0, :, :5] == 1.0)
    assert not segmentation.myocardium_mask[:, :5].any()
    assert segmentation.myocardium_mask.any()


@pytest.mark.parametrize(
    ("values", "spacing", "message"),
    [
        (np.zeros((4, 64, 64)), (1.5, 1.5), "2-D"),
        (np.zeros(64), (1.5, 1.5), "2-D"),
        (np.zeros((64, 64)), (0.0, 1.5), "positive"),
        (np.zeros((64, 64)), (1.5, -1.0), "positive"),
        (np.zeros((64, 64)), (1.5, float("nan")), "positive"),
        (np.zeros((64, 64)), (1.5,), "positive"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(model, values, spacing, message) -> None:
    with pytest.raises(AnalysisError, match=message):
        segment_map(values, spacing, model)


def test_maps_and_spacings_must_pair_up(model) -> None:
    with pytest.raises(AnalysisError, match="2 maps but 1"):
        segment_maps([np.zeros((64, 64)), np.zeros((64, 64))], [(1.5, 1.5)], model)


def _ring(shape: tuple[int, int], centre: tuple[float, float], inner: float, outer: float) -> np.ndarray:
    rows, columns = np.mgrid[0:shape[0], 0:shape[1]]
    radius = np.hypot(rows - centre[0], columns - centre[1])
    return (radius >= inner) & (radius < outer)


def _probabilities(labels: np.ndarray) -> np.ndarray:
    return np.stack([(labels == k).astype(np.float32) for k in range(3)]) * 0.8 + 0.2 / 3


def test_post_processing_keeps_the_largest_ring_and_its_cavity() -> None:
    shape = (80, 80)
    labels = np.zeros(shape, dtype=np.int64)
    big = _ring(shape, (30, 30), 10, 16)
    small = _ring(shape, (68, 68), 3, 6)
    labels[big | small] = MYOCARDIUM
    labels[_ring(shape, (30, 30), 0, 10)] = CAVITY
    labels[_ring(shape, (68, 68), 0, 3)] = CAVITY
    labels[30, 13] = 0  # a speck inside the wall
    labels[2:5, 2:5] = CAVITY  # cavity outside any ring
    result = segmentation_from_probabilities(_probabilities(labels))
    assert np.array_equal(result.myocardium_mask, big)
    assert np.array_equal(result.cavity_mask, _ring(shape, (30, 30), 0, 10))


def test_post_processing_of_an_open_ring_keeps_the_touching_cavity() -> None:
    shape = (64, 64)
    labels = np.zeros(shape, dtype=np.int64)
    ring = _ring(shape, (32, 32), 9, 15)
    ring[:, 29:36] &= np.arange(64)[:, None] > 32  # a gap at the top
    labels[ring] = MYOCARDIUM
    cavity = _ring(shape, (32, 32), 0, 9)
    labels[cavity] = CAVITY
    labels[58:62, 2:6] = CAVITY
    result = segmentation_from_probabilities(_probabilities(labels))
    assert np.array_equal(result.cavity_mask, cavity)
    assert np.array_equal(result.myocardium_mask, ring)


def test_post_processing_without_myocardium_gives_empty_masks() -> None:
    labels = np.zeros((32, 32), dtype=np.int64)
    labels[10:20, 10:20] = CAVITY
    result = segmentation_from_probabilities(_probabilities(labels))
    assert not result.myocardium_mask.any() and not result.cavity_mask.any()


def test_the_shipped_model_meets_its_card(model) -> None:
    card = model.card
    assert [(s.name, s.shape) for s in card.inputs] == [("map", (None, 1, 128, 128))]
    assert [(s.name, s.shape) for s in card.outputs] == [("logits", (None, 3, 128, 128))]
    assert card.sha256 == file_sha256(MODEL_PATH)
    assert MODEL_PATH.stat().st_size < 20 * 1024 * 1024
    for batch in (1, 3):
        logits = model.run({"map": np.zeros((batch, 1, 128, 128), dtype=np.float32)})["logits"]
        assert logits.shape == (batch, 3, 128, 128) and np.isfinite(logits).all()


def test_the_session_runs_on_the_cpu_provider(model) -> None:
    assert CPU_PROVIDER in model.providers


def test_the_card_reports_held_out_metrics_by_group(model) -> None:
    raw = model.card.raw
    assert raw["training"]["phantom_version"] == PHANTOM_VERSION
    # Phantom v1 and v2 training sets, made from training seeds (100000, 120000) that no test uses.
    assert {item["anatomy"] for item in raw["training"]["train"]} == {"v1", "v2"}
    assert "seed 100000" in raw["training"]["data_sets"] and "seed 120000" in raw["training"]["data_sets"]
    metrics = raw["metrics"]
    assert metrics["held_out"]["seed"] == VALIDATION_SEED and metrics["held_out"]["studies"] == 40
    assert metrics["overall"]["cases"] == 360
    assert set(metrics["by_level"]) == {"basal", "mid", "apical"}
    assert set(metrics["by_field_t"]) == {"1.5", "3"}
    assert set(metrics["by_map"]) == {"T1", "T2"}
    assert {"molli_5(3)3", "shmolli", "t2prep"} <= set(metrics["by_sequence"])
    assert len(metrics["by_vendor"]) >= 3
    assert sum(group["cases"] for group in metrics["by_vendor"].values()) == 360
    assert metrics["overall"]["myocardium_dice_mean"] >= MIN_MEAN_DICE
    assert metrics["overall"]["hausdorff_mm_mean"] > 0


def _write_model(path, input_name: str, input_size: int) -> None:
    """A stand-in network (logits = the input repeated thrice) with the shipped card, contract unchanged."""
    image = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 1, input_size, input_size])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, input_size, input_size])
    node = helper.make_node("Concat", [input_name] * 3, ["logits"], axis=1)
    graph = helper.make_graph([node], "stand_in", [image], [logits])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    card = json.loads(MODEL_PATH.with_suffix(".json").read_text())
    card["sha256"] = file_sha256(path)
    del card["cpu_int8"]  # a site's own model comes without the shipped model's int8 copy
    path.with_suffix(".json").write_text(json.dumps(card))


def test_a_model_with_another_input_name_is_refused(tmp_path) -> None:
    path = tmp_path / "segmentation.onnx"
    _write_model(path, "image", 128)
    with pytest.raises(ModelContractError, match=r"has no input named 'map'; it has \['image'\]"):
        Model(path, device=Device.CPU)


def test_a_model_with_another_input_shape_is_refused(tmp_path) -> None:
    path = tmp_path / "segmentation.onnx"
    _write_model(path, "map", 96)
    expected = r"input 'map' has shape .*96.*the contract says \[None, 1, 128, 128\]"
    with pytest.raises(ModelContractError, match=expected):
        Model(path, device=Device.CPU)


def test_a_model_file_that_differs_from_its_card_is_refused(tmp_path) -> None:
    path = tmp_path / "segmentation.onnx"
    _write_model(path, "map", 128)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelContractError, match="SHA-256"):
        Model(path, device=Device.CPU)


def test_the_cpu_runs_the_cards_int8_copy_where_it_sums_exactly_and_a_gpu_or_quantised_false_the_float_model(
) -> None:
    assert Model(MODEL_PATH, device=Device.CPU).int8 == int8_sums_exactly()
    on_cpu = Model(MODEL_PATH, device=Device.CPU, quantised=True)  # as measured, on any CPU
    assert on_cpu.int8 and on_cpu.session_path.name == "segmentation_int8.onnx"
    assert not Model(MODEL_PATH, device=Device.CPU, quantised=False).int8
    card = on_cpu.card.raw["cpu_int8"]
    assert card["sha256"] == file_sha256(on_cpu.session_path)
    # Measured by training/quantise.py on held-out phantom studies and the held-out Sunnybrook patient.
    assert 0.0 <= card["largest_dice_loss"] <= 0.01
    for figures in card["held_out"].values():
        assert figures["sunnybrook_held_out"]["myocardium_dice_mean"] > 0.7


def test_int8_runs_only_where_the_cpu_sums_its_products_exactly() -> None:
    # x86 without VNNI: onnxruntime's uint8 x int8 pair sums saturate at 16 bits (vpmaddubsw).
    assert not int8_sums_exactly("x86_64", frozenset({"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw"}))
    assert int8_sums_exactly("x86_64", frozenset({"avx2", "avx512_vnni"}))
    assert int8_sums_exactly("x86_64", frozenset({"avx2", "avx_vnni"}))
    assert int8_sums_exactly("aarch64", frozenset())


def test_this_cpu_computes_the_int8_copy_as_its_graph_says_exactly_where_the_runtime_runs_it() -> None:
    """onnxruntime fuses the copy's dequantise-convolve-quantise steps into integer kernels; unfused, the same
    graph is computed in float from the same quantised values. Where the kernels sum exactly the two agree up to
    the rounding of requantised activations; where they saturate (x86 without VNNI: mean change 0.10, up to 2.8,
    in the probabilities) the runtime must run the float model instead. So this holds on either kind of CPU."""
    import onnxruntime as ort

    copy = Model(MODEL_PATH, device=Device.CPU, quantised=True).session_path
    grids = np.stack([normalise_map(sample(case.map_ms, image_centre_grid(case.map_ms.shape, case.pixel_spacing_mm)))
                      for study in range(2) for case in study_cases(FRESH_SEED, study)])[:, np.newaxis]

    def probabilities(level: ort.GraphOptimizationLevel) -> np.ndarray:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.graph_optimization_level = 1, level
        session = ort.InferenceSession(str(copy), options, providers=[CPU_PROVIDER])
        return np.asarray(session.run(None, {session.get_inputs()[0].name: grids.astype(np.float32)})[0])

    fused = probabilities(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    graph = probabilities(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    mean_change = float(np.abs(fused - graph).mean())
    assert (mean_change < 0.01) == int8_sums_exactly() == Model(MODEL_PATH, device=Device.CPU).int8, mean_change


def test_the_int8_copy_segments_fresh_phantom_maps_as_the_float_model_does(fresh_cases) -> None:
    chosen = fresh_cases[:9]
    maps, spacings = [c.map_ms for c in chosen], [c.pixel_spacing_mm for c in chosen]
    as_float = segment_maps(maps, spacings, Model(MODEL_PATH, device=Device.CPU, quantised=False))
    as_int8 = segment_maps(maps, spacings, Model(MODEL_PATH, device=Device.CPU, quantised=True))
    agreement = [dice(a.myocardium_mask, b.myocardium_mask) for a, b in zip(as_float, as_int8, strict=True)]
    assert min(agreement) > 0.95 and np.mean(agreement) > 0.98, agreement


@pytest.mark.parametrize("change", ["sha256", "missing"])
def test_a_card_whose_int8_copy_is_missing_or_differs_is_refused(tmp_path, change: str) -> None:
    path = tmp_path / "segmentation.onnx"
    path.write_bytes(MODEL_PATH.read_bytes())
    card = json.loads(MODEL_PATH.with_suffix(".json").read_text())
    copy = tmp_path / card["cpu_int8"]["file"]
    if change == "sha256":
        copy.write_bytes(MODEL_PATH.with_name(copy.name).read_bytes() + b"\0")
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelContractError, match="SHA-256" if change == "sha256" else "does not exist"):
        Model(path, device=Device.CPU)
    assert not Model(path, device=Device.CPU, quantised=False).int8  # the float model itself still loads


def test_mirrored_segmentations_are_the_mirrored_maps_segmentations_mirrored_back(model, fresh_cases) -> None:
    chosen = [c for c in fresh_cases if c.map_ms.shape[0] != c.map_ms.shape[1]][:3]
    maps, spacings = [c.map_ms for c in chosen], [c.pixel_spacing_mm for c in chosen]
    found = mirrored_segmentations(maps, spacings, model)
    left_right = segment_maps([m[:, ::-1] for m in maps], spacings, model)
    assert len(found) == len(maps)
    for mirrored, expected in zip(found, left_right, strict=True):
        assert mirrored.myocardium_mask.any()
        assert np.count_nonzero(mirrored.myocardium_mask ^ expected.myocardium_mask[:, ::-1]) <= 2
        assert np.count_nonzero(mirrored.cavity_mask ^ expected.cavity_mask[:, ::-1]) <= 2


def test_the_ring_is_decided_in_the_box_the_grid_reaches_as_in_the_whole_image(model, fresh_cases) -> None:
    """Outside the box the grid reaches every pixel is background: a wider frame of certain background changes
    nothing, also for a ring that reaches the image's edge."""
    found = segment_map(fresh_cases[0].map_ms, fresh_cases[0].pixel_spacing_mm, model)
    probabilities = map_probabilities(fresh_cases[0].map_ms, fresh_cases[0].pixel_spacing_mm, model)
    rows, columns = np.nonzero(found.myocardium_mask)
    # Cut the image so that the ring touches its edge: the cavity is then not enclosed there.
    cut = probabilities[:, :, : int(columns.mean()) + 1]
    framed = np.zeros((3, cut.shape[1] + 40, cut.shape[2] + 30), dtype=np.float32)
    framed[0] = 1.0
    framed[:, 20:-20, 10:-20] = cut
    alone, inside = segmentation_from_probabilities(cut), segmentation_from_probabilities(framed)
    assert alone.myocardium_mask.any()
    assert np.array_equal(inside.myocardium_mask[20:-20, 10:-20], alone.myocardium_mask)
    assert np.array_equal(inside.cavity_mask[20:-20, 10:-20], alone.cavity_mask)
    assert not inside.myocardium_mask[:20].any() and not inside.cavity_mask[:, -20:].any()


def test_the_box_decision_equals_the_whole_image_decision_also_at_the_image_edge(model, fresh_cases) -> None:
    """segment_map resamples the probabilities only where the cavity or the myocardium may win; its masks are
    those decided on the whole image, also for a heart cut by the image's edge and a heart in a wide matrix."""
    case = fresh_cases[2]
    columns = np.flatnonzero(segment_map(case.map_ms, case.pixel_spacing_mm, model).myocardium_mask.any(axis=0))
    maps = [c.map_ms for c in fresh_cases[:4]]
    maps.append(case.map_ms[:, : int(columns.mean()) + 1])  # the ring reaches the right edge
    maps.append(np.pad(case.map_ms, ((0, 0), (case.map_ms.shape[1], 0))))
    spacings = [c.pixel_spacing_mm for c in fresh_cases[:4]] + [case.pixel_spacing_mm] * 2
    for values, spacing in zip(maps, spacings, strict=True):
        found = segment_map(values, spacing, model)
        whole = segmentation_from_probabilities(map_probabilities(values, spacing, model))
        assert found.myocardium_mask.any()
        assert np.array_equal(found.myocardium_mask, whole.myocardium_mask)
        assert np.array_equal(found.cavity_mask, whole.cavity_mask)
