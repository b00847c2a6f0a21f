"""The members' group page in a real browser (Debian's chromium driven by Playwright,
headless): a member follows the link in their invitation e-mail, sees the cart, their share and
who has paid, pays on the provider's page the Pay button opens, and watches the group go to
CONFIRMED once the others have paid; another watches a group with a short deadline EXPIRE.

The end states are screenshotted; with ``MPPO_UPDATE_SCREENSHOTS=1`` the test run writes them
to ``docs/group-page-confirmed.png`` and ``docs/group-page-expired.png`` (the README shows them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.e2e.test_browser_checkout import CHROMIUM, CHROMIUM_ARGS
from tests.support.e2e import (
    CARD_SUCCESS,
    PIZZA,
    SODA,
    Api,
    GroupOrder,
    Person,
    cart,
    create_body,
    eventually,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGE_LINK = re.compile(r"(https?://\S+/g/[0-9a-f-]{36}#[A-Za-z0-9_-]+)")
#: a display name that would run script if the page ever interpreted it
HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><b id="xss">Zed</b>'


@pytest_asyncio.fixture(loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def page_link_of(order: GroupOrder, person: Person) -> str:
    """The group page link in ``person``'s invitation e-mail (which still names the
    provider's page too)."""
    mails = await eventually(
        lambda: order.mails_to(person),
        lambda found: any(m["subject"].startswith("You're invited") for m in found),
        what=f"{person.name}'s invitation",
    )
    body = next(m["body"] for m in mails if m["subject"].startswith("You're invited"))
    found = PAGE_LINK.search(body)
    assert found, body
    own = order.member(await order.get(person.user), person)
    assert own["paymentLink"] in body
    return found.group(1)


def keep(shot: Path, name: str) -> None:
    assert shot.stat().st_size > 1000
    if os.environ.get("MPPO_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, DOCS / name)


async def open_page(context: BrowserContext, link: str) -> Page:
    page = await context.new_page()
    response = await page.goto(link)
    assert response is not None
    assert response.status == 200
    headers = await response.all_headers()
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer"
    return page


async def test_a_member_pays_from_the_group_page_and_sees_it_confirmed(
    api: Api, browser: Browser, tmp_path: Path
) -> None:
    guest = Person.new("Gus")
    zed = dataclasses.replace(Person.new("Zed"), name=HOSTILE)
    order = GroupOrder(api, Person.new("Hana"), [guest, zed])
    # 12.00 + 3 × 2.50 = 19.50, split 6.50 each
    await order.create(create_body(order.host, cart((PIZZA, 1), (SODA, 3))))
    await order.open()
    link = await page_link_of(order, guest)

    # the state behind the page: this member's view only; a wrong token sees nothing
    base, token = link.split("#")
    state_url = base + "/state"
    state = (await api.request("GET", state_url, headers={"X-Mppo-Invite": token})).ok()
    assert state["you"]["share"] == "6.50 USD"
    assert [m["name"] for m in state["members"]] == ["Hana", "Gus", HOSTILE]
    text = json.dumps(state)
    for other in (order.host, zed):
        assert other.email not in text
        assert order.member_ids[other.user] not in text
    for wrong in ("A" * len(token), token[:-1], ""):
        reply = await api.request("GET", state_url, headers={"X-Mppo-Invite": wrong})
        assert reply.status == 404

    context = await browser.new_context(viewport={"width": 800, "height": 900})
    try:
        page = await open_page(context, link)
        await expect(page.locator("#share")).to_have_text("6.50 USD")
        await expect(page.locator("#status")).to_have_text("Waiting for everyone to pay")
        await expect(page.locator("#countdown")).to_contain_text("Time left to pay")
        await expect(page.locator("#members li")).to_have_count(3)
        await expect(page.locator("#cart")).to_contain_text("Margherita pizza")
        await expect(page.locator("#total")).to_have_text("19.50 USD")
        # a hostile name is shown as text, never run
        await expect(page.locator("#members")).to_contain_text(HOSTILE)
        await expect(page.locator("#xss")).to_have_count(0)
        assert await page.title() == "Your group order"

        pay = page.get_by_role("button", name="Pay 6.50 USD")
        async with context.expect_page() as opened:
            await pay.click()
        provider = await opened.value
        await provider.wait_for_load_state()
        await expect(provider.locator(".amount")).to_have_text("6.50 USD")
        card = provider.locator("#card_number")
        await card.fill("")
        await card.type(CARD_SUCCESS)
        await provider.get_by_role("button", name=re.compile(r"^Pay 6\.50 USD$")).click()
        await expect(provider.get_by_role("heading", level=1)).to_contain_text("Payment authorized")
        await provider.close()

        # the group page follows on its own: the member paid, the Pay button is gone
        await expect(page.locator("#you-status")).to_contain_text("You have paid", timeout=30_000)
        await expect(page.locator("#members li.paid")).to_have_count(1)
        await expect(pay).to_be_hidden()

        await order.pay([order.host, zed])
        await expect(page.locator("#status")).to_have_text(
            "Confirmed: the order is placed", timeout=60_000
        )
        await expect(page.locator("#members li.paid")).to_have_count(3)
        await expect(page.locator("#countdown")).to_have_text("")
        assert await page.title() == "Your group order"
        shot = tmp_path / "confirmed.png"
        await page.screenshot(path=str(shot), full_page=True)
    finally:
        await context.close()
    keep(shot, "group-page-confirmed.png")
    await order.wait("CONFIRMED")


async def test_a_member_watches_an_unpaid_group_expire(
    api: Api, browser: Browser, tmp_path: Path
) -> None:
    guest = Person.new("Ivy")
    order = GroupOrder(api, Person.new("Jon"), [guest])
    await order.create(create_body(order.host, cart((PIZZA, 1), (SODA, 2)), deadline_in=15.0))
    await order.open()
    link = await page_link_of(order, guest)

    context = await browser.new_context(viewport={"width": 800, "height": 900})
    try:
        page = await open_page(context, link)
        await expect(page.locator("#share")).to_have_text("8.50 USD")
        await expect(page.get_by_role("button", name="Pay 8.50 USD")).to_be_visible()
        await expect(page.locator("#status")).to_have_text(
            "Expired: the deadline passed before everyone paid", timeout=60_000
        )
        await expect(page.get_by_role("button", name=re.compile("^Pay"))).to_have_count(0)
        await expect(page.locator("#you-status")).to_contain_text("Nothing more will be charged")
        await expect(page.locator("#members li.paid")).to_have_count(0)
        shot = tmp_path / "expired.png"
        await page.screenshot(path=str(shot), full_page=True)
    finally:
        await context.close()
    keep(shot, "group-page-expired.png")
    await order.wait("EXPIRED")
