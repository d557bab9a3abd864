"""The management CLI against both stores: catalog import/export/validate and keys."""

import json

import pytest

from tests.conftest import catalog_documents
from tests.support import admin_cli


@pytest.fixture(params=["file", "cosmos"])
def store_env(request, tmp_path):
    if request.param == "file":
        (tmp_path / "models.json").write_text("[]")
        return {"MODELS_FILE": str(tmp_path / "models.json"), "PROJECTS_FILE": str(tmp_path / "projects.json")}
    cosmos = request.getfixturevalue("cosmos")
    database = f"cli-{tmp_path.name}"[:60]
    cosmos.seed(database, "models", "/id", [])
    cosmos.seed(database, "projects", "/id", [])
    return cosmos.settings(database)


def test_catalog_import_reports_created_updated_unchanged_and_export_round_trips(store_env, tmp_path):
    documents = catalog_documents("http://127.0.0.1:9")
    source = tmp_path / "catalog.json"
    source.write_text(json.dumps(documents))

    assert "valid model documents" in admin_cli(store_env, "catalog", "validate", str(source)).stdout
    assert (
        f"{len(documents)} created, 0 updated, 0 unchanged"
        in admin_cli(store_env, "catalog", "import", str(source)).stdout
    )
    documents[0]["name"] = "Renamed"
    source.write_text(json.dumps(documents))
    assert (
        f"0 created, 1 updated, {len(documents) - 1} unchanged"
        in admin_cli(store_env, "catalog", "import", str(source)).stdout
    )

    exported = tmp_path / "exported.json"
    admin_cli(store_env, "catalog", "export", str(exported))
    assert sorted(json.loads(exported.read_text()), key=lambda d: d["id"]) == sorted(documents, key=lambda d: d["id"])


def test_catalog_validate_names_every_bad_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            [
                {"id": "a", "provider": "Azure", "model_type": "AzureOpenAI", "code": "c"},
                {
                    "id": "b",
                    "provider": "Azure",
                    "model_type": "Teleport",
                    "code": "c",
                    "parameters": {"endpoint": "e"},
                },
            ]
        )
    )
    result = admin_cli({}, "catalog", "validate", str(bad), check=False)
    assert result.returncode == 1
    assert "'parameters.endpoint'" in result.stderr and "'model_type'" in result.stderr


def test_keys_lifecycle(store_env):
    admin_cli(store_env, "keys", "create-project", "team-z", "--name", "Team Z")
    assert admin_cli(store_env, "keys", "create-project", "team-z", check=False).returncode == 1
    for days in ("0", "-3", "soon"):
        refused = admin_cli(store_env, "keys", "issue", "team-z", "--expires-days", days, check=False)
        assert refused.returncode == 2 and "--expires-days" in refused.stderr
    key = admin_cli(store_env, "keys", "issue", "team-z", "--name", "ci").stdout.strip().splitlines()[-1]
    listing = admin_cli(store_env, "keys", "list").stdout
    assert "team-z" in listing and "active" in listing and key not in listing
    key_id = listing.splitlines()[1].split()[0]
    admin_cli(store_env, "keys", "disable", key_id)
    assert "disabled" in admin_cli(store_env, "keys", "list", "team-z").stdout
    admin_cli(store_env, "keys", "delete", key_id)
    assert key_id not in admin_cli(store_env, "keys", "list").stdout
