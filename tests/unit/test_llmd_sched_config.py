"""YAML configuration: the shipped default loads; every error names the bad key."""

import pytest

from serving.llmd.scheduler import DEFAULT_CONFIG_PATH, Scheduler, SchedulerConfigError, load_config, loads_config


def test_default_config_loads_and_builds():
    config = load_config()
    assert config.main_profile == "decode"
    assert {"decode", "prefill"} <= set(config.profiles)
    scheduler = Scheduler(config)
    names = [s.name for s, _ in scheduler.main.scorers]
    assert names[0] == "capacity-aware-prefix"
    assert load_config(DEFAULT_CONFIG_PATH) == config


def base():
    return {"profiles": {"decode": {"filters": ["healthy"], "scorers": [{"type": "load", "weight": 1}]}}}


def error_key(data):
    with pytest.raises(SchedulerConfigError) as info:
        load_config(data)
    return info.value.key, str(info.value)


def test_unknown_scorer_type_names_its_key():
    data = base()
    data["profiles"]["decode"]["scorers"].append({"type": "magic"})
    key, message = error_key(data)
    assert key == "profiles.decode.scorers[1].type"
    assert "magic" in message and "load" in message


def test_bad_plugin_parameter_names_its_key():
    data = base()
    data["profiles"]["decode"]["filters"].append({"type": "low-queue", "threshold": -1})
    assert error_key(data)[0] == "profiles.decode.filters[1].threshold"
    data = base()
    data["profiles"]["decode"]["filters"].append({"type": "role", "rolez": ["decode"]})
    key, message = error_key(data)
    assert key == "profiles.decode.filters[1].rolez" and "unknown key" in message


def test_negative_weight_and_filter_weight_are_rejected():
    data = base()
    data["profiles"]["decode"]["scorers"][0]["weight"] = -2
    assert error_key(data)[0] == "profiles.decode.scorers[0].weight"
    data = base()
    data["profiles"]["decode"]["filters"] = [{"type": "healthy", "weight": 1}]
    assert error_key(data)[0] == "profiles.decode.filters[0].weight"


def test_top_level_errors_name_their_keys():
    data = base()
    data["pd"] = {"enabled": True, "threshold_tokens": 10, "profile": "nope"}
    assert error_key(data)[0] == "pd.profile"
    data = base()
    data["main_profile"] = "other"
    assert error_key(data)[0] == "main_profile"
    data = base()
    data["flow_control"] = {"saturation": {"kv_threshold": 2}}
    assert error_key(data)[0] == "flow_control.saturation.kv_threshold"
    data = base()
    data["flow_contrl"] = {}
    assert error_key(data)[0] == "flow_contrl"
    data = base()
    data["flow_control"] = {"sheddable": ["later"]}
    assert error_key(data)[0] == "flow_control.sheddable[0]"


def test_yaml_syntax_and_shape_errors():
    with pytest.raises(SchedulerConfigError, match="not valid YAML"):
        loads_config("profiles: [unclosed")
    with pytest.raises(SchedulerConfigError, match="mapping"):
        loads_config("- just a list")


def test_unreadable_file(tmp_path):
    with pytest.raises(SchedulerConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_file_round_trip(tmp_path):
    path = tmp_path / "sched.yaml"
    path.write_text(
        "main_profile: main\n"
        "profiles:\n"
        "  main:\n"
        "    filters: [healthy]\n"
        "    scorers:\n"
        "      - {type: queue, weight: 2}\n"
        "    picker: {type: max-score, tolerance: 0.01}\n"
        "seed: 3\n"
    )
    scheduler = Scheduler.from_config(path)
    assert scheduler.main.name == "main" and scheduler.main.scorers[0][1] == 2.0
