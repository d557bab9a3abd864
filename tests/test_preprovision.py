"""The azd preprovision hook (infra/hooks/preprovision.py): what it tells the
template about the shared secret and a soft-deleted API Management, read from a
fake Azure CLI that answers like Azure Resource Manager."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

HOOK = Path(__file__).resolve().parents[1] / "infra" / "hooks" / "preprovision.py"
spec = importlib.util.spec_from_file_location("preprovision", HOOK)
assert spec and spec.loader
preprovision = importlib.util.module_from_spec(spec)
spec.loader.exec_module(preprovision)

SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
GROUP = "rg-llm-gateway"
VAULT_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.KeyVault/vaults/kv-abc123"
ENVIRON = {
    "AZURE_RESOURCE_GROUP": GROUP,
    "AZURE_ENV_NAME": "llm-gateway-prod",
    "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION,
    "ENABLE_API_MANAGEMENT": "true",
}
DELETED_URL = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.ApiManagement/deletedservices?api-version=2024-05-01"


class FakeAzure:
    """Answers the `az` calls the hook makes, from a small model of one subscription."""

    def __init__(self, group_exists=True, vaults=None, secret_pages=None, deleted=None):
        self.group_exists = group_exists
        self.vaults = [{"id": VAULT_ID, "name": "kv-abc123"}] if vaults is None else vaults
        self.secret_pages = secret_pages if secret_pages is not None else [[]]
        self.deleted = deleted or []
        self.calls: list[list[str]] = []

    def __call__(self, args: list[str]) -> Any:
        self.calls.append(args)
        if args[:2] == ["group", "exists"]:
            return self.group_exists
        if args[:2] == ["resource", "list"]:
            assert "--tag" in args and args[args.index("--tag") + 1] == "azd-env-name=llm-gateway-prod"
            return self.vaults
        assert args[:4] == ["rest", "--method", "get", "--url"], args
        url = args[4]
        if url == DELETED_URL:
            return {"value": self.deleted}
        prefix = f"{VAULT_ID}/secrets?api-version=2023-07-01"
        assert url.startswith(prefix), url
        page = int(url.split("&page=")[1]) if "&page=" in url else 0
        answer: dict[str, Any] = {"value": [{"name": name} for name in self.secret_pages[page]]}
        if page + 1 < len(self.secret_pages):
            answer["nextLink"] = f"{prefix}&page={page + 1}"
        return answer


def run(azure: FakeAzure, **environ: str) -> dict[str, str]:
    values: dict[str, str] = {}
    assert preprovision.main(ENVIRON | environ, azure, values.__setitem__) == 0
    return values


def deleted_service(name: str, group: str = GROUP) -> dict[str, Any]:
    return {
        "name": name,
        "location": "eastus2",
        "properties": {
            "serviceId": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}"
            f"/providers/Microsoft.ApiManagement/service/{name}",
            "scheduledPurgeDate": "2026-12-09T10:00:00Z",
        },
    }


def test_a_first_provision_creates_the_secret():
    assert run(FakeAzure(group_exists=False)) == {"APIM_SHARED_SECRET_EXISTS": "false", "APIM_RESTORE": "false"}
    assert run(FakeAzure(vaults=[]))["APIM_SHARED_SECRET_EXISTS"] == "false"


def test_an_existing_secret_is_found_on_any_page_and_kept():
    azure = FakeAzure(secret_pages=[["GOOGLE-VERTEX-CREDENTIALS"], ["AZURE-OPENAI-API-KEY", "apim-shared-secret"]])
    assert run(azure)["APIM_SHARED_SECRET_EXISTS"] == "true"
    assert run(FakeAzure(secret_pages=[["apim-shared-secret-previous"]]))["APIM_SHARED_SECRET_EXISTS"] == "false"


def test_nothing_secret_is_read():
    """Only Resource Manager listings: secret names, never `az keyvault secret show`."""
    azure = FakeAzure(secret_pages=[["apim-shared-secret"]])
    run(azure)
    assert all(call[0] in ("group", "resource", "rest") for call in azure.calls)
    assert not any("keyvault" in part for call in azure.calls for part in call)


def test_a_soft_deleted_api_management_of_this_group_is_restored():
    azure = FakeAzure(deleted=[deleted_service("apim-abc123"), deleted_service("apim-zzz999", group="rg-other")])
    assert run(azure)["APIM_RESTORE"] == "true"
    assert run(FakeAzure(deleted=[deleted_service("apim-zzz999", group="rg-other")]))["APIM_RESTORE"] == "false"


def test_without_api_management_nothing_is_restored_or_asked():
    azure = FakeAzure(deleted=[deleted_service("apim-abc123")])
    assert run(azure, ENABLE_API_MANAGEMENT="false")["APIM_RESTORE"] == "false"
    assert not any(DELETED_URL in call for call in azure.calls)


def test_several_deleted_instances_need_the_operator_to_choose():
    azure = FakeAzure(deleted=[deleted_service("apim-abc123"), deleted_service("apim-def456")])
    with pytest.raises(preprovision.HookError, match="APIM_NAME"):
        run(azure)
    assert run(azure, APIM_NAME="apim-def456")["APIM_RESTORE"] == "true"


def test_a_failing_az_stops_the_provision_with_its_message(tmp_path, monkeypatch):
    fake_az = tmp_path / "az"
    fake_az.write_text("#!/bin/sh\necho \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1\n")
    fake_az.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(preprovision.HookError, match="az login"):
        preprovision.az_cli(["group", "exists", "--name", GROUP])


def test_az_answers_are_parsed_as_json(tmp_path, monkeypatch):
    fake_az = tmp_path / "az"
    fake_az.write_text('#!/bin/sh\n[ "$*" = "group exists --name rg-llm-gateway --output json" ] && echo true\n')
    fake_az.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert preprovision.az_cli(["group", "exists", "--name", GROUP]) is True
