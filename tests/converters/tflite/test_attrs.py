"""Typed reading of ONNX node attributes for the TFLite lowering."""

from __future__ import annotations

import onnx
import pytest
from onnx import helper

from converters.tflite._attrs import node_attrs


def _node() -> onnx.NodeProto:
    return helper.make_node("Conv", ["x", "w"], ["y"], group=2, alpha=0.5, strides=[2, 2],
                            auto_pad="SAME_UPPER", activations=["Sigmoid", "Tanh"])


def test_each_kind_reads_as_its_type() -> None:
    a = node_attrs(_node())
    assert a.i("group") == 2 and isinstance(a.i("group"), int)
    assert a.f("alpha") == 0.5
    assert a.ints("strides") == [2, 2]
    assert a.s("auto_pad") == "SAME_UPPER"
    assert a.strings("activations") == ["Sigmoid", "Tanh"]


def test_absent_attribute_takes_the_default_or_raises_key_error() -> None:
    a = node_attrs(_node())
    assert a.i("transA", 0) == 0 and a.f("beta", 1.0) == 1.0
    assert a.ints("pads", [0, 0]) == [0, 0] and a.s("mode", None) == "None"
    with pytest.raises(KeyError):
        a.i("hidden_size")


def test_wrong_kind_is_a_type_error_naming_the_attribute() -> None:
    a = node_attrs(_node())
    with pytest.raises(TypeError, match="'strides'"):
        a.i("strides")
    with pytest.raises(TypeError, match="'group'"):
        a.ints("group")
