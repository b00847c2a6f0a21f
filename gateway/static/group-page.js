// The members' group page (gateway/group_page.py). No framework, no inline code (the CSP
// forbids it), and every value is written with textContent: shown, never interpreted.
"use strict";

(function () {
  const POLL_MS = 2000;
  const STATUS_TEXT = {
    DRAFT: "Not open for payment yet",
    OPEN: "Waiting for everyone to pay",
    PENDING: "Everyone has paid: placing the order",
    CONFIRMED: "Confirmed: the order is placed",
    EXPIRED: "Expired: the deadline passed before everyone paid",
    CANCELLED: "Cancelled",
  };
  const YOU_TEXT = {
    INVITED: "You have not paid yet.",
    JOINED: "You have not paid yet.",
    AWAITING_PAYMENT: "You have not paid yet.",
    PAID: "You have paid. Thank you!",
    PAYMENT_FAILED: "Your payment did not go through. You can try again with another card.",
    COVERED_BY_HOST: "The host covers your share.",
  };
  const FINAL_TEXT = {
    CONFIRMED: "Everyone paid and the merchant accepted the order.",
  };

  const $ = (id) => document.getElementById(id);
  const groupId = window.location.pathname.split("/")[2] || "";
  const token = decodeURIComponent(window.location.hash.replace(/^#/, ""));
  let clockOffset = 0; // server time minus local time, in ms
  let deadline = null;
  let finalState = false;
  let timer = null;

  function text(el, value) {
    el.textContent = value == null ? "" : String(value);
  }

  function element(tag, className, value) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (value !== undefined) text(el, value);
    return el;
  }

  // show `value` as the text of `el`, or hide `el` when there is none
  function shown(el, value) {
    const words = value == null ? "" : String(value);
    text(el, words);
    el.hidden = !words;
  }

  function problem(message) {
    const box = $("problem");
    text(box, message);
    box.hidden = false;
  }

  function render(view) {
    $("problem").hidden = true;
    const status = $("status");
    // a group that ended without an order: why, as the server words it for members
    text(status, view.endTitle || STATUS_TEXT[view.status] || view.status);
    shown($("close-reason"), view.endMessage);
    const hostReason = String(view.hostReason || "");
    shown($("host-reason"), hostReason ? "The host wrote: “" + hostReason + "”" : "");
    shown($("money-note"), view.moneyNote);
    status.className = "status s-" + String(view.status).replace(/[^A-Z_]/g, "");
    finalState = Boolean(view.final);
    clockOffset = Date.parse(view.serverTime) - Date.now();
    deadline = view.graceDeadline || view.deadline ? Date.parse(view.graceDeadline || view.deadline) : null;

    text($("you-name"), view.you.name);
    text($("share"), view.you.share);
    const lines = [];
    if (view.moneyReturned) {
      // what the member had paid is given back; nothing more is asked of anyone
      lines.push(
        view.you.returned
          ? "You paid " + view.you.returned + "; it is returned to you (the hold on your card is released, or the payment refunded)."
          : "You are not charged.",
      );
    } else {
      lines.push(YOU_TEXT[view.you.status] || "");
      if (finalState && FINAL_TEXT[view.status]) lines.push(FINAL_TEXT[view.status]);
    }
    text($("you-status"), lines.join(" "));
    const pay = $("pay");
    const link = String(view.you.payLink || "");
    if (link && /^https?:\/\//.test(link)) {
      pay.href = link;
      text(pay, "Pay " + view.you.share);
      pay.hidden = false;
      $("pay-hint").hidden = false;
    } else {
      pay.removeAttribute("href");
      pay.hidden = true;
      $("pay-hint").hidden = true;
    }
    const retry = $("retry");
    retry.hidden = !view.you.canRetry;
    if (view.you.canRetry) retry.disabled = false;
    $("share-box").hidden = false;

    const members = $("members");
    members.replaceChildren();
    for (const m of view.members) {
      const li = element("li", m.paid ? "member paid" : "member");
      const name = element("span", "name", m.name + (m.you ? " (you)" : ""));
      let badge = element("span", "badge", "Not paid yet");
      if (m.paid && view.moneyReturned) badge = element("span", "badge returned", "Paid — returned");
      else if (m.paid) badge = element("span", "badge paid", "Paid");
      else if (m.coveredByHost) badge = element("span", "badge covered", "Covered by the host");
      else if (view.moneyReturned) badge = element("span", "badge", "Not paid");
      li.append(name, badge);
      members.append(li);
    }
    $("members-box").hidden = false;

    const cart = $("cart");
    cart.replaceChildren();
    for (const item of view.items) {
      const tr = element("tr");
      tr.append(element("td", "qty", item.quantity + " ×"), element("td", "name", item.name), element("td", "amount", item.amount));
      cart.append(tr);
    }
    for (const extra of view.extras) {
      const tr = element("tr");
      const th = element("td", "name", extra.name);
      th.colSpan = 2;
      tr.append(th, element("td", "amount", extra.amount));
      cart.append(tr);
    }
    text($("total"), view.total);
    $("cart-box").hidden = false;
    tick();
  }

  function tick() {
    const el = $("countdown");
    if (finalState || deadline === null || Number.isNaN(deadline)) {
      text(el, "");
      return;
    }
    const left = Math.max(0, Math.floor((deadline - (Date.now() + clockOffset)) / 1000));
    const d = Math.floor(left / 86400);
    const h = Math.floor((left % 86400) / 3600);
    const m = Math.floor((left % 3600) / 60);
    const s = left % 60;
    const two = (n) => String(n).padStart(2, "0");
    const span = (d ? d + "d " : "") + two(h) + ":" + two(m) + ":" + two(s);
    text(el, left > 0 ? "Time left to pay: " + span : "The deadline has passed.");
  }

  async function poll() {
    let delay = POLL_MS;
    try {
      const response = await fetch("/g/" + encodeURIComponent(groupId) + "/state", {
        headers: { "X-Mppo-Invite": token, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        referrerPolicy: "no-referrer",
      });
      if (response.status === 404) {
        text($("status"), "Link not valid");
        problem("This link is not valid. Open the link from your invitation e-mail again.");
        return;
      }
      if (!response.ok) {
        delay = Number(response.headers.get("Retry-After") || "2") * 1000;
        throw new Error("HTTP " + response.status);
      }
      render(await response.json());
      if (finalState) return;
    } catch (err) {
      problem("Cannot reach the server right now; retrying…");
    }
    timer = window.setTimeout(poll, delay);
  }

  // "Try again" after a declined card: a fresh payment attempt for this member only (the
  // invite token says who), answered with the state and the new Pay link
  async function retryPayment() {
    const button = $("retry");
    button.disabled = true;
    try {
      const response = await fetch("/g/" + encodeURIComponent(groupId) + "/retry", {
        method: "POST",
        headers: { "X-Mppo-Invite": token, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        referrerPolicy: "no-referrer",
      });
      if (response.ok) {
        render(await response.json());
        return;
      }
      if (response.status === 404) {
        problem("This link is not valid. Open the link from your invitation e-mail again.");
      } else if (response.status === 400) {
        problem("There is no declined payment to try again; the page shows where things stand.");
      } else {
        problem("Cannot reach the server right now; please try again in a moment.");
      }
    } catch (err) {
      problem("Cannot reach the server right now; please try again in a moment.");
    }
    button.disabled = false;
    window.clearTimeout(timer);
    poll();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("retry").addEventListener("click", retryPayment);
    if (!token || !groupId) {
      text($("status"), "Link not valid");
      problem("This link is incomplete. Open the link from your invitation e-mail again.");
      return;
    }
    window.setInterval(tick, 1000);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && !finalState) {
        window.clearTimeout(timer);
        poll();
      }
    });
    poll();
  });
})();
