import pytest

from mplp.core.config import ConfigError, MAX_STEP_BYTES, dump, from_dict, load, shipped, step_bytes, validate
from helpers import tiny_config


def test_yaml_round_trip(tmp_path):
    c = tiny_config()
    p = tmp_path / "c.yaml"
    p.write_text(dump(c))
    assert load(p) == c and load(p).hash() == c.hash()


def test_hash_ignores_checkpoint_period_only():
    c = tiny_config()
    assert c.replace(checkpoint_every=77).hash() == c.hash()
    assert c.replace(**{"meta.S": 13}).hash() != c.hash()
    assert c.replace(seed=1).hash() != c.hash()


@pytest.mark.parametrize("change, message", [
    ({"meta.K": 0}, "meta.K: must be >= 2"),
    ({"meta.K": 10}, "meta.K: must be <= meta.T"),
    ({"learner.message_size": 0}, "learner.message_size: must be >= 1"),
    ({"optimizee.activation": "gelu"}, "optimizee.activation: unknown activation 'gelu'"),
    ({"optimizee.loss": "hinge"}, "optimizee.loss: unknown loss 'hinge'"),
    ({"task.name": "cifar"}, "task.name: unknown task 'cifar'"),
    ({"optimizee.sizes": [2, 5, 1]}, "optimizee.sizes: task 'sinewave' needs input 1"),
    ({"meta.unroll": "paper"}, "meta.unroll: must be 'code' or 'text'"),
    ({"learner.batch_norm": "yes"}, "learner.batch_norm: expected true or false"),
    ({"meta.S": "many"}, "meta.S: expected an integer"),
    ({"meta.outer_lr": "fast"}, "meta.outer_lr: expected a number"),
    ({"task.batch_size": 1}, "task.batch_size: must be >= 2"),
])
def test_bad_values_name_the_field(change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_config(**change)


def test_unknown_fields_and_files(tmp_path):
    with pytest.raises(ConfigError, match="meta.truncation: unknown field"):
        from_dict({"meta": {"truncation": 5}})
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("meta: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(tmp_path / "bad.yaml")


def test_yaml_scientific_notation_strings_are_numbers():
    c = from_dict({"meta": {"outer_lr": "1e-3"}})   # PyYAML reads 1e-3 as a string
    assert c.meta.outer_lr == 1e-3


def test_mnist_needs_matching_shapes():
    with pytest.raises(ConfigError, match="optimizee.sizes"):
        from_dict({"task": {"name": "mnist"}, "optimizee": {"loss": "xent"}})
    ok = from_dict({"task": {"name": "mnist"}, "optimizee": {"sizes": [784, 32, 20, 10], "loss": "xent"}})
    assert ok.optimizee.sizes == (784, 32, 20, 10)


def test_shipped_configs_are_valid():
    from pathlib import Path

    import mplp

    paths = sorted((Path(mplp.__file__).parent / "configs").glob("*.yaml"))
    assert len(paths) >= 3
    for p in paths:
        c = load(p)
        assert c.experiment == p.stem, p


def test_the_codes_adam_is_never_served_a_bias_corrected_result():
    """Results stored before ``meta.adam_bias_correction`` existed were made with the corrected
    Adam: a config asking for that keeps their hash, one asking for the code's Adam (the new
    default) gets another, so the store cannot serve one for the other."""
    from mplp.store import committed_root, find_run
    cfg = shipped("sinewave_m8_bn")
    assert cfg.meta.adam_bias_correction is False
    corrected = cfg.replace(**{"meta.adam_bias_correction": True})
    assert cfg.hash() != corrected.hash()
    d = corrected.to_dict()
    del d["meta"]["adam_bias_correction"]                       # as the old runs' config.yaml had it
    assert from_dict(d).hash() != corrected.hash()            # the field's absence now means the code's Adam
    # every committed run directory is addressed by the config stored in it (backfilled with the field)
    for p in sorted(committed_root().glob("*/*/config.yaml")):
        c = load(p)
        assert c.hash() == p.parent.name, p
        assert "adam_bias_correction" in p.read_text(), p
    # the committed 20k-step run is the corrected one, reachable only as such
    long = cfg.replace(**{"meta.S": 20000, "validation.every": 500, "meta.adam_bias_correction": True})
    assert find_run(committed_root(), long) is not None
    assert find_run(committed_root(), long.replace(**{"meta.adam_bias_correction": False})) is None


def test_a_key_given_twice_is_refused_not_silently_overwritten(tmp_path):
    p = tmp_path / "twice.yaml"
    p.write_text("experiment: x\nseed: 0\nseed: 1\n")
    with pytest.raises(ConfigError, match="key 'seed' is given twice"):
        load(p)
    nested = tmp_path / "nested.yaml"
    nested.write_text("experiment: x\nmeta: {K: 5, K: 10}\n")
    with pytest.raises(ConfigError, match="key 'K' is given twice"):
        load(nested)
    big = tmp_path / "big.yaml"
    big.write_text("experiment: x\n" + "# pad\n" * 300_000)
    with pytest.raises(ConfigError, match="larger than any config"):
        load(big)


def test_every_size_has_an_upper_bound_with_the_memory_it_would_need():
    base = shipped("mnist_table5")
    for field, value in (("learner.hidden", 10**9), ("task.batch_size", 10**6), ("validation.n_runs", 10**9),
                         ("meta.es_pairs", 10**6), ("learner.message_size", 10**6)):
        with pytest.raises(ConfigError, match=f"{field}: must be <= "):
            validate(base.replace(**{field: value}))
    with pytest.raises(ConfigError, match=r"about [\d,]+ GiB"):
        validate(base.replace(**{"learner.hidden": 8000, "task.batch_size": 4096}))
    for name in ("sinewave_table3", "ablation", "mnist_table5"):      # the thesis' settings are far below
        assert step_bytes(shipped(name)) < MAX_STEP_BYTES / 50
