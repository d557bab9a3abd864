"""Secret references: resolution, caching, single flight, clear errors."""

import asyncio

import pytest

from shared.errors import ConfigurationError
from shared.secrets import EnvironmentSecretSource, SecretResolver
from shared.settings import Settings


class CountingSource:
    description = "counting source"

    def __init__(self, values):
        self.values = values
        self.calls = 0

    async def get(self, name):
        self.calls += 1
        await asyncio.sleep(0.01)
        return self.values.get(name)


def test_references_resolve_and_other_parameters_stay():
    resolver = SecretResolver(EnvironmentSecretSource({"API_KEY": "s3cret"}))
    resolved = asyncio.run(resolver.resolve_parameters({"api_key": "$API_KEY", "endpoint": "https://x"}, model_id="m"))
    assert resolved == {"api_key": "s3cret", "endpoint": "https://x"}


def test_a_missing_reference_names_the_reference_and_the_model():
    resolver = SecretResolver(EnvironmentSecretSource({}))
    with pytest.raises(ConfigurationError) as caught:
        asyncio.run(resolver.resolve_parameters({"api_key": "$MISSING_KEY"}, model_id="gpt-4o"))
    assert "$MISSING_KEY" in caught.value.message and "gpt-4o" in caught.value.message
    assert caught.value.status == 500


def test_concurrent_lookups_share_one_source_call_and_values_are_cached_for_the_ttl():
    source = CountingSource({"K": "v1"})
    now = [0.0]
    resolver = SecretResolver(source, ttl_seconds=300, clock=lambda: now[0])

    async def scenario():
        values = await asyncio.gather(*(resolver.resolve("K", model_id="m") for _ in range(50)))
        now[0] = 299
        await resolver.resolve("K", model_id="m")
        source.values["K"] = "v2"
        now[0] = 301
        while_refreshing = await resolver.resolve("K", model_id="m")
        await settled()
        return values, while_refreshing, await resolver.resolve("K", model_id="m")

    values, while_refreshing, rotated = asyncio.run(scenario())
    assert set(values) == {"v1"}
    assert (while_refreshing, rotated) == ("v1", "v2")
    assert source.calls == 2


async def settled():
    """Let every background task (a refresh) finish."""
    while tasks := asyncio.all_tasks() - {asyncio.current_task()}:
        await asyncio.wait(tasks)


def test_a_stale_secret_is_answered_at_once_while_the_vault_hangs():
    class HangingVault(CountingSource):
        hang: asyncio.Event | None = None

        async def get(self, name):
            if self.hang is not None:
                await self.hang.wait()
            return await super().get(name)

    source, now = HangingVault({"API_KEY": "s3cret"}), [0.0]
    resolver = SecretResolver(source, ttl_seconds=300, clock=lambda: now[0])

    async def scenario():
        assert await resolver.resolve("API_KEY", model_id="m") == "s3cret"
        source.hang, now[0] = asyncio.Event(), 301.0
        answers = [await asyncio.wait_for(resolver.resolve("API_KEY", model_id="m"), 0.5) for _ in range(5)]
        source.hang.set()
        await settled()
        return answers

    assert asyncio.run(scenario()) == ["s3cret"] * 5
    assert source.calls == 2  # the five stale answers started one refresh


def test_a_cancelled_waiter_does_not_cancel_the_others():
    source = CountingSource({"API_KEY": "s3cret"})
    resolver = SecretResolver(source)

    async def scenario():
        first = asyncio.ensure_future(resolver.resolve("API_KEY", model_id="m"))
        others = [asyncio.ensure_future(resolver.resolve("API_KEY", model_id="m")) for _ in range(3)]
        await asyncio.sleep(0)
        first.cancel()  # the caller that started the Key Vault read hangs up
        return await asyncio.gather(*others)

    assert asyncio.run(scenario()) == ["s3cret"] * 3
    assert source.calls == 1


def test_a_known_secret_is_served_through_a_vault_outage_for_the_stale_period():
    class Vault(CountingSource):
        down = False

        async def get(self, name):
            if self.down:
                self.calls += 1
                raise ConfigurationError("vault unreachable")
            return await super().get(name)

    source, now = Vault({"API_KEY": "s3cret"}), [0.0]
    resolver = SecretResolver(source, ttl_seconds=300, clock=lambda: now[0], stale_seconds=600)

    async def scenario():
        assert await resolver.resolve("API_KEY", model_id="m") == "s3cret"
        source.down, now[0] = True, 500.0  # past the TTL, within the stale period
        assert await resolver.resolve("API_KEY", model_id="m") == "s3cret"
        calls = source.calls
        now[0] = 510.0
        assert await resolver.resolve("API_KEY", model_id="m") == "s3cret"
        assert source.calls == calls  # not asked again for a while (RETRY_SECONDS)
        now[0] = 1000.0  # past the stale period
        with pytest.raises(ConfigurationError):
            await resolver.resolve("API_KEY", model_id="m")

    asyncio.run(scenario())


def test_no_credential_setting_appears_in_the_settings_repr():
    settings = Settings.from_environment({"COSMOS_KEY": "cosmos-account-key-0123", "APIM_SHARED_SECRET": "apim-0123"})
    assert settings.cosmos_key == "cosmos-account-key-0123"
    assert "cosmos-account-key-0123" not in repr(settings) and "apim-0123" not in repr(settings)
