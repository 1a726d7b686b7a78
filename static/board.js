// The delivery board: status chips change in place, new messages appear at the top, counters
// follow the `board.counters` events (one producer per deployment, at most one a second): the
// page never polls /board/counters, so fifty watching agents cost the database what one does.
"use strict";

(function () {
  const root = document.getElementById("board");
  if (!root) return;
  const ORDER = { scheduled: 0, queued: 1, sending: 2, sent: 3, delivered: 4 };
  const TERMINAL = new Set(["delivered", "bounced", "failed", "suppressed", "canceled"]);
  const MAX_ROWS = 50;

  // The server's status machine: never backwards, never out of a terminal state, so a replayed
  // older event cannot undo a newer rendered status.
  function canMove(from, to) {
    if (from === to || TERMINAL.has(from)) return false;
    if (TERMINAL.has(to)) return true;
    if (from === "sending" && to === "queued") return true;
    return (ORDER[to] ?? -1) > (ORDER[from] ?? -1);
  }

  function filters() {
    const form = document.getElementById("filters");
    const data = new FormData(form);
    return { channel: data.get("channel") || "", status: data.get("status") || "", provider: data.get("provider") || "" };
  }

  function matches(d) {
    const f = filters();
    return (!f.channel || f.channel === d.channel) && (!f.status || f.status === d.status) &&
      (!f.provider || f.provider === d.provider);
  }

  function setChip(chip, status) {
    chip.className = "chip s-" + status;
    chip.dataset.status = status;
    chip.textContent = status;
  }

  // A new row names its contact as a row already on the board does, else by id.
  function contactName(contactId) {
    if (!contactId) return "";
    const known = document.querySelector('#stream-list .row[data-contact-id="' + Number(contactId) + '"] .who');
    return known ? known.textContent : "contact " + contactId;
  }

  function newRow(d, ts) {
    const when = ts ? new Date(ts) : new Date();
    const chip = SB.el("span", { class: "chip s-" + d.status, "data-status": d.status }, d.status);
    const link = SB.el(
      "a",
      { class: "row-link", href: "/messages/" + Number(d.message_id) },
      SB.el("span", { class: "mid" }, "#" + d.message_id),
      SB.el("span", { class: "who" }, contactName(d.contact_id)),
      SB.el("span", { class: "chan" }, d.channel || ""),
      SB.el("span", { class: "prov" }, d.provider || ""),
      chip,
      SB.el("time", { datetime: when.toISOString() }, when.toISOString().slice(0, 19).replace("T", " "))
    );
    return SB.el(
      "li",
      { class: "row fresh", id: "msg-" + Number(d.message_id), "data-message-id": d.message_id,
        "data-channel": d.channel, "data-contact-id": d.contact_id || "", "data-provider": d.provider || "" },
      link
    );
  }

  function apply(ev) {
    const d = ev.data || {};
    if (!d.message_id) return;
    const row = document.getElementById("msg-" + Number(d.message_id));
    if (row) {
      const chip = row.querySelector(".chip");
      if (chip && canMove(chip.dataset.status, d.status)) setChip(chip, d.status);
      if (d.provider) {
        row.querySelector(".prov").textContent = d.provider;
        row.dataset.provider = d.provider;
      }
      return;
    }
    if (!matches(d)) return;
    const list = document.getElementById("stream-list");
    if (!list) return;
    // Keep newest first: insert before the first row with a smaller id.
    const node = newRow(d, ev.ts);
    let before = null;
    for (const r of list.children) {
      if (Number(r.dataset.messageId) < Number(d.message_id)) {
        before = r;
        break;
      }
    }
    list.insertBefore(node, before);
    const empty = document.getElementById("stream-empty");
    if (empty) empty.remove();
    while (list.children.length > MAX_ROWS) list.lastElementChild.remove();
  }

  function setCount(selector, n) {
    const dd = root.querySelector(selector);
    if (dd) dd.textContent = String(Number(n) || 0);
  }

  function applyCounters(d) {
    const byStatus = d.by_status || {};
    const byChannel = d.by_channel || {};
    for (const [status, n] of Object.entries(byStatus)) setCount('[data-count-status="' + CSS.escape(status) + '"]', n);
    let total = 0;
    for (const [channel, n] of Object.entries(byChannel)) {
      setCount('[data-count-channel="' + CSS.escape(channel) + '"]', n);
      total += Number(n) || 0;
    }
    setCount("[data-count-total]", total);
  }

  const live = new SB.Live({
    topics: ["board"],
    after: Number(root.dataset.head),
    onEvent(ev) {
      if (ev.type === "message.created" || ev.type === "message.status") apply(ev);
      else if (ev.type === "board.counters") applyCounters(ev.data || {});
    },
  });
  window.SB.board = live;
  live.start();
})();
