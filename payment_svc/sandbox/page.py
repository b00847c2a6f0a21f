"""The hosted checkout page: what the payer sees, rendered with escaped values only."""

from __future__ import annotations

from html import escape

from payment_svc.sandbox.store import TEST_CARDS, Obj

_ZERO_DECIMALS = {"jpy", "krw", "vnd", "clp", "isk", "ugx", "xaf", "xof"}
_THREE_DECIMALS = {"kwd", "bhd", "jod", "omr", "tnd", "iqd", "lyd"}


def format_amount(amount_minor: int, currency: str) -> str:
    """``1050, "usd"`` → ``"10.50 USD"`` (ISO 4217 exponent)."""
    code = currency.lower()
    exponent = 0 if code in _ZERO_DECIMALS else 3 if code in _THREE_DECIMALS else 2
    if exponent == 0:
        return f"{amount_minor} {code.upper()}"
    whole, frac = divmod(abs(amount_minor), 10**exponent)
    sign = "-" if amount_minor < 0 else ""
    return f"{sign}{whole}.{frac:0{exponent}d} {code.upper()}"


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#222}
.card{border:1px solid #ddd;border-radius:8px;padding:1.5rem}
.amount{font-size:2rem;font-weight:600;margin:.5rem 0}
input{width:100%;padding:.5rem;font-size:1rem;margin:.5rem 0 1rem;box-sizing:border-box}
button{padding:.6rem 1.2rem;font-size:1rem;margin-right:.5rem}
.muted{color:#666;font-size:.85rem}
"""


def checkout_page(session: Obj, intent: Obj) -> str:
    """The page at ``session.url``."""
    merchant = escape(str(session.get("_merchant") or "MPPO group order"))
    description = escape(str(intent.get("description") or session.get("_description") or ""))
    amount = escape(format_amount(int(session["amount_total"]), str(session["currency"])))
    session_id = escape(str(session["id"]))
    cards = "".join(
        f"<li><code>{escape(number)}</code> {escape(what)}</li>"
        for number, what in TEST_CARDS.items()
    )
    if session["status"] != "open":
        body = f"<p>This checkout is <strong>{escape(str(session['status']))}</strong>.</p>"
    else:
        body = f"""
<form method="post" action="/checkout/{session_id}/pay">
  <label for="card_number">Card number</label>
  <input id="card_number" name="card_number" value="4242424242424242" autocomplete="off">
  <button type="submit" name="action" value="pay">Pay {amount}</button>
  <button type="submit" name="action" value="decline">Decline</button>
</form>"""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pay {merchant}</title>
<style>{_STYLE}</style></head>
<body><div class="card">
<p class="muted">MPPO sandbox checkout (no real money moves)</p>
<h1>{merchant}</h1>
<p>{description}</p>
<div class="amount">{amount}</div>
{body}
<p class="muted">Test cards:</p><ul class="muted">{cards}</ul>
</div></body></html>"""


def result_page(session: Obj, outcome: Obj) -> str:
    """What the payer sees after submitting the form."""
    text = {
        "requires_capture": "Payment authorized. Your card has a hold; nothing is charged "
        "until the order is confirmed.",
        "succeeded": "Payment completed.",
        "declined": "Payment declined.",
    }.get(str(outcome.get("outcome")), str(outcome.get("outcome")))
    back = session.get("success_url") if outcome.get("outcome") != "declined" else None
    link = f'<p><a href="{escape(str(back))}">Continue</a></p>' if back else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Checkout</title>
<style>{_STYLE}</style></head><body><div class="card">
<h1>{escape(text)}</h1>{link}</div></body></html>"""
