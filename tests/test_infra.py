"""The deployment templates (infra/): checkov's Azure policies pass, and the
templates agree with the code: app settings, Cosmos containers, API Management
routes and policy.

checkov cannot share the project's virtualenv (it pins packaging<24, LiteLLM
needs packaging>=24), so it is looked up in this order: $CHECKOV, next to this
Python (the venv's bin), .venv/checkov/bin (see infra/requirements-checkov.txt),
then PATH.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from shared.gate import HEADER as GATE_HEADER
from shared.settings import COSMOS_CONTAINERS, SETTING_NAMES

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
MAIN = INFRA / "main.bicep"
MODULES = INFRA / "modules"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

INSTALL_HINT = (
    "python3 -m venv .venv/checkov && "
    ".venv/checkov/bin/pip install --require-hashes -r infra/requirements-checkov.txt "
    "(or set CHECKOV=/path/to/checkov)"
)

# App settings the platform and SDKs need on Flex Consumption with identity-based access.
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "AZURE_CLIENT_ID",
    "PYTHON_ENABLE_INIT_INDEXING",
}

# Microsoft's "Flex Consumption plan deprecations" (Functions app settings
# reference): app settings that Flex Consumption replaced (functionAppConfig,
# remote build) or does not use...
FLEX_DEPRECATED_SETTINGS = {
    "ENABLE_ORYX_BUILD",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTOVERVNET",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_DNS_SERVER",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
    "WEBSITE_VNET_ROUTE_ALL",
    "WEBSITE_USE_PLACEHOLDER_DOTNETISOLATED",
    "WEBSITE_MOUNT_ENABLED",
}
# ...and site properties it rejects outright (ARM error 51021, "The following
# list of ... site configuration properties ... for Flex Consumption sites is
# invalid") or ignores. The list also names the ones the Azure Verified Module
# for sites (avm-res-web-site) keeps out of Flex Consumption sites.
FLEX_DEPRECATED_SITE_PROPERTIES = {
    "alwaysOn",
    "containerSize",
    "ftpsState",
    "isReserved",
    "isXenon",
    "javaContainer",
    "javaContainerVersion",
    "javaVersion",
    "linuxFxVersion",
    "netFrameworkVersion",
    "nodeVersion",
    "phpVersion",
    "powerShellVersion",
    "pythonVersion",
    "functionAppScaleLimit",
    "functionsRuntimeScaleMonitoringEnabled",
    "preWarmedInstanceCount",
    "use32BitWorkerProcess",
    "vnetBackupRestoreEnabled",
    "vnetContentShareEnabled",
    "vnetImagePullEnabled",
    "vnetRouteAllEnabled",
    "windowsFxVersion",
}
# Key-based storage settings that must not appear either.
FORBIDDEN_SETTINGS = FLEX_DEPRECATED_SETTINGS | {"AzureWebJobsStorage"}


# --- reading Bicep -----------------------------------------------------------


def strip_comments(text: str) -> str:
    """Bicep source without // and /* */ comments (strings are kept intact)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "'":
            end = i + 1
            while end < n and text[end] != "'":
                end += 2 if text[end] == "\\" else 1
            out.append(text[i : end + 1])
            i = end + 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def bicep(path: Path) -> str:
    return strip_comments(path.read_text())


def block(text: str, opening: str) -> str:
    """The bracketed body that starts at `opening` (which ends with { or [)."""
    start = text.find(opening)
    assert start >= 0, f"{opening!r} not found"
    i = start + len(opening)
    depth = 1
    in_string = False
    while depth:
        char = text[i]
        if in_string:
            if char == "\\":
                i += 1
            elif char == "'":
                in_string = False
        elif char == "'":
            in_string = True
        elif char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
        i += 1
    return text[start + len(opening) : i - 1]


def resource_block(text: str, name: str) -> str:
    """The body of `resource <name> ...`, whose declaration line ends with {."""
    match = re.search(rf"^resource {name} .*\{{$", text, re.MULTILINE)
    assert match, f"resource {name} not found"
    return block(text, match.group(0))


