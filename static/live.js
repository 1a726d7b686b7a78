// Switchboard page runtime: CSRF for htmx and fetch, session renewal, and the live event client
// (WebSocket first, long-polling when the socket cannot connect or keeps dropping; both resume
// from the last event id, and events are deduplicated by id). Data is always inserted with
// textContent, never as HTML.
"use strict";

(function () {
  const CSRF_COOKIE = "sb_csrf";

  function cookie(name) {
    for (const part of document.cookie.split(";")) {
      const [k, ...rest] = part.trim().split("=");
      if (k === name) return decodeURIComponent(rest.join("="));
    }
    return "";
  }

  function csrf() {
    return cookie(CSRF_COOKIE);
  }

  function toLogin() {
    const next = location.pathname + location.search;
    location.assign("/login?next=" + encodeURIComponent(next));
  }

  // One renewal at a time per page: a spent refresh token reused would revoke the session.
  let renewing = null;
  function refresh() {
    if (!renewing) {
      renewing = fetch("/session/refresh", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf() },
      })
        .then((r) => r.status === 204)
        .catch(() => false)
        .finally(() => {
          setTimeout(() => (renewing = null), 1000);
        });
    }
    return renewing;
  }

  // fetch() with the CSRF header, JSON in and out, one renewal on 401.
  async function api(method, url, body, headers) {
    const opts = () => ({
      method,
      credentials: "same-origin",
      headers: Object.assign(
        { Accept: "application/json", "X-CSRF-Token": csrf() },
        body !== undefined ? { "Content-Type": "application/json" } : {},
        headers || {}
      ),
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    let r = await fetch(url, opts());
    if (r.status === 401) {
      if (!(await refresh())) {
        toLogin();
        throw new Error("signed out");
      }
      r = await fetch(url, opts());
    }
    let data = null;
    const text = await r.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = { detail: text };
      }
    }
    return { status: r.status, ok: r.ok, data, headers: r.headers };
  }

  // Build an element: el("li", {class: "x", "data-id": 3}, "text", child...). Text is textContent.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else node.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  // Show a problem+json answer next to a form: the detail and each field's message.
  function showProblem(box, data) {
    box.replaceChildren();
    if (!data) return;
    box.append(el("p", {}, data.detail || data.title || "Something went wrong."));
    if (Array.isArray(data.errors) && data.errors.length) {
      const ul = el("ul");
      for (const e of data.errors) ul.append(el("li", {}, (e.field ? e.field + ": " : "") + e.message));
      box.append(ul);
    }
  }

  function setLiveState(text) {
    const node = document.getElementById("live-state");
    if (node) node.textContent = text;
  }

  const WS_OPEN_TIMEOUT_MS = 5000; // no "subscribed" by then: treat the socket as unusable
  const DROP_WINDOW_MS = 60000; // three drops within a minute: the network is hostile, poll
  const DROPS_BEFORE_POLL = 3;
  const WS_RETRY_FROM_POLL_MS = 60000; // while polling, try the socket again this often
  const POLL_TIMEOUT_S = 25;
  const PRESENCE_REFRESH_MS = 20000; // well inside the server's presence expiry (60 s)
  const WS_SIGNED_OUT = 4401; // the server closed the socket because the sign-in ended or expired
  const RECONNECT_BASE_MS = 500; // doubled per recent drop, up to RECONNECT_MAX_MS, jittered
  const RECONNECT_MAX_MS = 15000;

  // Full jitter: sockets dropped together (a deploy, a revoked sign-in) do not come back together.
  function backoff(attempt) {
    return Math.random() * Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** attempt) + 100;
  }

  class Live {
    constructor(opts) {
      this.topics = opts.topics;
      this.lastId = Number.isFinite(opts.after) ? opts.after : null;
      this.onEvent = opts.onEvent || (() => {});
      this.onResync = opts.onResync || (() => location.reload());
      this.onLive = opts.onLive || (() => {});
      this.mode = "ws";
      this.ws = null;
      this.subscribed = false;
      this.drops = [];
      this.everSubscribed = false;
      this.presenceState = null;
      this.pollAbort = null;
      this.nextWsTry = 0;
      this.stopped = false;
      this.seen = 0;
    }

    start() {
      if (!("WebSocket" in window)) return this.startPolling();
      this.connect(false);
    }

    deliver(ev) {
      if (typeof ev.id !== "number") return;
      if (this.lastId !== null && ev.id <= this.lastId) return; // replay overlap: already applied
      this.lastId = ev.id;
      this.seen += 1;
      try {
        this.onEvent(ev);
      } catch (e) {
        console.error("event handler failed", e);
      }
    }

    connect(probe) {
      const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
      let ws;
      try {
        ws = new WebSocket(url);
      } catch (e) {
        if (!probe) this.startPolling();
        return;
      }
      let subscribed = false;
      const timer = setTimeout(() => {
        if (!subscribed) ws.close();
      }, WS_OPEN_TIMEOUT_MS);
      ws.onopen = () => {
        if (this.stopped) return ws.close();
        ws.send(JSON.stringify({ op: "subscribe", topics: this.topics, after: this.lastId }));
      };
      ws.onmessage = (m) => {
        if (this.stopped) return ws.close();
        let msg;
        try {
          msg = JSON.parse(m.data);
        } catch (e) {
          return;
        }
        if (msg.type === "subscribed") {
          subscribed = true;
          probe = false; // from now on this is the connection: reconnect it when it drops
          clearTimeout(timer);
          if (this.ws && this.ws !== ws) this.ws.close();
          this.ws = ws;
          this.subscribed = true;
          this.everSubscribed = true;
          if (this.mode === "poll") this.stopPolling();
          this.mode = "ws";
          setLiveState("live");
          document.body.dataset.live = "ws";
          if (this.presenceState) ws.send(JSON.stringify(this.presenceState));
          this.onLive("ws");
          return;
        }
        if (msg.type === "ping" || msg.type === "pong") return;
        if (msg.type === "resync") return this.resync(null);
        if (msg.type === "error") return console.warn("realtime:", msg.detail);
        this.deliver(msg);
      };
      ws.onclose = (ev) => {
        clearTimeout(timer);
        if (this.ws === ws) {
          this.ws = null;
          this.subscribed = false;
        }
        if (this.stopped || probe || this.mode === "poll") return;
        if (ev.code === WS_SIGNED_OUT) {
          // Renew the session once (cookies + CSRF); back with `after` if it still stands.
          setLiveState("reconnecting…");
          refresh().then((ok) => {
            if (!ok) return toLogin();
            if (!this.stopped) setTimeout(() => this.connect(false), backoff(0));
          });
          return;
        }
        const now = Date.now();
        this.drops = this.drops.filter((t) => now - t < DROP_WINDOW_MS);
        this.drops.push(now);
        if (!subscribed || this.drops.length >= DROPS_BEFORE_POLL) {
          this.startPolling();
        } else {
          setLiveState("reconnecting…");
          setTimeout(() => this.connect(false), backoff(this.drops.length));
        }
      };
    }

    resync(lastId) {
      if (lastId !== null && lastId !== undefined) this.lastId = lastId;
      this.onResync();
    }

    stopPolling() {
      this.mode = "ws";
      clearInterval(this.presenceTimer);
      if (this.pollAbort) this.pollAbort.abort();
    }

    async startPolling() {
      if (this.mode === "poll" && this.pollAbort) return;
      this.mode = "poll";
      this.nextWsTry = Date.now() + WS_RETRY_FROM_POLL_MS;
      clearInterval(this.presenceTimer);
      this.presenceTimer = setInterval(() => {
        if (this.mode === "poll") this.postPresence();
      }, PRESENCE_REFRESH_MS);
      setLiveState("live (polling)");
      document.body.dataset.live = "poll";
      this.onLive("poll");
      let failures = 0;
      while (!this.stopped && this.mode === "poll") {
        const abort = new AbortController();
        this.pollAbort = abort;
        const params = new URLSearchParams({ topics: this.topics.join(","), timeout: String(POLL_TIMEOUT_S) });
        if (this.lastId !== null) params.set("after", String(this.lastId));
        try {
          const r = await fetch("/api/v1/events?" + params, {
            credentials: "same-origin",
            headers: { Accept: "application/json" },
            signal: abort.signal,
          });
          if (r.status === 401) {
            if (!(await refresh())) return toLogin();
            continue;
          }
          if (!r.ok) throw new Error("long-poll answered " + r.status);
          const body = await r.json();
          if (this.mode !== "poll") break;
          if (body.resync) {
            this.resync(body.last_id);
            continue;
          }
          for (const ev of body.events) this.deliver(ev);
          if (typeof body.last_id === "number" && (this.lastId === null || body.last_id > this.lastId)) {
            this.lastId = body.last_id;
          }
          failures = 0;
          setLiveState("live (polling)");
        } catch (e) {
          if (abort.signal.aborted) break;
          failures += 1;
          setLiveState("offline, retrying…");
          const wait = Math.min(30000, 1000 * 2 ** Math.min(failures, 5)) * (0.5 + Math.random() / 2);
          await new Promise((res) => setTimeout(res, wait));
        }
        if (Date.now() > this.nextWsTry && "WebSocket" in window) {
          this.nextWsTry = Date.now() + WS_RETRY_FROM_POLL_MS;
          this.connect(true); // a probe: takes over from polling once subscribed
        }
      }
      this.pollAbort = null;
    }

    // Announce presence on a contact: over the socket (re-sent after each reconnect), or, while
    // long-polling, by POST to the page's presence route, repeated so that it does not expire.
    presence(contactId, state) {
      this.presenceState = { op: "presence", contact_id: contactId, state };
      if (this.ws && this.subscribed) {
        this.ws.send(JSON.stringify(this.presenceState));
      } else if (this.mode === "poll") {
        this.postPresence();
      }
    }

    // The same for an agent replying in a conversation (DESIGN §8): "replying" or "left".
    conversationPresence(conversationId, state) {
      this.presenceState = { op: "presence", conversation_id: conversationId, state };
      if (this.ws && this.subscribed) {
        this.ws.send(JSON.stringify(this.presenceState));
      } else if (this.mode === "poll") {
        this.postPresence();
      }
    }

    postPresence(beacon) {
      const p = this.presenceState;
      if (!p) return;
      const body = new FormData();
      body.set("state", p.state);
      body.set("csrf_token", csrf());
      const url = p.conversation_id
        ? "/inbox/" + Number(p.conversation_id) + "/presence"
        : "/contacts/" + Number(p.contact_id) + "/presence";
      if (beacon && navigator.sendBeacon) return navigator.sendBeacon(url, body);
      fetch(url, { method: "POST", body, credentials: "same-origin", keepalive: true }).catch(() => {});
    }

    stop() {
      this.stopped = true;
      if (this.ws) this.ws.close();
      if (this.pollAbort) this.pollAbort.abort();
    }
  }

  // htmx requests carry the CSRF header; a session that ended sends the page to the login form.
  document.addEventListener("htmx:configRequest", (e) => {
    e.detail.headers["X-CSRF-Token"] = csrf();
  });
  // A form that filters a fragment keeps the page's own address current (replaced, so the back
  // button still leaves the page): <form data-replace-url="/" hx-get="/board/stream">.
  document.addEventListener("htmx:afterRequest", (e) => {
    const form = e.detail.elt;
    if (!e.detail.successful || !form.dataset || !form.dataset.replaceUrl) return;
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (typeof v === "string" && v !== "") params.set(k, v);
    const query = params.toString();
    history.replaceState(history.state, "", form.dataset.replaceUrl + (query ? "?" + query : ""));
  });
  // A fragment refused because the access token expired: renew once, then ask again.
  document.addEventListener("htmx:responseError", async (e) => {
    const xhr = e.detail.xhr;
    if (!xhr || xhr.status !== 401) return;
    if (!(await refresh())) return toLogin();
    const cfg = e.detail.requestConfig || {};
    if ((cfg.verb || "get").toLowerCase() === "get" && xhr.responseURL) {
      htmx.ajax("GET", xhr.responseURL, { source: e.detail.elt, target: e.detail.target });
    }
  });
  // Server-rendered forms carry the token as a field: refresh it from the cookie when submitted,
  // since a renewal of the session changes it.
  document.addEventListener(
    "submit",
    (e) => {
      const field = e.target.querySelector && e.target.querySelector("input[name=csrf_token]");
      if (field && csrf()) field.value = csrf();
    },
    true
  );

  window.SB = { api, csrf, el, Live, refresh, showProblem, toLogin, setLiveState };
})();
