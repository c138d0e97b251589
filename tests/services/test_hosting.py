"""Hosting providers: the Hostwinds client against a local server speaking its Cloud API
(tests/hostwinds_server.py), and the local provider's shared state file."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from penguinmails.settings import Settings
from services import hosting
from services.hosting import ACTIVE, BUILDING, HostingError, HostwindsProvider, LocalProvider
from tests.hostwinds_server import API_KEY, NETWORK, FakeHostwinds, running_hostwinds


def label() -> str:
    return f"pm-{uuid.uuid4()}"


@pytest.fixture
async def fake() -> AsyncIterator[tuple[str, FakeHostwinds]]:
    async with running_hostwinds(build_reads=2) as served:
        yield served


def hostwinds_settings(settings: Settings, base: str, key: str = API_KEY) -> Settings:
    return settings.model_copy(
        update={
            "hostwinds_api_key": SecretStr(key),
            "hostwinds_api_base": base,
            "hostwinds_timeout_seconds": 2.0,
            "hostwinds_locations": {"dallas": 1, "seattle": 2},
            "hostwinds_plan_id": 7,
            "hostwinds_image_id": 42,
            "vps_hostname_domain": "mta.example.test",
        }
    )


@pytest.fixture
async def hostwinds(
    settings: Settings, fake: tuple[str, FakeHostwinds]
) -> AsyncIterator[HostwindsProvider]:
    client = HostwindsProvider(hostwinds_settings(settings, fake[0]))
    client.ip_confirm_interval = 0.01
    yield client
    await client.aclose()


async def active_instance(hostwinds: HostwindsProvider, name: str) -> hosting.Instance:
    instance = await hostwinds.create_instance(name, "dallas")
    while instance.state != ACTIVE:
        instance = await hostwinds.get_instance(instance.provider_id)
    return instance


# --- Hostwinds ---------------------------------------------------------------------------------


async def test_an_instance_is_ordered_once_and_builds_until_hostwinds_reports_it_active(
    hostwinds: HostwindsProvider, fake: tuple[str, FakeHostwinds]
) -> None:
    _, server = fake
    name = label()

    created = await hostwinds.create_instance(name, "seattle")
    assert (created.label, created.state, created.region) == (name, BUILDING, "seattle")
    assert (await hostwinds.get_instance(created.provider_id)).state == BUILDING
    active = await hostwinds.get_instance(created.provider_id)

    assert active.state == ACTIVE
    assert ipaddress.ip_address(active.primary_ip) in NETWORK
    assert server.purchases["instances"] == 1
    order = server.requests[0]
    assert order.action == "add_instance"
    assert order.key == API_KEY
    assert order.params == {
        "template": "42", "rid": "7", "location_id": "2", "srvrname": name, "qty": "1",
        "billingcycle": "monthly",
    }  # fmt: skip
    # Hostwinds' order answer names no instance: the client finds it by its label.
    assert server.actions() == ["add_instance", "get_instances", "get_instance", "get_instance"]
    assert server.requests[2].params == {"serviceid": created.provider_id}


async def test_an_instance_is_found_by_its_label_as_a_step_does_after_a_crash(
    hostwinds: HostwindsProvider, fake: tuple[str, FakeHostwinds]
) -> None:
    _, server = fake
    name = label()
    assert await hostwinds.find_instance(name) is None
    created = await hostwinds.create_instance(name, "dallas")
    await hostwinds.create_instance(label(), "dallas")

    found = await hostwinds.find_instance(name)

    assert found is not None
    assert (found.provider_id, found.label, found.region) == (created.provider_id, name, "dallas")
    assert server.purchases["instances"] == 2


async def test_secondary_ips_are_bought_one_at_a_time_and_each_confirmed_by_listing(
    hostwinds: HostwindsProvider, fake: tuple[str, FakeHostwinds]
) -> None:
    _, server = fake
    instance = await active_instance(hostwinds, label())
    server.ip_lag = 2  # a bought address shows in the instance's list on the third look
    server.requests.clear()

    first = await hostwinds.add_ip(instance.provider_id)
    second = await hostwinds.add_ip(instance.provider_id)

    assert len({instance.primary_ip, first, second}) == 3
    assert {first, second} <= {str(h) for h in NETWORK.hosts()}
    assert await hostwinds.list_ips(instance.provider_id) == [instance.primary_ip, first, second]
    assert server.purchases["ips"] == 2
    one_purchase = ["get_instance", "get_instance_ips", "add_ip"] + ["get_instance_ips"] * 3
    assert server.actions()[: 2 * len(one_purchase)] == one_purchase * 2
    assert [r.params for r in server.requests if r.action == "add_ip"] == [
        {"serviceid": instance.provider_id}
    ] * 2


async def test_an_ip_hostwinds_never_lists_is_a_retryable_error_naming_the_instance(
    hostwinds: HostwindsProvider, fake: tuple[str, FakeHostwinds]
) -> None:
    _, server = fake
    instance = await active_instance(hostwinds, label())
    server.ip_lag = 100

    with pytest.raises(HostingError) as raised:
        await hostwinds.add_ip(instance.provider_id)

    assert raised.value.retryable
    assert "lists no new address" in raised.value.reason
    assert instance.provider_id in raised.value.reason
    assert server.purchases["ips"] == 1
    assert server.actions().count("add_ip") == 1


async def test_reverse_dns_is_set_on_the_instance_that_holds_the_address(
    settings: Settings, hostwinds: HostwindsProvider, fake: tuple[str, FakeHostwinds]
) -> None:
    base, server = fake
    instance = await active_instance(hostwinds, label())
    secondary = await hostwinds.add_ip(instance.provider_id)
    # Another process (a later job) knows only the address.
    later = HostwindsProvider(hostwinds_settings(settings, base))
    try:
        await later.set_ptr(secondary, "s1.mta.example.test")
        await later.set_ptr(instance.primary_ip, "vps.mta.example.test")
    finally:
        await later.aclose()

    assert server.rdns == {
        secondary: "s1.mta.example.test",
        instance.primary_ip: "vps.mta.example.test",
    }
    assert [r.params for r in server.requests if r.action == "set_rdns"] == [
        {"serviceid": instance.provider_id, "ip": secondary, "rdns": "s1.mta.example.test"},
        {"serviceid": instance.provider_id, "ip": instance.primary_ip,
         "rdns": "vps.mta.example.test"},
    ]  # fmt: skip


async def test_removing_an_ip_twice_gives_it_back_once_and_the_primary_is_kept(
    hostwinds: HostwindsProvider, fake: tuple[str, FakeHostwinds]
) -> None:
    _, server = fake
    instance = await active_instance(hostwinds, label())
    secondary = await hostwinds.add_ip(instance.provider_id)

    await hostwinds.remove_ip(instance.provider_id, secondary)
    await hostwinds.remove_ip(instance.provider_id, secondary)

    assert await hostwinds.list_ips(instance.provider_id) == [instance.primary_ip]
    deletes = [r.params for r in server.requests if r.action == "delete_ip"]
    assert deletes == [{"serviceid": instance.provider_id, "ip": secondary}]
    with pytest.raises(HostingError) as raised:
        await hostwinds.remove_ip(instance.provider_id, instance.primary_ip)
    assert not raised.value.retryable
    assert "primary address" in raised.value.reason


async def test_deleting_an_instance_twice_is_fine_and_then_it_is_gone(
    hostwinds: HostwindsProvider, fake: tuple[str, FakeHostwinds]
) -> None:
    _, server = fake
    instance = await active_instance(hostwinds, label())

    await hostwinds.delete_instance(instance.provider_id)
    await hostwinds.delete_instance(instance.provider_id)

    assert server.instances == {}
    assert server.actions().count("terminate") == 2
    assert await hostwinds.find_instance(instance.label) is None
    with pytest.raises(HostingError) as raised:
        await hostwinds.get_instance(instance.provider_id)
    assert not raised.value.retryable
    assert "no such instance" in raised.value.reason
    await hostwinds.remove_ip(instance.provider_id, "127.88.0.9")  # gone with its instance


@pytest.mark.parametrize(
    ("message", "status", "retryable"),
    [
        ("Out of stock in this location. Please try again later.", 200, True),
        ("Too many requests, slow down.", 200, True),
        ("Hourly products are disabled! Please contact customer service.", 200, False),
        ("Service Unavailable", 503, True),
    ],
)
async def test_an_error_is_read_from_the_body_whatever_the_http_status(
    hostwinds: HostwindsProvider,
    fake: tuple[str, FakeHostwinds],
    message: str,
    status: int,
    retryable: bool,
) -> None:
    _, server = fake
    server.fail_next("add_instance", message, status)

    with pytest.raises(HostingError) as raised:
        await hostwinds.create_instance(label(), "dallas")

    assert message in raised.value.reason
    assert raised.value.reason.startswith("Hostwinds add_instance")
    assert raised.value.retryable is retryable
    assert server.purchases["instances"] == 0
    assert server.actions() == ["add_instance"]


async def test_a_refused_api_key_is_not_worth_retrying(
    settings: Settings, fake: tuple[str, FakeHostwinds]
) -> None:
    base, server = fake
    client = HostwindsProvider(hostwinds_settings(settings, base, key="not-the-key"))
    try:
        with pytest.raises(HostingError) as raised:
            await client.find_instance(label())
    finally:
        await client.aclose()

    assert not raised.value.retryable
    assert "Not Authorized!" in raised.value.reason
    assert "PENGUINMAILS_HOSTWINDS_API_KEY" in raised.value.reason
    assert "not-the-key" not in raised.value.reason
    assert server.requests[0].key == "not-the-key"


async def test_an_answer_slower_than_the_timeout_is_a_retryable_timeout(
    settings: Settings, fake: tuple[str, FakeHostwinds]
) -> None:
    base, server = fake
    server.slow_seconds = 0.5
    slow = hostwinds_settings(settings, base).model_copy(update={"hostwinds_timeout_seconds": 0.1})
    client = HostwindsProvider(slow)
    try:
        with pytest.raises(HostingError) as raised:
            await client.get_instance("5001")
    finally:
        await client.aclose()

    assert raised.value.retryable
    assert raised.value.reason == "Hostwinds get_instance: timed out after 0.1 s"


async def test_a_region_without_a_hostwinds_location_is_refused_before_anything_is_ordered(
    hostwinds: HostwindsProvider, fake: tuple[str, FakeHostwinds]
) -> None:
    with pytest.raises(HostingError) as raised:
        await hostwinds.create_instance(label(), "atlantis")

    assert not raised.value.retryable
    assert "atlantis" in raised.value.reason
    assert "dallas, seattle" in raised.value.reason
    assert fake[1].requests == []
    assert hostwinds.regions() == ["dallas", "seattle"]
    assert hostwinds.default_region() == "dallas"


async def test_hostwinds_instances_are_managed_over_their_primary_address(
    hostwinds: HostwindsProvider,
) -> None:
    vps_id = uuid.uuid4()
    instance = await active_instance(hostwinds, f"pm-{vps_id}")
    ip = instance.primary_ip
    assert ip is not None

    managed = hostwinds.management(instance)

    assert managed == hosting.Management(
        ssh=(ip, 22),
        admin_url=f"https://vps-{vps_id.hex[:12]}.mta.example.test/api/v1",
        submission=(f"vps-{vps_id.hex[:12]}.mta.example.test", 587),
        imap=(f"vps-{vps_id.hex[:12]}.mta.example.test", 993),
    )


# --- local -------------------------------------------------------------------------------------


def local_settings(settings: Settings, data_dir: Path, **more: object) -> Settings:
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "local_hosting_state": None,
            "local_hosting_network": "127.77.0.0/29",
            "local_hosting_regions": ["local", "local-2"],
            "local_hosting_ssh": "",
            "local_hosting_admin_url": "",
            **more,
        }
    )


async def test_local_instances_are_active_at_once_on_the_lowest_free_addresses(
    settings: Settings, tmp_path: Path
) -> None:
    local = LocalProvider(local_settings(settings, tmp_path))
    name = label()

    instance = await local.create_instance(name, "local-2")
    first = await local.add_ip(instance.provider_id)
    second = await local.add_ip(instance.provider_id)

    assert (instance.state, instance.primary_ip, instance.region) == (
        ACTIVE,
        "127.77.0.1",
        "local-2",
    )
    assert (first, second) == ("127.77.0.2", "127.77.0.3")
    assert await local.list_ips(instance.provider_id) == ["127.77.0.1", first, second]
    assert await local.find_instance(name) == instance
    assert await local.purchases() == {"instances": 1, "ips": 2}


async def test_no_local_address_is_handed_out_twice_and_a_freed_one_is_reused(
    settings: Settings, tmp_path: Path
) -> None:
    local = LocalProvider(local_settings(settings, tmp_path))
    a = await local.create_instance(label(), "local")
    b = await local.create_instance(label(), "local")
    a_ip = await local.add_ip(a.provider_id)
    b_ip = await local.add_ip(b.provider_id)
    held = [a.primary_ip, b.primary_ip, a_ip, b_ip]
    assert len(set(held)) == 4

    await local.remove_ip(a.provider_id, a_ip)
    await local.remove_ip(a.provider_id, a_ip)  # gone already: fine
    reused = await local.add_ip(b.provider_id)
    await local.delete_instance(a.provider_id)
    await local.delete_instance(a.provider_id)

    assert reused == a_ip
    assert await local.list_ips(b.provider_id) == [b.primary_ip, b_ip, reused]
    assert await local.find_instance(a.label) is None
    with pytest.raises(HostingError) as raised:
        await local.get_instance(a.provider_id)
    assert not raised.value.retryable
    # The network is a /29: six host addresses; with a's gone, three more fit, then none.
    for _ in range(3):
        await local.add_ip(b.provider_id)
    with pytest.raises(HostingError) as raised:
        await local.add_ip(b.provider_id)
    assert "127.77.0.0/29" in raised.value.reason
    assert await local.purchases() == {"instances": 2, "ips": 6}


async def test_two_local_providers_share_their_state_as_two_processes_would(
    settings: Settings, tmp_path: Path
) -> None:
    ours = LocalProvider(local_settings(settings, tmp_path))
    theirs = LocalProvider(local_settings(settings, tmp_path))
    names = [label() for _ in range(3)]

    created = await asyncio.gather(
        ours.create_instance(names[0], "local"),
        theirs.create_instance(names[1], "local"),
        ours.create_instance(names[2], "local"),
    )
    added = await asyncio.gather(*(p.add_ip(created[0].provider_id) for p in (ours, theirs, ours)))

    addresses = [i.primary_ip for i in created] + added
    assert len(set(addresses)) == 6
    assert await theirs.find_instance(names[0]) == created[0]
    listed = await theirs.list_ips(created[0].provider_id)
    assert listed[0] == created[0].primary_ip
    assert sorted(listed[1:]) == sorted(added)  # in the order the locks were taken
    assert await ours.purchases() == await theirs.purchases() == {"instances": 3, "ips": 3}


async def test_a_local_reverse_name_is_recorded_and_published(
    settings: Settings, tmp_path: Path
) -> None:
    published: list[tuple[str, str]] = []

    async def publish(address: str, hostname: str) -> None:
        published.append((address, hostname))

    local = hosting.provider(local_settings(settings, tmp_path), "local", publish_ptr=publish)
    assert isinstance(local, LocalProvider)
    instance = await local.create_instance(label(), "local")
    ip = await local.add_ip(instance.provider_id)

    await local.set_ptr(ip, "s1.mta.example.test")

    assert published == [(ip, "s1.mta.example.test")]
    assert await local.ptr_records() == {ip: "s1.mta.example.test"}
    with pytest.raises(HostingError):
        await local.set_ptr("127.77.0.6", "nobody.example.test")
    await local.remove_ip(instance.provider_id, ip)
    assert await local.ptr_records() == {}


async def test_a_local_region_that_is_not_configured_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    local = LocalProvider(local_settings(settings, tmp_path))

    with pytest.raises(HostingError) as raised:
        await local.create_instance(label(), "dallas")

    assert not raised.value.retryable
    assert await local.purchases() == {"instances": 0, "ips": 0}
    assert (local.regions(), local.default_region()) == (["local", "local-2"], "local")


async def test_a_local_instance_without_ssh_submits_to_the_development_sink(
    settings: Settings, tmp_path: Path
) -> None:
    bare = local_settings(settings, tmp_path, smtp_relay_host="127.0.0.1", smtp_relay_port=2525)
    deployed = local_settings(
        settings, tmp_path, local_hosting_ssh="127.0.0.1:2222",
        local_hosting_admin_url="http://127.0.0.1:8080/api/v1",
    )  # fmt: skip
    instance = await LocalProvider(bare).create_instance(label(), "local")

    assert LocalProvider(bare).management(instance) == hosting.Management(
        ssh=None, admin_url=None, submission=("127.0.0.1", 2525), imap=("127.77.0.1", 993)
    )
    assert LocalProvider(deployed).management(instance) == hosting.Management(
        ssh=("127.0.0.1", 2222),
        admin_url="http://127.0.0.1:8080/api/v1",
        submission=("127.77.0.1", 587),
        imap=("127.77.0.1", 993),
    )


async def test_the_provider_is_chosen_by_name_or_settings(
    settings: Settings, tmp_path: Path
) -> None:
    chosen = hosting.provider(local_settings(settings, tmp_path, hosting_provider="hostwinds"))
    try:
        assert isinstance(chosen, HostwindsProvider)
        assert chosen.vps_monthly_cost_cents == settings.hostwinds_vps_monthly_cost_cents
    finally:
        await chosen.aclose()
    local = hosting.provider(local_settings(settings, tmp_path), "local")
    assert local.name == "local"
    with pytest.raises(ValueError):
        hosting.provider(settings, "linode")
