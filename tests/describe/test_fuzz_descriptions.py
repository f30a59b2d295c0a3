"""Property-based tests: the block-string parser and description JSON raise nothing but UserError,
whatever they are given (random text, mutated valid strings, mutated valid JSON)."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from effnet import NetworkSpec, UserError, get_description
from effnet.describe.blocks import parse_block, parse_blocks
from effnet.describe.family import B0_BLOCKS, V2_S_BLOCKS

VALID = list(B0_BLOCKS) + list(V2_S_BLOCKS) + ["ds_r1_k3_s22_e1_i32_o64_noskip", "er_r2_k3_s2_e4_i24_o48"]
FIELDS = st.sampled_from(["r", "k", "s", "e", "i", "o", "se", "c", "noskip", "skip", "mb", "fu", "er", "zz", ""])
NUMBERS = st.one_of(
    st.integers(-(10**6), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", ".", "1.2.3", "0", "00", "9" * 5000, "1e400", "-0", "nan", "inf", "11", "22", "33"]),
)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_user_errors(call, *args):
    try:
        call(*args)
    except UserError:
        pass


@FAST
@given(st.text(max_size=200))
def test_random_text_is_a_block_string_or_a_user_error(text):
    _only_user_errors(parse_block, text)
    _only_user_errors(parse_blocks, text)


@FAST
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 8), FIELDS, NUMBERS), max_size=4))
def test_mutated_block_strings_are_user_errors_or_valid(valid, edits):
    tokens = valid.split("_")
    for position, field, number in edits:
        token = field + number
        if position < len(tokens):
            tokens[position] = token
        else:
            tokens.append(token)
    text = "_".join(tokens)
    try:
        block = parse_block(text)
    except UserError:
        return
    assert parse_block(block.to_string()) == block  # what parses prints and parses back the same


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(sorted(get_description("efficientnet_b0").to_dict()) + ["bogus"])


@FAST
@given(st.sampled_from(["efficientnet_b0", "efficientnet_lite0", "efficientnetv2_s", "resnet50"]),
       st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=4))  # fmt: skip
def test_mutated_description_json_is_a_user_error_or_valid(name, changes):
    data = get_description(name).to_dict()
    data.update(changes)
    try:
        spec = NetworkSpec.from_json(json.dumps(data))
    except UserError:
        return
    assert NetworkSpec.from_json(spec.to_json()) == spec


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_are_a_description_or_a_user_error(data):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    _only_user_errors(NetworkSpec.from_json, text)
