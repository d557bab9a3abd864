"""azd preprovision hook: tells the template what already exists in Azure.

azd runs it before every `azd provision` (azure.yaml, `hooks`), on every
machine and CI runner, with the environment's values in its environment. It
reads Azure with the Azure CLI (`az`, signed in like azd) and sets two azd
environment values that infra/main.parameters.json passes to the template:

- `APIM_SHARED_SECRET_EXISTS`: whether this environment's Key Vault already
  holds `apim-shared-secret`. When it does, the template leaves it alone, so
  the secret is created once and Key Vault stays its only home, whichever
  machine provisions next (each machine's azd generates its own
  `apimSharedSecret`). Read with Azure Resource Manager (secret names only,
  never values), so Contributor on the resource group is enough.
- `APIM_RESTORE`: whether `azd down` without `--purge` left this
  environment's API Management instance soft-deleted (it stays so for 48
  hours, its name taken). The template then restores it (`restore: true`)
  instead of failing to create it again.

Nothing secret passes through this script. Standard library only: it runs
with whatever `python3` is on the PATH, before any virtualenv exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

SECRET_NAME = "apim-shared-secret"
KEY_VAULT_API = "2023-07-01"
API_MANAGEMENT_API = "2024-05-01"

Az = Callable[[list[str]], Any]
SetValue = Callable[[str, str], None]


class HookError(RuntimeError):
    """What the hook cannot decide on its own; provisioning stops with this message."""


def az_cli(args: list[str]) -> Any:
    """`az <args> --output json`, parsed; a failure stops the hook with az's message."""
    proc = subprocess.run(["az", *args, "--output", "json"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise HookError(f"az {' '.join(args[:2])} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def azd_env_set(name: str, value: str) -> None:
    subprocess.run(["azd", "env", "set", name, value], check=True)


def _pages(az: Az, url: str) -> list[dict[str, Any]]:
    """Every item of an Azure Resource Manager list, following nextLink."""
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        page = az(["rest", "--method", "get", "--url", next_url]) or {}
        items.extend(page.get("value", []))
        next_url = page.get("nextLink")
    return items


def shared_secret_exists(az: Az, resource_group: str, environment: str) -> bool:
    """Whether the environment's Key Vault (tag azd-env-name) holds the shared secret."""
    if az(["group", "exists", "--name", resource_group]) is not True:
        return False
    vaults = az(
        [
            "resource",
            "list",
            "--resource-group",
            resource_group,
            "--resource-type",
            "Microsoft.KeyVault/vaults",
            "--tag",
            f"azd-env-name={environment}",
        ]
    )
    if not vaults:
        return False
    if len(vaults) > 1:
        raise HookError(f"resource group {resource_group} holds more than one Key Vault of environment {environment}")
    secrets = _pages(az, f"{vaults[0]['id']}/secrets?api-version={KEY_VAULT_API}")
    return any(secret.get("name", "").lower() == SECRET_NAME for secret in secrets)


def soft_deleted_api_management(
    az: Az, subscription_id: str, resource_group: str, known_name: str | None
) -> str | None:
    """The name of this environment's soft-deleted API Management instance, if any.

    Deleted instances are listed per subscription; theirs is the one in this
    resource group, named `apim-...` by main.bicep (or exactly the APIM_NAME a
    previous provision left in the azd environment).
    """
    deleted = _pages(
        az,
        f"/subscriptions/{subscription_id}/providers/Microsoft.ApiManagement/deletedservices"
        f"?api-version={API_MANAGEMENT_API}",
    )
    scope = f"/resourcegroups/{resource_group.lower()}/providers/microsoft.apimanagement/service/"
    names = sorted(
        item["name"]
        for item in deleted
        if scope in item.get("properties", {}).get("serviceId", "").lower()
        and (item["name"] == known_name if known_name else item["name"].startswith("apim-"))
    )
    if len(names) > 1:
        raise HookError(
            f"several soft-deleted API Management instances in {resource_group}: {names}; "
            "set APIM_NAME (azd env set APIM_NAME <name>) to the one to restore, or purge the others "
            "(az apim deletedservice purge --service-name <name> --location <region>)"
        )
    return names[0] if names else None


def main(environ: Mapping[str, str] = os.environ, az: Az = az_cli, set_value: SetValue = azd_env_set) -> int:
    resource_group = environ.get("AZURE_RESOURCE_GROUP", "")
    environment = environ.get("AZURE_ENV_NAME", "")
    if not resource_group or not environment:
        raise HookError("AZURE_RESOURCE_GROUP and AZURE_ENV_NAME must be set (azd env set AZURE_RESOURCE_GROUP <name>)")
    exists = shared_secret_exists(az, resource_group, environment)
    set_value("APIM_SHARED_SECRET_EXISTS", "true" if exists else "false")
    print(f"preprovision: Key Vault secret {SECRET_NAME} {'exists: kept as it is' if exists else 'is created'}")
    restore = None
    if environ.get("ENABLE_API_MANAGEMENT", "false").strip().lower() == "true":
        restore = soft_deleted_api_management(
            az, environ.get("AZURE_SUBSCRIPTION_ID", ""), resource_group, environ.get("APIM_NAME") or None
        )
    set_value("APIM_RESTORE", "true" if restore else "false")
    if restore:
        print(f"preprovision: API Management {restore} is soft-deleted; the template restores it")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HookError as error:
        print(f"preprovision: {error}", file=sys.stderr)
        sys.exit(1)
