"""The drift reference in the manifest: features per kind of tensor, validation, round trips."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeops.bundle import Manifest, read_bundle
from edgeops.drift.features import build_reference, choose_rule, extract
from edgeops.drift.reference import DriftReference, FeatureBins, TensorRule, quantile_edges
from edgeops.errors import InvalidBundleError
from edgeops.keys import KeyStore
from tests.edgeops.bundles import make_bundle, make_keystore

RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return make_keystore(tmp_path_factory.mktemp("home"))


@pytest.fixture()
def good(tmp_path: Path, store: KeyStore) -> Path:
    return make_bundle(tmp_path, store)


def test_tabular_inputs_get_one_feature_per_column_with_about_twenty_quantile_bins() -> None:
    x = RNG.normal(size=(1000, 3))
    ref = build_reference({"x": x}, {})
    assert ref is not None
    assert [f.name for f in ref.features] == ["input:x[0]", "input:x[1]", "input:x[2]"]
    f = ref.features[0]
    assert f.kind == "quantile" and f.bins == 20 and f.total == 1000
    assert max(f.counts) - min(f.counts) <= 2                 # quantile bins: equal counts


def test_images_get_brightness_contrast_per_channel_and_a_colour_cell() -> None:
    img = RNG.random((50, 3, 8, 8)).astype(np.float32)
    rule = choose_rule("img", "input", img)
    assert rule is not None and rule.rule == "image_nchw" and len(rule.colour_split) == 3
    feats = extract(rule, img)
    assert set(feats) == {*(f"input:img/{k}[{c}]" for k in ("brightness", "contrast")
                            for c in range(3)), "input:img/colour"}
    assert all(v.shape == (50,) for v in feats.values())      # one value per image
    nhwc = choose_rule("img", "input", np.moveaxis(img, 1, 3))
    assert nhwc is not None and nhwc.rule == "image_nhwc"
    assert np.allclose(extract(nhwc, np.moveaxis(img, 1, 3))["input:img/brightness[1]"],
                       feats["input:img/brightness[1]"])


def test_outputs_give_class_frequencies_confidence_and_regression_values() -> None:
    logits = RNG.normal(size=(300, 4))
    value = RNG.normal(size=(300, 1))
    ref = build_reference({}, {"scores": logits, "value": value})
    assert ref is not None
    by = {f.name: f for f in ref.features}
    cls = by["output:scores/class"]
    assert cls.kind == "categorical" and cls.bins == 4 and cls.total == 300
    assert by["output:scores/confidence"].kind == "quantile"
    assert by["output:value"].kind == "quantile"
    assert {f.side for f in ref.features} == {"output"}


def test_round_trip_through_json_is_exact() -> None:
    ref = build_reference({"x": RNG.normal(size=(200, 2)),
                           "img": RNG.random((20, 3, 4, 4))}, {"y": RNG.normal(size=(200, 3))})
    assert ref is not None
    d = json.loads(json.dumps(ref.to_dict()))
    assert DriftReference.from_dict(d) == ref
    assert DriftReference.from_dict(d).to_dict() == ref.to_dict()


def test_discrete_values_merge_duplicate_edges() -> None:
    assert quantile_edges(np.array([0, 0, 0, 1, 1, 2] * 50), 20) == (0.0, 1.0, 2.0)
    assert quantile_edges(np.array([np.nan, np.inf])) == ()


def test_live_values_fall_in_the_same_bins_on_both_sides() -> None:
    f = FeatureBins("input:x", "input", "quantile", (0, 0, 0), (0.0, 1.0))
    assert f.bin_counts(np.array([-5, 0.0, 0.5, 1.0, 7, np.nan])).tolist() == [2, 2, 1]
    c = FeatureBins("output:y/class", "output", "categorical", (0, 0, 0))
    assert c.bin_counts(np.array([0, 2, 2, 9, -1])).tolist() == [1, 0, 2]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"counts": (1, -2, 3)}, "integers >= 0"),
    ({"counts": (1, 2)}, "edges for 2 bins"),
    ({"edges": (1.0, 0.0)}, "strictly increasing"),
    ({"edges": (0.0, float("nan"))}, "strictly increasing"),
    ({"counts": tuple([1] * 65), "edges": tuple(float(i) for i in range(64))}, "bins"),
    ({"name": "bad name!"}, "name"),
    ({"side": "middle"}, "side"),
    ({"kind": "weird"}, "kind"),
])
def test_invalid_feature_bins_are_refused(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"name": "input:x", "side": "input", "kind": "quantile",
                               "counts": (1, 2, 3), "edges": (0.0, 1.0)}
    with pytest.raises(InvalidBundleError, match=match):
        FeatureBins(**(base | kwargs))  # type: ignore[arg-type]


def test_invalid_reference_is_refused() -> None:
    f = FeatureBins("input:x", "input", "quantile", (1, 2), (0.0,))
    with pytest.raises(InvalidBundleError, match="twice"):
        DriftReference(rules=(), features=(f, f), samples=3)
    with pytest.raises(InvalidBundleError, match="window"):
        DriftReference(rules=(), features=(f,), samples=3, sample_every=0)
    with pytest.raises(InvalidBundleError, match="malformed"):
        DriftReference.from_dict({"features": []})
    with pytest.raises(InvalidBundleError, match="rule"):
        TensorRule("x", "input", "telepathy")


def test_manifest_carries_the_reference_signed_and_old_manifests_are_unchanged(
        good: Path) -> None:
    m = read_bundle(good).manifest
    assert m.drift is None and "drift" not in m.to_dict()     # bytes of old bundles unchanged
    ref = build_reference({"x": RNG.normal(size=(100, 4))}, {})
    with_drift = replace(m, drift=ref)
    again = Manifest.from_bytes(with_drift.to_bytes())
    assert again.drift == ref
    bad = json.loads(with_drift.to_bytes())
    bad["drift"]["features"][0]["counts"][0] = -1
    with pytest.raises(InvalidBundleError, match="counts"):
        Manifest.from_dict(bad)


@st.composite
def _features(draw: st.DrawFn) -> FeatureBins:
    name = draw(st.from_regex(r"(input|output):[a-z]{1,8}(\[[0-9]{1,2}\])?", fullmatch=True))
    side = name.split(":")[0]
    if draw(st.booleans()):
        counts = draw(st.lists(st.integers(0, 10**9), min_size=1, max_size=64))
        return FeatureBins(name, side, "categorical", tuple(counts))
    edges = sorted(set(draw(st.lists(st.floats(-1e9, 1e9, allow_nan=False, width=32),
                                     max_size=63))))
    counts = draw(st.lists(st.integers(0, 10**9), min_size=len(edges) + 1,
                           max_size=len(edges) + 1))
    return FeatureBins(name, side, "quantile", tuple(counts), tuple(edges))


@settings(max_examples=60, deadline=None)
@given(st.lists(_features(), max_size=8, unique_by=lambda f: f.name),
       st.integers(1, 10**6), st.integers(1, 64))
def test_any_valid_reference_round_trips_through_canonical_json(
        features: list[FeatureBins], samples: int, every: int) -> None:
    ref = DriftReference(rules=(TensorRule("x", "input", "tabular"),),
                         features=tuple(features), samples=samples, sample_every=every)
    again = DriftReference.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert again == ref