def object_entries(text: str, opening: str) -> dict[str, str]:
    """Top-level `key: value` lines of the object literal that starts at `opening`."""
    entries: dict[str, str] = {}
    depth = 0
    for line in block(text, opening).splitlines():
        if depth == 0:
            match = re.match(r"\s*'?([A-Za-z_][\w-]*)'?\s*:\s*(.*?)\s*$", line)
            if match:
                entries[match.group(1)] = match.group(2)
        depth += sum(line.count(c) for c in "{[(") - sum(line.count(c) for c in "}])")
    return entries


def declared_params(text: str) -> dict[str, bool]:
    """Parameter name -> whether it has a default value."""
    return {
        match.group(1): bool(match.group(2))
        for match in re.finditer(r"^param\s+(\w+)\s+\w+(\s*=)?", text, re.MULTILINE)
    }


# --- checkov -----------------------------------------------------------------


def find_checkov() -> str | None:
    override = os.environ.get("CHECKOV")
    if override:
        return override
    return (
        shutil.which("checkov", path=str(Path(sys.executable).parent))
        or shutil.which("checkov", path=str(REPO / ".venv" / "checkov" / "bin"))
        or shutil.which("checkov")
    )


class CheckovReport(dict):
    """checkov's JSON report, shown briefly in test failures."""

    def __repr__(self) -> str:
        return f"<checkov report {self['summary']}>"


