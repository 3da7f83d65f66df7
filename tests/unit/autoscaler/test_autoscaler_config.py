"""Cluster config validation: every mistake is a ValueError naming the field."""
import pytest

from ember.autoscaler.config import load_config, validate_config


def base(**overrides):
    raw = {"cluster_name": "t", "max_workers": 4, "provider": {"type": "local"},
           "head_node_type": "head",
           "available_node_types": {
               "head": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
               "cpu4": {"resources": {"CPU": 4}, "node_config": {}, "min_workers": 0,
                        "max_workers": 2}}}
    raw.update(overrides)
    return raw


def test_a_valid_config_has_rays_defaults():
    raw = base()
    del raw["max_workers"]
    config = validate_config(raw)
    assert config.max_workers == 2 and config.upscaling_speed == 1.0
    assert config.idle_timeout_minutes == 5.0 and config.idle_timeout_s == 300.0
    assert list(config.worker_types()) == ["cpu4"]
    assert config.node_types["cpu4"].resources == {"CPU": 4.0}


def test_type_max_workers_defaults_to_the_clusters():
    raw = base(max_workers=7)
    del raw["available_node_types"]["cpu4"]["max_workers"]
    assert validate_config(raw).node_types["cpu4"].max_workers == 7


def test_rays_cloud_keys_are_accepted():
    validate_config(base(setup_commands=["pip install x"], auth={"ssh_user": "u"}))


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(provider={"type": "aws"}),
     "provider.type 'aws' is not a known node provider; ember has ['local', 'command']."),
    (lambda r: r.update(provider="local"), "provider must be a mapping with a 'type' field"),
    (lambda r: r["available_node_types"]["cpu4"].update(resources={}),
     "available_node_types.cpu4.resources is empty"),
    (lambda r: r["available_node_types"]["cpu4"].update(resources={"CPU": 0}),
     "available_node_types.cpu4.resources is empty"),
    (lambda r: r["available_node_types"]["cpu4"].update(min_workers=3),
     "available_node_types.cpu4.max_workers (2) is lower than "
     "available_node_types.cpu4.min_workers (3)."),
    (lambda r: r["available_node_types"]["cpu4"].update(max_workers=-1),
     "available_node_types.cpu4.max_workers must be a non-negative integer, got -1."),
    (lambda r: r["available_node_types"]["cpu4"].update(resources={"CPU": "four"}),
     "available_node_types.cpu4.resources.CPU must be a non-negative number, got 'four'."),
    (lambda r: r["available_node_types"]["cpu4"].update(mni_workers=1),
     "Unknown field(s) ['mni_workers'] in available_node_types.cpu4"),
    (lambda r: r.update(head_node_type="nope"), "head_node_type 'nope' must name one of"),
    (lambda r: r.update(available_node_types={}), "available_node_types must be a non-empty"),
    (lambda r: r.update(max_worker=3), "Unknown field(s) ['max_worker'] in the cluster config"),
    (lambda r: r.update(upscaling_speed=0), "upscaling_speed must be > 0, got 0."),
    (lambda r: r.update(idle_timeout_minutes=-1), "idle_timeout_minutes must be >= 0, got -1"),
    (lambda r: r.update(max_workers=True), "max_workers must be a non-negative integer"),
    (lambda r: r.update(provider={"type": "command", "terminate_command": "true"}),
     "provider.create_command must be a shell command (a string)"),
    (lambda r: r.update(provider={"type": "command", "create_command": "ssh {hots} x",
                                  "terminate_command": "true"}),
     "provider.create_command has a bad placeholder (KeyError('hots'))"),
    (lambda r: r.update(provider={"type": "command", "create_command": "x", "hosts": "h1",
                                  "terminate_command": "true"}),
     "provider.hosts must be a list of host names, got 'h1'."),
])
def test_bad_configs_name_the_field(change, message):
    raw = base()
    change(raw)
    with pytest.raises(ValueError) as info:
        validate_config(raw)
    assert message in str(info.value)


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("provider: {type: gce}\nhead_node_type: h\n"
                    "available_node_types: {h: {resources: {}}}\n")
    with pytest.raises(ValueError, match=f"{path}: provider.type 'gce'"):
        load_config(str(path))
    path.write_text("provider: [unclosed\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_config(str(path))
    with pytest.raises(ValueError, match="Cannot read the cluster config"):
        load_config(str(tmp_path / "missing.yaml"))
