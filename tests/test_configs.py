"""reid_train/configs/*.yaml: one per registered method, every field, equal to the dataclass defaults."""
from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from reid_train import fit
from reid_train.config import config_from_dict, config_path, packaged_configs, read_config, to_dict
from reid_train.methods import load_all


def test_one_config_per_method():
    assert sorted(packaged_configs()) == sorted(load_all())


@pytest.mark.parametrize("name", sorted(load_all()))
def test_yaml_equals_dataclass_defaults(name):
    cls = load_all()[name].Config
    values = read_config(name)
    assert values["method"] == name
    assert set(values) == {f.name for f in dataclasses.fields(cls)}, "every field, and only those"
    defaults = dataclasses.replace(cls(), method=name)
    assert config_from_dict(cls, values) == defaults
    # the values as written, before any coercion, too
    assert values == to_dict(defaults)


@pytest.mark.parametrize("name", sorted(load_all()))
def test_paper_settings_say_where_they_come_from(name):
    text = config_path(name).read_text()
    paper = text.split("# --- the paper's settings", 1)[1].split("# --- this machine", 1)[0]
    lines = [ln for ln in paper.splitlines()[1:] if ln.strip()]
    assert len(lines) >= 15
    uncommented = [ln for ln in lines if "#" not in ln]
    assert not uncommented, uncommented
    cited = [ln for ln in lines if re.search(r"(Sec\.|Eq\.|Table|Fig\.)", ln)]
    # IDE's source ([56]) gives Caffe settings only: most of its values are ours, and say so
    assert len(cited) >= (5 if name == "ide" else len(lines) // 2), \
        f"{name}: {len(cited)} of {len(lines)} settings cite the paper"


def test_fit_config_by_name_and_precedence(capsys):
    assert fit.main(["--config", "mpn", "--show-config"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["method"] == "mpn" and shown["size"] == [384, 128] and shown["optimizer"] == "sgd"
    assert shown == to_dict(dataclasses.replace(load_all()["mpn"].Config(), method="mpn"))
    # flags win over the file
    assert fit.main(["--config", "alignedreid_cvpr", "--show-config", "--lr", "0.5", "--set", "P=8"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["method"], shown["lr"], shown["P"], shown["global_margin"]) == ("alignedreid_cvpr", 0.5, 8, 0.3)
    with pytest.raises(ValueError, match="packaged configs"):  # run_cli turns it into one error: line
        fit.main(["--config", "no_such_method", "--show-config"])