@pytest.fixture(scope="module")
def checkov() -> CheckovReport:
    """checkov's JSON report for infra/ (Bicep framework, offline)."""
    executable = find_checkov()
    if executable is None:
        pytest.fail(f"checkov is not installed: {INSTALL_HINT}")
    command = [
        executable,
        "--directory",
        str(INFRA),
        "--framework",
        "bicep",
        "--output",
        "json",
        "--skip-download",  # no Prisma Cloud look-ups: offline and quick
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov did not produce a JSON report (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    reports = report if isinstance(report, list) else [report]
    bicep_reports = [r for r in reports if r.get("check_type") == "bicep"]
    assert bicep_reports, f"checkov scanned no Bicep resources in {INFRA}: {report}"
    return CheckovReport(bicep_reports[0])


def test_checkov_parses_every_template(checkov):
    errors = checkov["results"].get("parsing_errors", [])
    assert not errors, f"checkov could not parse: {errors}"
    assert checkov["summary"]["parsing_errors"] == 0
    assert checkov["summary"]["resource_count"] > 0
    assert checkov["summary"]["passed"] > 0


def test_checkov_finds_no_failed_check(checkov):
    failed = [
        f"{c['check_id']} {c['check_name']!r} on {c['resource']} ({c['file_path']}:{c['file_line_range']})"
        for c in checkov["results"]["failed_checks"]
    ]
    assert not failed, (
        "fix these, or skip each inside its resource with `//checkov:skip=CKV_AZURE_xxx: reason`:\n" + "\n".join(failed)
    )


SKIP_COMMENT = re.compile(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def skip_comments() -> list[tuple[str, str, str]]:
    return [
        (path.name, match.group(1), (match.group(2) or "").strip())
        for path in BICEP_FILES
        for match in SKIP_COMMENT.finditer(path.read_text())
    ]


def test_every_skipped_check_says_why():
    unexplained = [f"{file}: {check}" for file, check, reason in skip_comments() if len(reason) < 20]
    assert not unexplained, f"a checkov skip needs a written reason: {unexplained}"


def test_every_skip_comment_is_still_needed(checkov):
    used = {(Path(c["file_path"]).name, c["check_id"]) for c in checkov["results"]["skipped_checks"]}
    stale = [f"{file}: {check}" for file, check, _ in skip_comments() if (file, check) not in used]
    assert not stale, f"these skips match no check any more; remove them: {stale}"


# --- the templates agree with the code ----------------------------------------


def gateway_settings() -> dict[str, str]:
    return object_entries(bicep(MAIN), "var gatewaySettings = {")


def platform_settings() -> dict[str, str]:
    return object_entries(bicep(MODULES / "function-app.bicep"), "var platformSettings = {")


def test_every_setting_the_code_reads_is_set_in_azure():
    missing = [name for name in SETTING_NAMES if name not in gateway_settings()]
    assert not missing, f"add to gatewaySettings in infra/main.bicep: {missing}"


def test_every_setting_the_code_reads_is_in_the_local_example():
    values = json.loads((REPO / "local.settings.json.example").read_text())["Values"]
    missing = [name for name in SETTING_NAMES if name not in values]
    assert not missing, f"add to local.settings.json.example: {missing}"


def test_platform_settings_use_the_managed_identity():
    platform = platform_settings()
    assert platform.keys() >= PLATFORM_SETTINGS, PLATFORM_SETTINGS - platform.keys()
    assert platform["AzureWebJobsStorage__credential"] == "'managedidentity'"
    assert platform["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert platform["AZURE_CLIENT_ID"] == "identityClientId"
    assert platform["PYTHON_ENABLE_INIT_INDEXING"] == "'1'"
    assert "Authorization=AAD" in platform["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    overlap = platform.keys() & gateway_settings().keys()
    assert not overlap, f"set in both main.bicep and function-app.bicep: {overlap}"


def test_no_keys_and_no_settings_flex_consumption_rejects():
    gateway = gateway_settings()
    assert gateway["COSMOS_KEY"] == "''", "COSMOS_KEY must be empty: the app uses its managed identity"
    assert gateway["ALLOW_ANONYMOUS"] == "'false'"
    names = gateway.keys() | platform_settings().keys()
    assert not names & FORBIDDEN_SETTINGS, names & FORBIDDEN_SETTINGS
    for path in BICEP_FILES:
        text = bicep(path)
        assert "listKeys(" not in text, f"{path.name} reads an account key"
        assert "AccountKey=" not in text, f"{path.name} builds a key-based connection string"


def property_names(text: str) -> set[str]:
    """Every `name:` key in a block of Bicep (any depth), quotes removed."""
    return set(re.findall(r"^\s*'?([A-Za-z_][\w-]*)'?\s*:", text, re.MULTILINE))


def site_resource() -> str:
    return resource_block(bicep(MODULES / "function-app.bicep"), "app")


def test_the_function_app_sets_nothing_flex_consumption_deprecates():
    names = {name.lower() for name in property_names(site_resource())}
    rejected = sorted(p for p in FLEX_DEPRECATED_SITE_PROPERTIES if p.lower() in names)
    assert not rejected, f"Flex Consumption rejects or ignores these site properties: {rejected}"
    settings = {name.upper() for name in gateway_settings().keys() | platform_settings().keys()}
    deprecated = sorted(name for name in FLEX_DEPRECATED_SETTINGS if name.upper() in settings)
    assert not deprecated, f"Flex Consumption deprecates these app settings: {deprecated}"


def test_the_deprecation_check_sees_a_rejected_property():
    """The check above reads nested siteConfig keys, not only top-level ones."""
    site = site_resource().replace("http20Enabled: true", "http20Enabled: true\n      ftpsState: 'Disabled'")
    assert "ftpsState" in property_names(site)
    assert "http20Enabled" in property_names(site_resource())


def test_cosmos_containers_and_partition_keys():
    text = bicep(MODULES / "cosmos.bicep")
    declared = dict(re.findall(r"name:\s*'([^']+)'\s*partitionKey:\s*'([^']+)'", block(text, "var containers = [")))
    for container, partition_key in COSMOS_CONTAINERS.items():
        assert container in declared, f"container {container!r} is not declared in cosmos.bicep"
        assert declared[container] == partition_key, (
            f"container {container!r}: partition key {declared[container]!r}, the code uses {partition_key!r}"
        )
    assert re.search(r"paths:\s*\[\s*c\.partitionKey\s*\]", text), "containers must use their partitionKey"
    assert re.search(r"disableLocalAuth:\s*true", text), "Cosmos key auth must be disabled"
    gateway = gateway_settings()
    for setting in ("COSMOS_CONTAINER_ID", "COSMOS_PROJECTS_CONTAINER_ID", "COSMOS_USAGE_CONTAINER_ID"):
        assert gateway[setting].strip("'") in declared, f"{setting} names an undeclared container"


def test_the_usage_container_is_indexed_as_the_code_indexes_it():
    """Bicep's usage indexing policy is shared/usage.py's: only what the report query filters on."""
    from shared.usage import USAGE_INDEXING_POLICY

    policy = block(bicep(MODULES / "cosmos.bicep"), "var usageIndexingPolicy = {")
    paths = {
        kind: re.findall(r"path:\s*'([^']+)'", block(policy, f"{kind}: ["))
        for kind in ("includedPaths", "excludedPaths")
    }
    assert paths == {kind: [entry["path"] for entry in USAGE_INDEXING_POLICY[kind]] for kind in paths}
    assert "/*" in paths["excludedPaths"]
    assert re.search(r"indexingMode:\s*'consistent'", policy)
    usage = block(bicep(MODULES / "cosmos.bicep"), "var containers = [").split("name: 'usage-by-day'")[1]
    assert re.search(r"indexingPolicy:\s*usageIndexingPolicy", usage), "the usage container must use the policy"
    assert re.search(r"resource:\s*union\(\{.*\},\s*c\.settings\)", bicep(MODULES / "cosmos.bicep"), re.DOTALL)


def test_usage_retention_is_one_parameter_for_the_container_ttl_and_the_app():
    cosmos = bicep(MODULES / "cosmos.bicep")
    usage = block(cosmos, "var containers = [").split("name: 'usage-by-day'")[1]
    assert re.search(r"usageRetentionDays > 0 \? \{ defaultTtl: usageRetentionDays \* 86400 \} : \{\}", usage), (
        "the usage container's defaultTtl must be the retention in seconds, and absent (keep forever) for 0"
    )
    assert re.search(r"@minValue\(0\)\s*param usageRetentionDays int = 0", cosmos)
    main = bicep(MAIN)
    assert re.search(r"@minValue\(0\)\s*param usageRetentionDays int = 0", main)
    assert re.search(
        r"usageRetentionDays:\s*usageRetentionDays", block(main, "module cosmos 'modules/cosmos.bicep' = {")
    )
    assert gateway_settings()["USAGE_RETENTION_DAYS"] == "string(usageRetentionDays)"
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["usageRetentionDays"] == {"value": "${USAGE_RETENTION_DAYS=0}"}


def test_cosmos_data_plane_role_for_the_app():
    text = bicep(MODULES / "rbac.bicep")
    assert "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments" in text
    assert "00000000-0000-0000-0000-000000000002" in text  # Cosmos DB Built-in Data Contributor
    assert "4633458b-17de-408a-b874-0445c86b69e6" in text  # Key Vault Secrets User


def test_cosmos_role_assignments_are_written_one_after_the_other():
    """Cosmos refuses concurrent role-assignment writes on one account."""
    text = bicep(MODULES / "rbac.bicep")
    assignments = re.findall(
        r"^resource (\w+) 'Microsoft\.DocumentDB/databaseAccounts/sqlRoleAssignments@[^']+' = (?:if \([^)]*\) )?\{",
        text,
        re.MULTILINE,
    )
    assert len(assignments) >= 2, assignments
    for earlier, later in itertools.pairwise(assignments):
        body = resource_block(text, later)
        depends = block(body, "dependsOn: [") if "dependsOn: [" in body else ""
        assert earlier in depends.split(), f"{later} must dependsOn {earlier}"


def app_routes() -> set[tuple[str, str]]:
    """(METHOD, /path) of every HTTP function `function_app.app` registers."""
    import function_app

    routes = set()
    for builder in function_app.app._function_builders:
        name, trigger = builder._function.get_function_name(), builder._function.get_trigger()
        assert trigger.methods, f"{name}: give the route explicit methods"
        if "{*" in trigger.route:
            continue  # the catch-all answers unknown routes; API Management answers those itself
        for method in trigger.methods:
            routes.add((str(getattr(method, "value", method)).upper(), "/" + trigger.route.strip("/")))
    return routes


def apim_operations() -> set[tuple[str, str]]:
    text = bicep(MODULES / "apim.bicep")
    entries = re.findall(r"'([\w-]+) ([A-Z]+) (/\S*)'", block(text, "var operations = ["))
    names = [name for name, _, _ in entries]
    assert len(names) == len(set(names)), f"duplicate APIM operation names: {names}"
    return {(method, path) for _, method, path in entries}


def test_api_management_exposes_every_route():
    routes, operations = app_routes(), apim_operations()
    assert routes, "no routes found in function_app.py"
    missing, stale = sorted(routes - operations), sorted(operations - routes)
    assert not missing, f"add to `operations` in infra/modules/apim.bicep: {missing}"
    assert not stale, f"remove from `operations` in infra/modules/apim.bicep: {stale}"


API_POLICY = MODULES / "apim-policy.xml"
LLM_POLICY = MODULES / "apim-llm-policy.xml"
TOKEN_POLICIES = (
    "llm-token-limit",
    "azure-openai-token-limit",
    "llm-emit-token-metric",
    "azure-openai-emit-token-metric",
)
#: Paths whose operations call a language model and return token usage, in every route shape.
TOKEN_METERED_PATH = re.compile(r"/((chat/)?completions|responses|embeddings)$")


def test_api_management_policy_streams_and_sends_the_shared_secret():
    raw = API_POLICY.read_text()
    policy = ET.fromstring(raw)
    forward = policy.find("./backend/forward-request")
    assert forward is not None
    assert forward.get("buffer-response") == "false", "streams must not be buffered"
    assert 0 < int(forward.get("timeout")) <= 230, "the platform cuts responses at about 230 s"
    secret = [h for h in policy.iter("set-header") if h.get("name", "").lower() == GATE_HEADER]
    assert len(secret) == 1, f"the API policy must set {GATE_HEADER} for the app's gate"
    assert secret[0].get("exists-action") == "override", "a client must not supply its own value"
    assert secret[0].findtext("value") == "{{apim-shared-secret}}"
    for name in TOKEN_POLICIES:
        assert policy.find(f".//{name}") is None, f"{name} belongs on the LLM operations only"
    for path in (API_POLICY, LLM_POLICY):
        raw = path.read_text()
        assert "Response.Body" not in raw, "reading the response body buffers streams"
        for header in ET.fromstring(raw).iter("set-header"):
            assert header.get("name", "").lower() != "authorization", "Authorization carries the gateway key"


def test_the_llm_operations_limit_and_meter_tokens():
    policy = ET.fromstring(LLM_POLICY.read_text())
    assert policy.find("./inbound/base") is not None, "the API-level policy (shared secret) must run first"
    limit = policy.find("./inbound/azure-openai-token-limit")
    assert limit is not None, "a token limit policy is required"
    assert "context.Subscription.Id" in limit.get("counter-key", "")
    metric = policy.find("./inbound/azure-openai-emit-token-metric")
    assert metric is not None
    assert {d.get("name") for d in metric.iter("dimension")} == {"Subscription ID", "API ID", "Operation ID"}
    text = bicep(MODULES / "apim.bicep")
    assert "loadTextContent('apim-llm-policy.xml')" in text
    assert "Microsoft.ApiManagement/service/apis/operations/policies" in text


def test_token_policies_apply_to_the_llm_operations_only():
    text = bicep(MODULES / "apim.bicep")
    metered = set(re.findall(r"'([\w-]+)'", block(text, "var tokenMeteredOperations = [")))
    entries = re.findall(r"'([\w-]+) ([A-Z]+) (/\S*)'", block(text, "var operations = ["))
    expected = {name for name, _, path in entries if TOKEN_METERED_PATH.search(path)}
    assert {"chat-completions", "completions", "responses", "embeddings"} <= expected
    assert metered == expected, f"token-metered operations {sorted(metered)}, LLM routes {sorted(expected)}"
    declaration = re.search(r"^resource tokenPolicies .*$", text, re.MULTILINE).group(0)
    assert "[for (operation, i) in operations: if (contains(tokenMeteredOperations, split(operation, ' ')[0]))" in (
        declaration
    )
    assert "parent: apiOperations[i]" in resource_block(text, "tokenPolicies")


def test_api_management_reads_the_shared_secret_from_key_vault():
    text = bicep(MODULES / "apim.bicep")
    named_value = resource_block(text, "sharedSecretValue")
    assert re.search(r"secret:\s*true", named_value)
    assert re.search(r"secretIdentifier:\s*sharedSecretVersionUri", named_value)
    assert re.search(r"identityClientId:\s*secretReader\.properties\.clientId", named_value)
    assert re.search(r"name:\s*'apim-shared-secret'", named_value)
    access = resource_block(text, "sharedSecretAccess")
    assert re.search(r"scope:\s*sharedSecret\b", access), "read access to the one secret, not the vault"
    assert "4633458b-17de-408a-b874-0445c86b69e6" in text  # Key Vault Secrets User
    assert "sharedSecretAccess" in block(named_value, "dependsOn: [")
    assert "sharedSecretValue" in block(resource_block(text, "apiPolicy"), "dependsOn: [")


def test_the_app_requires_the_shared_secret_when_api_management_is_on():
    settings = gateway_settings()
    assert settings["APIM_SHARED_SECRET"] == "enableApiManagement ? '$${keyVault.outputs.apimSharedSecretName}' : ''"
    assert settings["APIM_SHARED_SECRET_PREVIOUS"] == (
        "enableApiManagement ? '$${keyVault.outputs.apimSharedSecretPreviousName}' : ''"
    )
    vault = bicep(MODULES / "keyvault.bicep")
    assert "var apimSharedSecretName = 'apim-shared-secret'" in vault
    assert "var apimSharedSecretPreviousName = 'apim-shared-secret-previous'" in vault
    main = bicep(MAIN)
    assert "@secure()" in main.split("param apimSharedSecret string")[0].rsplit("param ", 1)[-1]
    assert "type: 'generate'" in main.split("param apimSharedSecret string")[0].rsplit("param ", 1)[-1]


def test_api_management_settings():
    text = bicep(MODULES / "apim.bicep")
    assert "loadTextContent('apim-policy.xml')" in text
    assert re.search(r"header:\s*'Ocp-Apim-Subscription-Key'", text)
    skus = re.findall(r"'(\w+)'", block(text, "@allowed(["))
    assert skus and "Consumption" not in skus, skus
    assert re.search(r"metrics:\s*true", text), "llm-emit-token-metric needs diagnostics with metrics"
    monitoring = bicep(MODULES / "monitoring.bicep")
    assert re.search(r"CustomMetricsOptedInType:\s*'WithDimensions'", monitoring), (
        "llm-emit-token-metric's dimensions need custom metrics with dimensions in Application Insights"
    )
    bodies = re.findall(r"bytes:\s*(\d+)", text)
    assert bodies and set(bodies) == {"0"}, "logging bodies would buffer streams"


def test_function_app_runs_on_flex_consumption():
    text = bicep(MODULES / "function-app.bicep")
    assert re.search(r"tier:\s*'FlexConsumption'", text)
    assert re.search(r"httpsOnly:\s*true", text)
    assert re.search(r"type:\s*'UserAssigned'", text)
    assert re.search(r"name:\s*'python'", text)
    assert re.search(r"param pythonVersion string = '3\.11'", text)


def test_instances_have_room_for_the_gateway():
    """512 MB Flex instances are not offered: the worker peaks near 290 MB under streaming load."""
    for path in (MAIN, MODULES / "function-app.bicep"):
        text = bicep(path)
        allowed = block(text, "@allowed([\n  2048")
        assert re.findall(r"\d+", "2048" + allowed) == ["2048", "4096"], path.name
        assert "param instanceMemoryMB int = 2048" in text, path.name


def test_outputs_for_azd():
    outputs = set(re.findall(r"^output\s+(\w+)\s", bicep(MAIN), re.MULTILINE))
    expected = {"AZURE_FUNCTION_APP_NAME", "GATEWAY_URL", "APIM_GATEWAY_URL", "COSMOS_URL", "KEY_VAULT_URL"}
    assert expected <= outputs, expected - outputs


def azd_generated_params(text: str) -> set[str]:
    """Parameters azd generates once per environment (`@metadata({azd: {type: 'generate'}})`)."""
    generated = set()
    for match in re.finditer(r"^param\s+(\w+)\s", text, re.MULTILINE):
        decorators = text[: match.start()].rsplit("\n\n", 1)[-1]
        if "type: 'generate'" in decorators:
            generated.add(match.group(1))
    return generated


def test_parameters_file_matches_main():
    text = bicep(MAIN)
    params = declared_params(text)
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    unknown = values.keys() - params.keys()
    assert not unknown, f"main.parameters.json sets undeclared parameters: {unknown}"
    generated = azd_generated_params(text)
    assert generated == {"apimSharedSecret"}, generated
    required = {name for name, has_default in params.items() if not has_default} - generated
    assert required <= values.keys(), f"main.parameters.json lacks: {required - values.keys()}"


def test_key_vault_purge_protection_is_on_for_production_only():
    vault = bicep(MODULES / "keyvault.bicep")
    assert re.search(r"enablePurgeProtection:\s*enablePurgeProtection \? true : null", vault), (
        "Key Vault rejects enablePurgeProtection: false; off must leave the property out"
    )
    assert re.search(r"enableSoftDelete:\s*true", vault)
    main = bicep(MAIN)
    assert "param keyVaultPurgeProtection bool = gatewayEnvironment == 'production'" in main
    assert re.search(
        r"enablePurgeProtection:\s*keyVaultPurgeProtection", block(main, "module keyVault 'modules/keyvault.bicep' = {")
    )
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["keyVaultPurgeProtection"]["value"] == "${KEY_VAULT_PURGE_PROTECTION}", (
        "unset must leave the Bicep default (production: on) in force"
    )


def test_modules_exist():
    text = bicep(MAIN)
    for module in re.findall(r"^module\s+\w+\s+'([^']+)'", text, re.MULTILINE):
        assert (INFRA / module).is_file(), module
    for path in BICEP_FILES:
        for loaded in re.findall(r"loadTextContent\('([^']+)'\)", bicep(path)):
            assert (path.parent / loaded).is_file(), loaded


def test_azure_yaml_deploys_the_function_app():
    raw = (REPO / "azure.yaml").read_text()
    config = yaml.safe_load(raw)
    api = config["services"]["api"]
    assert api == {"project": ".", "language": "python", "host": "function"}
    assert config.get("infra", {}).get("path", "infra") == "infra"
    assert "'azd-service-name': 'api'" in bicep(MODULES / "function-app.bicep")
    for mentioned in re.findall(r"[\w./-]+\.(?:md|bicep|json|txt)\b", re.sub(r"https?://\S+", "", raw)):
        assert (REPO / mentioned).is_file(), f"azure.yaml points at {mentioned}, which does not exist"


def test_the_deployment_package_leaves_out_bytecode_and_development_files():
    ignored = set((REPO / ".funcignore").read_text().split())
    assert {"__pycache__/", ".venv/", "tests/", "infra/", "local.settings.json"} <= ignored


# --- the deployment holds (issue 19) ----------------------------------------


def parameter_decorators(text: str, name: str) -> str:
    """The decorators and comments above `param <name>`."""
    before = text.split(f"\nparam {name} ", 1)[0]
    return before.rsplit("\n\n", 1)[-1]


def test_azd_pipeline_config_finds_every_prompted_parameter_mapped():
    """`azd pipeline config` stops at a parameter whose value came from a local
    prompt or generation and that has no environment mapping."""
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    for name in azd_generated_params(bicep(MAIN)):
        assert name in values, f"map {name} to an environment variable in main.parameters.json"
    assert values["apimSharedSecret"]["value"] == "${APIM_SHARED_SECRET}"


def test_the_shared_secret_is_created_once_and_never_overwritten():
    vault = bicep(MODULES / "keyvault.bicep")
    assert re.search(
        r"^resource apimShared 'Microsoft\.KeyVault/vaults/secrets@[^']+' = if \(!apimSharedSecretExists\) \{$",
        vault,
        re.MULTILINE,
    ), "the template must write the secret only when it does not exist yet"
    main = bicep(MAIN)
    assert "param apimSharedSecretExists bool = false" in main
    module = block(main, "module keyVault 'modules/keyvault.bicep' = {")
    assert re.search(r"apimSharedSecretExists:\s*apimSharedSecretExists", module)
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["apimSharedSecretExists"]["value"] == "${APIM_SHARED_SECRET_EXISTS=false}"
    # Whoever provisions finds out first: azd runs the hook before every provision.
    hooks = yaml.safe_load((REPO / "azure.yaml").read_text())["hooks"]["preprovision"]
    for platform in ("posix", "windows"):
        assert hooks[platform]["run"].split()[-1] == "infra/hooks/preprovision.py"
    assert (INFRA / "hooks" / "preprovision.py").is_file()
    hook = (INFRA / "hooks" / "preprovision.py").read_text()
    assert '"APIM_SHARED_SECRET_EXISTS"' in hook and '"APIM_RESTORE"' in hook


def test_api_management_switches_secret_versions_only_when_provisioned():
    """Pinned to the version current at provision time, so API Management does
    not pick up a rotated secret before every app instance accepts it."""
    vault = bicep(MODULES / "keyvault.bicep")
    output = re.search(r"^output apimSharedSecretVersionUri string = (.*)$", vault, re.MULTILINE)
    assert output, "keyvault.bicep must output the current version's URI"
    assert output.group(1) == (
        "apimSharedSecretExists ? existingApimShared.properties.secretUriWithVersion "
        ": apimShared.properties.secretUriWithVersion"
    )
    assert not re.search(r"properties\.secretUri\b", vault), "a versionless URI would let API Management switch alone"
    main = bicep(MAIN)
    assert re.search(
        r"sharedSecretVersionUri:\s*keyVault\.outputs\.apimSharedSecretVersionUri",
        block(main, "module apim 'modules/apim.bicep' = if (enableApiManagement) {"),
    )


def test_no_key_vault_reference_anywhere():
    """Key Vault references do not resolve on Flex Consumption once the vault is
    network-restricted (they need vnetRouteAllEnabled, which Flex rejects): the
    app reads its secrets with its own Key Vault client."""
    for path in sorted(INFRA.rglob("*")):
        if path.is_file() and path.suffix in (".bicep", ".json", ".xml"):
            text = path.read_text()
            assert "@Microsoft.KeyVault(" not in text, f"{path.name} holds a Key Vault reference"
            assert "keyVaultReferenceIdentity" not in text, f"{path.name}: no Key Vault references to resolve"
    for name, value in gateway_settings().items():
        assert "Microsoft.KeyVault" not in value, name


def test_maximum_instance_count_is_bounded_as_flex_consumption_requires():
    for path in (MAIN, MODULES / "function-app.bicep"):
        decorators = parameter_decorators(bicep(path), "maximumInstanceCount")
        assert "@minValue(40)" in decorators, f"{path.name}: Flex Consumption rejects fewer than 40"
        assert "@maxValue(1000)" in decorators, f"{path.name}: Flex Consumption scales out to 1000 at most"


def test_publishing_credential_policies_have_a_location():
    text = bicep(MODULES / "function-app.bicep")
    policies = re.findall(
        r"^resource (\w+) 'Microsoft\.Web/sites/basicPublishingCredentialsPolicies@[^']+' = \{$", text, re.MULTILINE
    )
    assert sorted(policies) == ["ftp", "scm"]
    for name in policies:
        assert re.search(r"^\s*location:\s*location$", resource_block(text, name), re.MULTILINE), name


def test_embeddings_are_metered_by_api_management():
    """llm-token-limit and llm-emit-token-metric are documented for chat
    completions (and Responses) only; the azure-openai-* policies list
    embeddings too, so every token-metered operation uses those."""
    policy = ET.fromstring(LLM_POLICY.read_text())
    names = {element.tag for element in policy.iter()}
    assert {"azure-openai-token-limit", "azure-openai-emit-token-metric"} <= names
    assert not names & {"llm-token-limit", "llm-emit-token-metric"}, "llm-* policies do not count embeddings"
    metered = set(re.findall(r"'([\w-]+)'", block(bicep(MODULES / "apim.bicep"), "var tokenMeteredOperations = [")))
    assert {"embeddings", "azure-embeddings", "azure-v1-embeddings"} <= metered


def test_a_soft_deleted_api_management_is_restored():
    apim = bicep(MODULES / "apim.bicep")
    assert "param restore bool = false" in apim
    assert re.search(r"^\s*restore:\s*restore$", block(resource_block(apim, "apim"), "properties: {"), re.MULTILINE)
    main = bicep(MAIN)
    assert "param apimRestore bool = false" in main
    assert re.search(
        r"restore:\s*apimRestore", block(main, "module apim 'modules/apim.bicep' = if (enableApiManagement) {")
    )
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["apimRestore"]["value"] == "${APIM_RESTORE=false}"


#: Namespaces that need no registration: Microsoft.Authorization is registered
#: in every subscription; Cognitive Services accounts are existing ones only.
ALWAYS_REGISTERED = {"Microsoft.Authorization", "Microsoft.CognitiveServices"}


def test_the_readme_lists_the_resource_providers_to_register():
    used = {
        namespace for path in BICEP_FILES for namespace in re.findall(r"'(Microsoft\.[A-Za-z]+)/[^'@]+@", bicep(path))
    } - ALWAYS_REGISTERED
    readme = (REPO / "README.md").read_text()
    listed = set(re.findall(r"az provider register --namespace (Microsoft\.[A-Za-z]+)", readme))
    assert used <= listed, f"add to the README's provider registration: {sorted(used - listed)}"
    assert listed <= used | {"Microsoft.App"}, f"the templates use none of {sorted(listed - used)}"
