"""Workspace: config discovery as Azure ML does it."""

from __future__ import annotations

import json

import pytest

from prefect_aml import UserErrorException, Workspace


def test_from_config_walks_up(tmp):
    (tmp / ".azureml").mkdir()
    (tmp / ".azureml" / "config.json").write_text(json.dumps(
        {"workspace_name": "ml", "subscription_id": "sub", "resource_group": "rg", "default_datastore": "raw"}))
    deep = tmp / "a" / "b"
    deep.mkdir(parents=True)
    ws = Workspace.from_config(deep)
    assert (ws.name, ws.subscription_id, ws.resource_group, ws._default_datastore) == ("ml", "sub", "rg", "raw")
    # config.json in the folder itself is found too, and `.azureml/` wins over it
    (deep / "config.json").write_text(json.dumps({"workspace_name": "inner"}))
    assert Workspace.from_config(deep).name == "inner"
    (tmp / "x").mkdir()
    assert Workspace.from_config(tmp / "x").name == "ml"


def test_write_config_round_trip(tmp):
    ws = Workspace("sub", "rg", "written", prefect_api_url="http://127.0.0.1:1/api")
    path = ws.write_config(tmp)
    assert path == tmp / ".azureml" / "config.json"
    back = Workspace.from_config(tmp)
    assert (back.name, back.prefect_api_url) == ("written", "http://127.0.0.1:1/api")


def test_bad_config_is_a_clear_error(tmp):
    (tmp / "config.json").write_text("{not json")
    with pytest.raises(UserErrorException, match="not valid JSON"):
        Workspace.from_config(tmp)


def test_no_config_gives_defaults(tmp):
    ws = Workspace.from_config(tmp)
    assert ws.name == "default"
