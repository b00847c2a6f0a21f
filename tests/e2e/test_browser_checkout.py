"""The hosted sandbox payment page in a real browser (Debian's chromium driven by Playwright,
headless): a member opens the link they were invited with, sees their share, types the test
card, clicks Pay, sees the success page, and the group moves (read back through the REST
gateway: the member PAID, then the whole group CONFIRMED once the host pays too)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright, expect

from tests.support.e2e import CARD_SUCCESS, PIZZA, SODA, Api, GroupOrder, Person, cart, create_body

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium (never a downloaded browser)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium")
    return CHROMIUM


@pytest_asyncio.fixture(loop_scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def test_a_member_pays_on_the_hosted_page_in_a_browser(
    api: Api, browser: Browser, tmp_path: Path
) -> None:
    guest = Person.new("Gus")
    order = GroupOrder(api, Person.new("Hana"), [guest])
    # 12.00 + 2 × 2.50 = 17.00, split 8.50 / 8.50
    await order.create(create_body(order.host, cart((PIZZA, 1), (SODA, 2))))
    opened = await order.open()
    share = order.member(opened, guest)["share"]
    assert share == {"amountMinor": "850", "currencyCode": "USD"}
    link = await order.link_of(guest)

    context = await browser.new_context(viewport={"width": 800, "height": 900})
    try:
        page = await context.new_page()
        response = await page.goto(link)
        assert response is not None
        assert response.status == 200
        await expect(page.locator(".amount")).to_have_text("8.50 USD")
        pay_button = page.get_by_role("button", name=re.compile(r"^Pay 8\.50 USD$"))
        await expect(pay_button).to_be_visible()
        await page.screenshot(path=str(tmp_path / "checkout.png"), full_page=True)

        card = page.locator("#card_number")
        await card.fill("")
        await card.type(CARD_SUCCESS)
        await expect(card).to_have_value(CARD_SUCCESS)
        await pay_button.click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text("Payment authorized")
        await page.screenshot(path=str(tmp_path / "paid.png"), full_page=True)

        paid = await order.wait_member(guest, "PAID")
        assert paid["amountPaid"] == share
        group = await order.get()
        assert group["status"] == "GROUP_STATUS_OPEN"
        assert order.member(group, order.host)["status"] == "MEMBER_STATUS_AWAITING_PAYMENT"

        # the page now shows the checkout as done, and cannot be paid twice
        await page.goto(link)
        await expect(page.locator("body")).to_contain_text("This checkout is")
        await expect(page.get_by_role("button", name=re.compile("^Pay"))).to_have_count(0)
    finally:
        await context.close()
    assert (tmp_path / "checkout.png").stat().st_size > 1000
    assert (tmp_path / "paid.png").stat().st_size > 1000

    await order.pay([order.host])
    await order.wait("CONFIRMED")
