"""minicontainer.json (the json module's functions made by its C half, without importing
json on the hot path) must read and write what the json module does, errors included."""
import json
import subprocess
import sys

import pytest

import minicontainer as mc

OBJECTS = [
    mc.default_spec(rootfs="rootfs", args=["/bin/true"]), {}, [], "x", 3, None, [[[]]],
    {"a": [1, {}, [], {"b": None}], "é": "ü\u2028\x00", "f": 1.5, "t": True, "n": -3,
     "inf": float("inf"), "k": ("a", "b")},
]


@pytest.mark.parametrize("obj", OBJECTS)
@pytest.mark.parametrize("indent", [None, 0, 2, 4])
def test_dumps_as_json(obj, indent):
    assert mc.json.dumps(obj, indent=indent) == json.dumps(obj, indent=indent)


@pytest.mark.parametrize("obj", OBJECTS)
def test_loads_as_json(obj):
    text = json.dumps(obj)
    assert mc.json.loads(text) == json.loads(text)
    assert mc.json.loads(text.encode()) == json.loads(text)
    assert mc.json.loads(" \n" + text + "\r\n") == json.loads(text)


def test_what_the_c_half_cannot_do_is_the_json_modules():
    assert mc.json.dumps({1: 2, None: 3}, indent=2) == json.dumps({1: 2, None: 3}, indent=2)
    assert mc.json.dumps({"b": 1, "a": 2}, sort_keys=True) == '{"a": 2, "b": 1}'
    assert mc.json.loads(b'\xff\xfe{\x00}\x00') == {}
    assert mc.json.loads(b"\xef\xbb\xbf{}") == {}
    with pytest.raises(TypeError, match="not JSON serializable"):
        mc.json.dumps({"a": object()})


@pytest.mark.parametrize("text", ["", " ", "{", "[1,]", "1 2", "\ufeff{}", "nul", '{"a":1}x',
                                  '"\\x"'])
def test_errors_as_json(text):
    """In a fresh interpreter too: the C half raises JSONDecodeError only once json.decoder
    is imported."""
    with pytest.raises(ValueError) as want:
        json.loads(text)
    with pytest.raises(ValueError) as got:
        mc.json.loads(text)
    assert str(got.value) == str(want.value)
    code = ("import sys; sys.path.insert(0, %r); import minicontainer\n"
            "try:\n    minicontainer.json.loads(%r)\nexcept ValueError as e:\n    print(e)"
            % (mc.__file__.rsplit("/", 1)[0], text))
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True)
    assert out.stdout.strip() == str(want.value)
