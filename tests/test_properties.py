"""Property-based tests (hypothesis) of the parsers and of load(save(x)) == x."""

import math

import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from hypernetwork_ext import ConfigError, Hypernetwork, HypernetworkConfig, files, load, parse_layer_structure
from hypernetwork_ext.config import activation_names, parse_dropout_structure, parse_name, parse_sizes
from hypernetwork_ext.training.schedule import StepSchedule

text = st.text(max_size=60)


@given(text)
def test_layer_structure_parser_returns_a_valid_structure_or_a_config_error(value):
    try:
        parsed = parse_layer_structure(value)
    except ConfigError as error:
        assert error.field == "layer_structure" and error.message
        return
    assert len(parsed) >= 2 and parsed[0] == 1 and parsed[-1] == 1 and all(x > 0 and math.isfinite(x) for x in parsed)


@given(st.lists(st.floats(min_value=0.05, max_value=8, allow_nan=False), min_size=0, max_size=5))
def test_layer_structure_text_round_trips(middle):
    structure = [1.0, *middle, 1.0]
    assert parse_layer_structure(", ".join(repr(x) for x in structure)) == tuple(structure)


@given(text, st.integers(min_value=2, max_value=6))
def test_dropout_parser(value, length):
    try:
        parsed = parse_dropout_structure(value, [1.0] * length)
    except ConfigError as error:
        assert error.field == "dropout_structure" and error.message
        return
    assert len(parsed) == length and all(0 <= x < 1 for x in parsed)


@given(text)
def test_sizes_and_names(value):
    for parser, field in ((parse_sizes, "sizes"), (parse_name, "name")):
        try:
            result = parser(value)
        except ConfigError as error:
            assert error.field == field
            continue
        if parser is parse_name:
            assert "/" not in result and "\\" not in result and "\0" not in result and result.strip() == result
        else:
            assert all(isinstance(s, int) and s > 0 for s in result)


@given(text, st.integers(min_value=1, max_value=5000))
def test_schedule_parser(value, max_steps):
    try:
        schedule = StepSchedule.parse(value, max_steps)
    except ConfigError as error:
        assert error.field == "learn_rate"
        return
    steps = [until for _, until in schedule.segments]
    assert steps == sorted(set(steps)) and steps[-1] == max_steps
    assert all(rate > 0 for rate, _ in schedule.segments)


configs = st.builds(
    HypernetworkConfig,
    sizes=st.lists(st.sampled_from([8, 16, 24]), min_size=1, max_size=3, unique=True).map(tuple),
    layer_structure=st.lists(st.sampled_from([0.5, 1.0, 1.5, 2.0]), max_size=2).map(lambda m: (1.0, *m, 1.0)),
    activation=st.sampled_from(activation_names()),
    layer_norm=st.booleans(),
    activate_output=st.booleans(),
    residual=st.booleans(),
    residual_shortcut=st.sampled_from(["interpolate", "linear"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(configs, st.integers(min_value=0, max_value=2 ** 31), st.sampled_from([".pt", ".safetensors"]),
       st.integers(min_value=0, max_value=10 ** 6), st.text(max_size=20))
def test_load_of_save_is_identity(tmp_path_factory, config, seed, suffix, step, info):
    network = Hypernetwork.create(config, "n", seed=seed, optional_info=info or None)
    network.step = step
    path = files.save(network, tmp_path_factory.mktemp("p") / f"n{suffix}")
    loaded = load(path)
    assert loaded.config == network.config and loaded.step == step and loaded.optional_info == (info or None)
    a, b = network.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
