import pytest

from hypernetwork_ext import ConfigError, HypernetworkConfig, activation_names, parse_layer_structure, parse_name
from hypernetwork_ext.config import parse_activation, parse_dropout_structure, parse_sizes, parse_weight_init


@pytest.mark.parametrize("text, expected", [
    ("1, 2, 1", (1.0, 2.0, 1.0)), ("1,1", (1.0, 1.0)), (" 1, 1.5 ,2, 1 ", (1.0, 1.5, 2.0, 1.0)), ("[1, 2, 1]", (1.0, 2.0, 1.0)),
])
def test_layer_structure_parses(text, expected):
    assert parse_layer_structure(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("", "is empty"),
    ("1", "at least two entries"),
    ("1, a, 1", "entry 2 ('a') is not a number"),
    ("1, nan, 1", "entry 2 ('nan') is not a finite number"),
    ("1, -2, 1", "entry 2 (-2) must be a positive number"),
    ("1, 0, 1", "entry 2 (0) must be a positive number"),
    ("2, 2, 1", "must start and end with 1"),
    ("1, 2, 2", "must start and end with 1"),
    ("1, 2,, 1", "entry 3 is empty"),
    ("1, 2, 1,", "entry 4 is empty"),
])
def test_layer_structure_errors_name_the_entry(text, fragment):
    with pytest.raises(ConfigError) as caught:
        parse_layer_structure(text)
    assert fragment in str(caught.value)
    assert caught.value.field == "layer_structure"


def test_dropout_structure():
    assert parse_dropout_structure("", (1, 2, 1)) == (0.0, 0.0, 0.0)
    assert parse_dropout_structure("0, 0.3, 0.3, 0", (1, 2, 2, 1)) == (0.0, 0.3, 0.3, 0.0)
    for text, fragment in [("0, 0.3", "has 2 entries but the layer structure 1, 2, 1 has 3"),
                           ("0, 1, 0", "entry 2 (1) must be at least 0 and below 1"),
                           ("0, -0.1, 0", "entry 2 (-0.1) must be at least 0"),
                           ("0.2, 0.1, 0", "entry 1 (0.2) must be 0"),
                           ("0, x, 0", "entry 2 ('x') is not a number")]:
        with pytest.raises(ConfigError) as caught:
            parse_dropout_structure(text, (1, 2, 1))
        assert fragment in str(caught.value) and caught.value.field == "dropout_structure"


def test_sizes_activation_init():
    assert parse_sizes("768, 320") == (768, 320)
    with pytest.raises(ConfigError, match="entry 2 \\(3.5\\) must be a positive whole number"):
        parse_sizes("768, 3.5")
    with pytest.raises(ConfigError, match="768 is listed twice"):
        parse_sizes("768, 768")
    assert parse_activation(None) == "linear" and parse_activation("ReLU") == "relu"
    with pytest.raises(ConfigError, match="Unknown activation 'bogus'; choose one of: linear, relu"):
        parse_activation("bogus")
    assert parse_weight_init("kaimingnormal") == "KaimingNormal"
    with pytest.raises(ConfigError, match="Unknown initialisation"):
        parse_weight_init("Zeros")


def test_activation_list_is_buildable_and_keeps_swish_as_hardswish():
    names = activation_names()
    assert names[:7] == ["linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid"]
    assert "multiheadattention" not in names and "threshold" not in names and "glu" not in names
    config = HypernetworkConfig(sizes=(8,), activation="swish")
    from hypernetwork_ext.config import build_activation
    assert type(build_activation(config.activation)).__name__ == "Hardswish"


def test_config_flags_what_the_plain_webui_cannot_load():
    assert HypernetworkConfig().plain_webui_problems() == []
    assert "residual" in HypernetworkConfig(residual=True).plain_webui_problems()[0]
    assert "last dropout" in HypernetworkConfig(dropout_structure=(0, 0.3, 0.2)).plain_webui_problems()[0]


def test_config_refuses_absurd_sizes():
    with pytest.raises(ConfigError, match="parameters"):
        HypernetworkConfig(layer_structure=(1, 1000, 1))


@pytest.mark.parametrize("name", ["my style", "日本語スタイル", "v1.2-final_x"])
def test_names_accepted(name):
    assert parse_name(name) == name


@pytest.mark.parametrize("name, fragment", [
    ("", "empty"), ("   ", "empty"), ("../evil", "path separator"), ("a/b", "path separator"),
    ("a\\b", "path separator"), ("a\0b", "path separator"), ("!!!", "at least one letter"),
    ("..", "at least one letter"), ("CON", "reserved on Windows"), ("lpt1.txt", "reserved on Windows"),
    ("x" * 200, "keep it under"), ("None", "reserved by the WebUI"), ("a:b", "Windows forbids"),
])
def test_names_refused_with_reason(name, fragment):
    with pytest.raises(ConfigError) as caught:
        parse_name(name)
    assert fragment in str(caught.value) and caught.value.field == "name"
