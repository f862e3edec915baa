"""Run identities: stable across releases, blind to speed switches and to defaults."""

import pytest

from cnnsweep import identity
from cnnsweep.config import TrainConfig, make_config
from cnnsweep.errors import ConfigError
from cnnsweep.spec import Study, load_study, parse_spec


def resolved(**settings) -> dict:
    return make_config(**settings).model_dump(mode="json")


def test_every_setting_is_either_a_speed_switch_or_has_a_frozen_neutral_value():
    """Adding a setting to TrainConfig means declaring, here, what it meant before it existed."""
    declared = set(identity.NEUTRAL) | identity.OUTSIDE_IDENTITY | {"seed"}
    assert set(TrainConfig.model_fields) == declared


def test_pinned_run_ids():
    """Literal ids: if one of these moves, every stored study would be run again."""
    seed48 = load_study("seed48").runs()
    assert [r.run_id for r in seed48[:3]] == [
        "50933b4e900025b9", "43aaf0c36012faad", "d8a0a6e128a5e8cf",
    ]  # fmt: skip
    quick = load_study("seed48", "quick").runs()
    assert [r.run_id for r in quick[:2]] == ["5843292f93e3d20e", "12e81900043abf6c"]
    # Version 0 is cnnsweep 0.1.0's id, printed by its `cnnsweep run seed48 --preset quick
    # --dry-run`; studies stored by 0.1.0 keep it.
    legacy = load_study("seed48", "quick").runs(identity_version=0)
    assert [r.run_id for r in legacy[:3]] == [
        "1b46edbd7d23cb63", "b5800adfa1d33f86", "22b74ab31890f345",
    ]  # fmt: skip


def test_a_new_setting_or_a_changed_default_does_not_move_an_id():
    stated = {"protocol": "holdout", "optimizer": "sgd", "lr": 0.01, "seed": 3}
    today = resolved(**stated)
    # A later release: one more setting, a changed default of a setting the study left unstated.
    later = today | {"label_smoothing": 0.0, "patience": 12, "max_epochs": 80}
    for version in identity.KNOWN_VERSIONS:
        assert identity.run_id(stated, later, version) == identity.run_id(stated, today, version)


def test_speed_switches_are_not_identity_but_amp_is():
    base = {"protocol": "holdout", "seed": 0}
    one = identity.run_id(base, resolved(**base), 1)
    for switch in ({"compile": True}, {"eval_batch_size": 64}):
        settings = base | switch
        assert identity.run_id(settings, resolved(**settings), 1) == one
    fp32 = base | {"amp": False}
    assert identity.run_id(fp32, resolved(**fp32), 1) != one


def test_a_stated_default_is_the_same_run_as_silence():
    silent = {"protocol": "seed", "seed": 0}
    explicit = silent | {"augment": False, "monitor": "train_accuracy", "patience": 2, "lr": 1e-3}
    assert identity.run_id(explicit, resolved(**explicit), 1) == identity.run_id(
        silent, resolved(**silent), 1
    )
    assert identity.run_id(explicit | {"lr": 0.01}, resolved(**explicit | {"lr": 0.01}), 1) != (
        identity.run_id(silent, resolved(**silent), 1)
    )


def test_a_grid_over_a_speed_switch_is_refused_as_duplicate_runs():
    spec = parse_spec('name = "s"\n[grid]\ncompile = [false, true]', "t")
    with pytest.raises(ConfigError, match="runs 1 and 2 of study 's' are the same configuration"):
        Study(spec, None).runs()


def test_unknown_identity_version_is_refused():
    with pytest.raises(ValueError, match="unknown identity version 7"):
        identity.run_id({"seed": 0}, resolved(), 7)
