"""Variants are interned: one object per set of fields, so kernel caches key on identity."""
import itertools
import pickle

from fastopt.kernels import RULES, all_variants, variant


def test_one_object_per_variant_whatever_the_call_form():
    assert variant("sgd") is variant("sgd", (), False, False)
    assert variant("adam", (False, True)) is variant("adam", (0, 1), 0, 0)
    assert variant("adam", (True, True), True, False).flags == (True, True)


def test_all_variants_are_the_interned_ones_and_all_differ():
    every = list(all_variants())
    assert all(v is variant(v.rule, v.flags, v.clip, v.l2, v.ema) for v in every)
    assert len({id(v) for v in every}) == len(every)
    assert len({v.key for v in every}) == len(every)
    free = sum(None in variant(rule, flags).rule_slots for rule, spec in RULES.items()
               for flags in itertools.product((False, True), repeat=len(spec.flags)))
    assert len(every) == sum(4 * 2 ** len(spec.flags) for spec in RULES.values()) + 4 * free


def test_the_moving_average_takes_the_first_free_slot():
    assert variant("sgd", ema=True).slots == ("ema", None, None)
    assert variant("adam", (False, True), ema=True).slots == (
        "exp_avg", "exp_avg_sq", "ema")
    assert variant("adam", (False, True), ema=True).used == (True, True, True)
    try:
        variant("adam", (True, True), ema=True)
    except ValueError as err:
        assert "none is left for a moving average" in str(err)
    else:
        raise AssertionError("amsgrad's three slots left room for an average")


def test_hash_and_equality_are_identity():
    a, b = variant("rmsprop_torch", (True, False)), variant("rmsprop_torch", (False, True))
    assert hash(a) == object.__hash__(a) and a == a and a != b
    for x, y in itertools.combinations(list(all_variants())[:8], 2):
        assert x != y


def test_unpickled_variant_is_the_interned_one():
    v = variant("sgd_momentum_torch", (True,), True, False)
    v.key   # a cached property, set on the object: not part of the pickle
    assert pickle.loads(pickle.dumps(v)) is v
