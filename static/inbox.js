// The shared inbox: the list, unread badges and the open conversation follow `inbox` events
// (re-rendered by the server, coalesced); delivery chips follow the contact's `message.*` events;
// "Bob is replying…" comes from presence, and sending a second answer to the same customer
// message asks first. Keyboard: j/k, r, a, e, o, s, ? (see the help dialog).
"use strict";

(function () {
  const root = document.getElementById("inbox");
  if (!root) return;
  const convId = Number(root.dataset.conversationId) || 0;
  const contactId = Number(root.dataset.contactId) || 0;
  const myId = Number(document.body.dataset.userId);
  const REFRESH_MS = 120; // events arriving together cost one request per fragment
  const IDLE_MS = 8000; // no keystroke for this long: no longer "replying"
  const replying = new Map(); // conversation id → Map(user id → name)

  // --- fragments from the server, at most one request in flight per fragment ----------------
  function coalesced(fetchFn) {
    let due = null;
    let running = false;
    let again = false;
    const run = async () => {
      due = null;
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        await fetchFn();
      } catch (e) {
        console.warn("inbox refresh failed", e);
      } finally {
        running = false;
        if (again) {
          again = false;
          schedule();
        }
      }
    };
    const schedule = () => {
      if (!due) due = setTimeout(run, REFRESH_MS);
    };
    return schedule;
  }

  function listParams() {
    const form = document.getElementById("inbox-filters");
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (typeof v === "string") params.set(k, v);
    if (params.get("status") === "any") params.set("status", "");
    if (convId) params.set("c", String(convId));
    return params;
  }

  const refreshList = coalesced(() =>
    htmx.ajax("GET", "/inbox/list?" + listParams(), { target: "#conv-list", swap: "innerHTML" })
  );
  const refreshTimeline = coalesced(() =>
    document.getElementById("timeline")
      ? htmx.ajax("GET", "/inbox/" + convId + "/timeline", { target: "#timeline", swap: "outerHTML" })
      : null
  );
  const refreshHead = coalesced(() =>
    document.getElementById("conv-head")
      ? htmx.ajax("GET", "/inbox/" + convId + "/head?" + listParams(), { target: "#conv-head", swap: "outerHTML" })
      : null
  );

  let reading = null;
  function markRead() {
    if (!convId || document.visibilityState !== "visible" || reading) return;
    reading = fetch("/inbox/" + convId + "/read", {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": SB.csrf(), "HX-Request": "true" },
    })
      .catch(() => {})
      .finally(() => (reading = null));
  }

  function scrollTimeline() {
    const t = document.getElementById("timeline");
    if (t) t.lastElementChild && t.lastElementChild.scrollIntoView({ block: "nearest" });
  }

  // --- who is replying -------------------------------------------------------------------------
  function names(conversationId) {
    return Array.from((replying.get(conversationId) || new Map()).values());
  }

  function showReplying() {
    const box = document.getElementById("replying");
    if (box) {
      const who = names(convId);
      box.textContent = who.length ? who.join(", ") + (who.length === 1 ? " is" : " are") + " replying…" : "";
    }
    for (const row of document.querySelectorAll("#conv-items .conv-row")) {
      const who = names(Number(row.dataset.conversationId));
      const mark = row.querySelector(".typing");
      if (!mark) continue;
      mark.hidden = who.length === 0;
      mark.textContent = who.length ? who.join(", ") + " replying…" : "";
    }
  }

  function onPresence(d) {
    if (!d.conversation_id || d.user_id === myId) return;
    const id = Number(d.conversation_id);
    if (!replying.has(id)) replying.set(id, new Map());
    if (d.state === "replying") replying.get(id).set(d.user_id, d.user_name || "Someone");
    else replying.get(id).delete(d.user_id);
    showReplying();
  }

  // Who the server saw replying when it rendered the page (the events only say what changes).
  if (convId) {
    const m = new Map();
    for (const li of document.querySelectorAll("#replying-seed li")) m.set(Number(li.dataset.userId), li.textContent);
    replying.set(convId, m);
  }

  // --- my own presence while I type ------------------------------------------------------------
  let myState = "left";
  let idle = null;
  function announce(state) {
    if (!convId || state === myState || !live) return;
    myState = state;
    live.conversationPresence(convId, state);
  }
  document.addEventListener("input", (e) => {
    if (e.target.id !== "reply-text") return;
    announce(e.target.value.trim() ? "replying" : "left");
    clearTimeout(idle);
    idle = setTimeout(() => announce("left"), IDLE_MS);
  });
  document.addEventListener("focusout", (e) => {
    if (e.target.id === "reply-text") announce("left");
  });
  window.addEventListener("pagehide", () => {
    if (myState === "replying" && live) {
      live.presenceState = { op: "presence", conversation_id: convId, state: "left" };
      if (live.ws && live.subscribed) live.ws.send(JSON.stringify(live.presenceState));
      else live.postPresence(true);
    }
  });

  // --- a second answer to the same customer message asks first ---------------------------------
  function collisionText() {
    const t = document.getElementById("timeline");
    const answered = t ? t.dataset.answeredBy : "";
    const typing = names(convId);
    if (answered) return answered + " already answered the customer's last message. Send yours too?";
    if (typing.length) return typing.join(", ") + (typing.length === 1 ? " is" : " are") + " replying to this customer right now. Send yours too?";
    return "";
  }

  function setConfirm(form, text) {
    const box = form.querySelector("#collision");
    const flag = form.querySelector("#reply-confirmed");
    const send = form.querySelector("#reply-send");
    flag.value = text ? "1" : "0";
    box.hidden = !text;
    form.querySelector("#collision-text").textContent = text;
    send.textContent = text ? "Send anyway" : "Send";
  }

  document.addEventListener("htmx:confirm", (e) => {
    const form = e.detail.elt;
    if (!form || form.id !== "reply-form") return;
    if (form.querySelector("#reply-confirmed").value === "1") return;
    const text = collisionText();
    if (!text) return;
    e.preventDefault();
    setConfirm(form, text);
    form.querySelector("#reply-send").focus();
  });
  document.addEventListener("click", (e) => {
    if (e.target.id !== "collision-cancel") return;
    const form = e.target.closest("form");
    setConfirm(form, "");
    const text = form.querySelector("#reply-text");
    if (text) text.focus();
  });

  // A refused reply (409: someone answered meanwhile; 422: not sendable) and a refused action
  // come back as the same fragment with the reason: show it.
  document.addEventListener("htmx:beforeSwap", (e) => {
    const status = e.detail.xhr.status;
    if ((status === 409 || status === 422) && e.detail.target && e.detail.target.closest("#conv")) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });
  document.addEventListener("htmx:afterSwap", (e) => {
    const t = e.detail.target;
    if (t && t.id === "reply-form" && e.detail.xhr.status === 200) announce("left");
    if (document.getElementById("timeline") && (t.id === "timeline" || t.id === "reply-form")) scrollTimeline();
    if (t && t.id === "conv-list") showReplying();
  });

  // --- live --------------------------------------------------------------------------------------
  const inTimeline = (messageId) => !!document.getElementById("out-" + Number(messageId));

  const topics = ["inbox"];
  if (contactId) topics.push("contact:" + contactId);
  const live = new SB.Live({
    topics,
    after: Number(root.dataset.head),
    onEvent(ev) {
      const d = ev.data || {};
      if (ev.type === "presence") return onPresence(d);
      if (ev.type.startsWith("conversation.")) {
        refreshList();
        if (Number(d.conversation_id) !== convId) return;
        if (ev.type === "conversation.message") {
          refreshTimeline();
          if (d.direction === "inbound") markRead();
        } else if (!(ev.type === "conversation.updated" && d.read_by)) {
          refreshHead();
        }
        return;
      }
      if (ev.type.startsWith("message.") && convId && (inTimeline(d.message_id) || d.contact_id === contactId)) {
        refreshTimeline();
      }
    },
  });
  window.SB.inbox = live;
  live.start();
  if (convId) {
    markRead();
    scrollTimeline();
    document.addEventListener("visibilitychange", markRead);
  }

  // --- keyboard ----------------------------------------------------------------------------------
  function go(step) {
    const links = Array.from(document.querySelectorAll("#conv-items .conv-row a"));
    if (!links.length) return;
    let i = links.findIndex((a) => a.closest(".conv-row").dataset.conversationId === String(convId));
    i = i < 0 ? (step > 0 ? 0 : links.length - 1) : Math.min(links.length - 1, Math.max(0, i + step));
    if (links[i].closest(".conv-row").dataset.conversationId !== String(convId)) location.assign(links[i].href);
  }

  function click(id) {
    const b = document.getElementById(id);
    if (b) b.click();
  }

  const help = document.getElementById("shortcuts");
  document.getElementById("help-btn").addEventListener("click", () => help.showModal());

  document.addEventListener("keydown", (e) => {
    const t = e.target;
    const typing = t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" || t.tagName === "SELECT" || t.isContentEditable);
    if (typing) {
      if (t.id === "reply-text" && e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        t.form.requestSubmit();
      } else if (e.key === "Escape") {
        t.blur();
      }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey || help.open) return;
    const actions = {
      j: () => go(1),
      k: () => go(-1),
      r: () => {
        const box = document.getElementById("reply-text");
        if (box) box.focus();
      },
      a: () => click("assign-me"),
      e: () => click("resolve-btn"),
      o: () => click("reopen-btn"),
      s: () => click("snooze-btn"),
      "?": () => help.showModal(),
    };
    const fn = actions[e.key];
    if (fn) {
      e.preventDefault();
      fn();
    }
  });
})();
