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
    assert all(v is variant(v.rule, v.flags, v.clip, v.l2) for v in every)
    assert len({id(v) for v in every}) == len(every)
    assert len({v.key for v in every}) == len(every)
    assert len(every) == sum(4 * 2 ** len(spec.flags) for spec in RULES.values())


def test_hash_and_equality_are_identity():
    a, b = variant("rmsprop_torch", (True, False)), variant("rmsprop_torch", (False, True))
    assert hash(a) == object.__hash__(a) and a == a and a != b
    for x, y in itertools.combinations(list(all_variants())[:8], 2):
        assert x != y


def test_unpickled_variant_is_the_interned_one():
    v = variant("sgd_momentum_torch", (True,), True, False)
    v.key   # a cached property, set on the object: not part of the pickle
    assert pickle.loads(pickle.dumps(v)) is v
