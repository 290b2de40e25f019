"""The optimizer table itself: every optimizer has its rows, written in
fastopt's words, and the Keras rows keep Keras's float32 rounding out of the
comparisons."""
import numpy as np
import pytest

import fastopt.specs
from optimizer_db import (COMMON_ERRORS, DB, DTYPES, KERAS, KERAS_BASE, KERAS_DB, TORCH,
                          front_names, functional_names, keras_names)

IDS = [info.name for info in DB]


def test_every_spec_has_an_entry():
    """A new optimizer without rows fails here, not by running untested."""
    assert [info.spec for info in DB] == list(fastopt.specs.SPECS)


def _conventions(info):
    """The conventions of the libraries that have the optimizer."""
    return {c for c, front in ((KERAS, info.spec.keras), (TORCH, info.spec.torch)) if front}


@pytest.mark.parametrize("info", DB, ids=IDS)
def test_entry_has_rows_for_every_front_end(info):
    conventions = _conventions(info)
    assert set(info.functional) == conventions
    assert all(info.functional[c] for c in conventions)
    assert set(info.calls) == conventions
    if info.spec.keras is not None:
        assert "plain" in info.keras
    else:
        assert info.keras is None
    if info.spec.torch is not None:
        assert "plain" in info.torch and info.interchange in info.torch
    else:
        assert info.torch is info.torch_group is info.interchange is None
    assert info.lists
    assert set(info.dtypes) == set(DTYPES)


def _hyper_names(spec):
    return {h.name for h in spec.hypers} | {"weight_decay", "decoupled_weight_decay",
                                            "maximize", "grad_scale", "clip_value"}


@pytest.mark.parametrize("info", DB, ids=IDS)
def test_rows_are_written_in_fastopt_words(info):
    """Each front end's names are derived from the spec; a row in a
    library's own words would pass through unrenamed and fail obscurely."""
    known = _hyper_names(info.spec)
    torch_rows = [] if info.torch is None else [*info.torch.values(), info.torch_group]
    rows = ([o for c in info.functional.values() for o in c.values()]
            + list((info.keras or {}).values()) + torch_rows
            + [row.hyper for row in info.lists] + list(info.calls.values()))
    for row in rows:
        assert set(row) - {"step"} <= known, row
    assert all(set(o) <= set(keras_names(info.spec)) for o in (info.keras or {}).values())
    if info.spec.torch is not None:
        torch_names = front_names(info.spec.torch)
        assert all(set(o) <= set(torch_names) for o in torch_rows)


@pytest.mark.parametrize("info", DB, ids=IDS)
def test_error_inputs_reach_a_front_end(info):
    """Each error input is run by at least one front end, ids are unique."""
    errors = info.all_errors()
    assert len({e.id for e in errors}) == len(errors)
    fronts = [functional_names(info.spec)]
    if info.spec.keras is not None:
        fronts.append(set(keras_names(info.spec)))
    if info.spec.torch is not None:
        fronts.append(set(front_names(info.spec.torch)))
    for error in errors:
        assert any(set(error.kwargs) <= names for names in fronts), error.id


def test_common_errors_name_shared_options_only():
    for error in COMMON_ERRORS:
        assert all(functional_names(spec) >= set(error.kwargs)
                   for spec in fastopt.specs.SPECS), error.id


# What Keras rounds to float32 even for float64 variables (the learning rate,
# ``1 - wd*lr`` and the clip bound); epsilons, betas and momentum reach its
# update code as Python floats.
_ROUNDED_BY_KERAS = ("lr", "weight_decay", "clip_value", KERAS_BASE["clip_value"],
                     "lr_power", "l1", "l2_shrinkage")      # Ftrl's, see optimizer_db


@pytest.mark.parametrize("info", KERAS_DB, ids=[info.name for info in KERAS_DB])
def test_keras_rows_are_float32_exact(info):
    keras_rows = info.functional.get(KERAS, {})
    for row in list(keras_rows.values()) + list((info.keras or {}).values()):
        for key in _ROUNDED_BY_KERAS:
            if key in row:
                assert float(np.float32(row[key])) == row[key], (key, row)
