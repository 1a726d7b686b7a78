// The contact page: co-editing with presence.
//
// Each input keeps the value it was last in sync with (data-base). An input whose value differs
// from its base is "touched". A change by someone else updates untouched inputs in place; on a
// touched input it shows both values inline and the user chooses. Saves send only touched fields
// with If-Match: the version we are in sync with, so the server merges around others' edits and
// answers 409 with both values when they overlap.
"use strict";

(function () {
  const root = document.getElementById("contact");
  if (!root) return;
  const contactId = Number(root.dataset.contactId);
  const myId = Number(document.body.dataset.userId);
  const form = document.getElementById("contact-form");
  const problemBox = form.querySelector(".problem");
  let version = Number(root.dataset.version); // the version every untouched input reflects
  let latestVersion = version; // the newest version seen in events
  const pending = new Map(); // field → their value, for conflicts not yet resolved

  function inputs() {
    return Array.from(form.querySelectorAll("input[data-field]"));
  }

  function input(field) {
    return inputs().find((i) => i.dataset.field === field) || null;
  }

  function touched(i) {
    return i.value !== i.dataset.base;
  }

  function display(field, value, i) {
    if (value === null || value === undefined) return "";
    if (field === "tags") return (value || []).join(", ");
    if (field.startsWith("attributes.")) {
      if (typeof value === "string") {
        if (i) delete i.dataset.json;
        return value;
      }
      if (i) i.dataset.json = "1";
      return JSON.stringify(value);
    }
    return String(value);
  }

  function parse(i) {
    const field = i.dataset.field;
    const text = i.value;
    if (field === "tags") return text.split(",").map((t) => t.trim()).filter(Boolean);
    if (field === "email" || field === "phone") return text.trim() === "" ? null : text.trim();
    if (field.startsWith("attributes.")) {
      if (text === "") return null; // removes the attribute
      if (i.dataset.json) {
        try {
          return JSON.parse(text);
        } catch (e) {
          return text;
        }
      }
      return text;
    }
    return text;
  }

  let attrCount = 1000;
  function addAttributeInput(key, text, isJson) {
    const anchor = document.getElementById("attr-anchor");
    attrCount += 1;
    const id = "f-attr-" + attrCount;
    const label = SB.el("label", { for: id }, key);
    const i = SB.el("input", { id, "data-field": "attributes." + key });
    if (root.dataset.canWrite !== "1") i.readOnly = true;
    i.value = text;
    i.dataset.base = text;
    if (isJson) i.dataset.json = "1";
    const wrap = SB.el("div", { class: "field" }, i);
    anchor.before(label, wrap);
    i.addEventListener("input", onInput);
    return i;
  }

  function flash(i, text) {
    const wrap = i.closest(".field");
    let note = wrap.querySelector(".note");
    if (!note) {
      note = SB.el("small", { class: "note", role: "status" });
      wrap.append(note);
    }
    note.textContent = text;
    i.classList.add("changed");
    setTimeout(() => i.classList.remove("changed"), 2000);
  }

  function clearConflict(i) {
    const box = i.closest(".field").querySelector(".conflict");
    if (box) box.remove();
    i.removeAttribute("aria-invalid");
    pending.delete(i.dataset.field);
    if (pending.size === 0) version = Math.max(version, latestVersion);
  }

  // Both values, and the choice. "Keep mine" leaves the input touched against their value.
  function showConflict(i, theirsText, who) {
    pending.set(i.dataset.field, theirsText);
    const wrap = i.closest(".field");
    let box = wrap.querySelector(".conflict");
    if (box) box.remove();
    const mine = i.value;
    const keep = SB.el("button", { type: "button", class: "keep" }, "Keep mine");
    const take = SB.el("button", { type: "button", class: "take" }, "Use theirs");
    box = SB.el(
      "div",
      { class: "conflict", role: "alert" },
      SB.el("p", {}, (who || "Someone else") + " changed this field too."),
      SB.el("p", {}, "Yours: ", SB.el("span", { class: "yours" }, mine)),
      SB.el("p", {}, "Theirs: ", SB.el("span", { class: "theirs" }, theirsText)),
      keep,
      " ",
      take
    );
    wrap.append(box);
    i.setAttribute("aria-invalid", "true");
    keep.addEventListener("click", () => {
      i.dataset.base = theirsText;
      clearConflict(i);
      i.focus();
    });
    take.addEventListener("click", () => {
      i.value = theirsText;
      i.dataset.base = theirsText;
      clearConflict(i);
      i.focus();
    });
  }

  const names = new Map();
  function whoName(userId) {
    if (userId === myId) return "You";
    return names.get(userId) || "Someone else";
  }

  // Apply `changed` (field → new value) made at `newVersion` by `by`.
  function applyChanges(changed, newVersion, by) {
    let clean = true;
    for (const [key, value] of Object.entries(changed)) {
      if (key === "attributes" && value && typeof value === "object") {
        for (const [k, v] of Object.entries(value)) clean = applyOne("attributes." + k, v, by) && clean;
      } else {
        clean = applyOne(key, value, by) && clean;
      }
    }
    latestVersion = Math.max(latestVersion, newVersion);
    if (clean && pending.size === 0) version = Math.max(version, newVersion);
    document.getElementById("version").textContent = String(latestVersion);
    const name = input("name");
    if (name && "name" in changed) document.getElementById("contact-title").textContent = name.dataset.base || "(no name)";
  }

  function applyOne(field, value, by) {
    let i = input(field);
    if (!i) {
      if (value === null || value === undefined) return true;
      addAttributeInput(field.slice("attributes.".length), display(field, value, null), typeof value !== "string");
      return true;
    }
    const text = display(field, value, i);
    if (text === i.dataset.base && !pending.has(field)) return true;
    if (!touched(i)) {
      i.value = text;
      i.dataset.base = text;
      if (by !== myId) flash(i, "Changed by " + whoName(by));
      return true;
    }
    if (i.value === text) {
      i.dataset.base = text; // they made the same change
      clearConflict(i);
      return true;
    }
    showConflict(i, text, whoName(by));
    return false;
  }

  // Presence of the others.
  function setPresence(p) {
    if (p.user_id === myId) return;
    names.set(p.user_id, p.user_name);
    const list = document.getElementById("presence");
    let li = list.querySelector('li[data-user-id="' + Number(p.user_id) + '"]');
    if (p.state === "left") {
      if (li) li.remove();
    } else {
      if (!li) {
        li = SB.el("li", { "data-user-id": Number(p.user_id) });
        list.append(li);
      }
      li.className = "p-" + p.state;
      li.replaceChildren(p.user_name || "user " + p.user_id, " ", SB.el("small", {}, "(" + p.state + ")"));
    }
    document.getElementById("presence-none").hidden = list.children.length > 0;
  }
  for (const li of document.querySelectorAll("#presence li")) {
    names.set(Number(li.dataset.userId), li.firstChild.textContent.trim());
  }

  const live = new SB.Live({
    topics: ["contact:" + contactId],
    after: Number(root.dataset.head),
    onEvent(ev) {
      const d = ev.data || {};
      if (ev.type === "presence") return setPresence(d);
      if (ev.type === "contact.updated" || ev.type === "contact.created") {
        applyChanges(d.changed || {}, Number(d.version), d.by);
        htmx.trigger(document.body, "contact-changed");
      } else if (ev.type === "contact.deleted") {
        SB.setLiveState("This contact was deleted.");
        for (const i of inputs()) i.readOnly = true;
      } else if (ev.type.startsWith("message.")) {
        htmx.trigger(document.body, "messages-changed");
      } else if (ev.type.startsWith("conversation.")) {
        htmx.trigger(document.body, "conversations-changed");
      }
    },
    onLive() {
      live.presence(contactId, editing ? "editing" : "viewing");
    },
  });
  window.SB.contact = live;

  let editing = false;
  function onInput() {
    const dirty = inputs().some(touched);
    if (dirty !== editing) {
      editing = dirty;
      live.presence(contactId, editing ? "editing" : "viewing");
    }
  }
  for (const i of inputs()) i.addEventListener("input", onInput);

  const addBtn = document.getElementById("add-attr");
  if (addBtn) {
    addBtn.addEventListener("click", () => {
      const key = document.getElementById("new-attr-key").value.trim();
      const value = document.getElementById("new-attr-value").value;
      if (!key) return;
      const existing = input("attributes." + key);
      const i = existing || addAttributeInput(key, "", false);
      i.dataset.base = existing ? i.dataset.base : "";
      i.value = value;
      document.getElementById("new-attr-key").value = "";
      document.getElementById("new-attr-value").value = "";
      onInput();
      i.focus();
    });
  }

  function syncAll(contact) {
    for (const i of inputs()) {
      const f = i.dataset.field;
      let value;
      if (f.startsWith("attributes.")) value = contact.attributes[f.slice("attributes.".length)];
      else value = contact[f];
      const text = display(f, value, i);
      i.value = text;
      i.dataset.base = text;
      const note = i.closest(".field").querySelector(".conflict");
      if (note) note.remove();
      i.removeAttribute("aria-invalid");
    }
    for (const [k, v] of Object.entries(contact.attributes || {})) {
      if (!input("attributes." + k)) addAttributeInput(k, display("attributes." + k, v, null), typeof v !== "string");
    }
    pending.clear();
    version = contact.version;
    latestVersion = Math.max(latestVersion, contact.version);
    document.getElementById("version").textContent = String(latestVersion);
    document.getElementById("contact-title").textContent = contact.name || "(no name)";
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (root.dataset.canWrite !== "1") return;
    const state = document.getElementById("save-state");
    problemBox.replaceChildren();
    if (pending.size) {
      state.textContent = "Choose between the two values first.";
      return;
    }
    const body = {};
    for (const i of inputs().filter(touched)) {
      const f = i.dataset.field;
      if (f.startsWith("attributes.")) {
        body.attributes = body.attributes || {};
        body.attributes[f.slice("attributes.".length)] = parse(i);
      } else {
        body[f] = parse(i);
      }
    }
    if (Object.keys(body).length === 0) {
      state.textContent = "Nothing to save.";
      return;
    }
    state.textContent = "Saving…";
    const r = await SB.api("PATCH", "/api/v1/contacts/" + contactId, body, { "If-Match": '"' + version + '"' });
    if (r.ok) {
      syncAll(r.data);
      state.textContent = "Saved.";
      editing = false;
      live.presence(contactId, "viewing");
    } else if (r.status === 409 && r.data && Array.isArray(r.data.conflicts)) {
      const current = r.data.current;
      const conflicted = new Set(r.data.conflicts.map((c) => c.field));
      // Take their values for the fields we did not touch; show both for the others.
      for (const i of inputs()) {
        const f = i.dataset.field;
        if (conflicted.has(f)) continue;
        const value = f.startsWith("attributes.") ? current.attributes[f.slice("attributes.".length)] : current[f];
        const text = display(f, value, i);
        if (!touched(i)) i.value = text;
        i.dataset.base = text; // a touched field stays touched against their value, and is sent
      }
      latestVersion = Math.max(latestVersion, current.version);
      for (const c of r.data.conflicts) {
        const i = input(c.field);
        if (i) showConflict(i, display(c.field, c.theirs, i), "Someone else");
      }
      // Once every conflict is chosen, the save goes against the version they were shown from.
      state.textContent = "Someone else changed the same field: choose a value, then save again.";
    } else {
      SB.showProblem(problemBox, r.data);
      state.textContent = "";
    }
  });

  // Send a message, with a template preview.
  const sendForm = document.getElementById("send-form");
  if (sendForm) {
    const templateSel = document.getElementById("s-template");
    const channelSel = document.getElementById("s-channel");
    templateSel.addEventListener("change", () => {
      const opt = templateSel.selectedOptions[0];
      if (opt && opt.dataset.channel) channelSel.value = opt.dataset.channel;
      const manual = !templateSel.value;
      document.getElementById("s-subject").disabled = !manual;
      document.getElementById("s-body").disabled = !manual;
    });
    document.getElementById("preview-btn").addEventListener("click", async () => {
      const box = sendForm.querySelector(".problem");
      box.replaceChildren();
      const pane = document.getElementById("preview");
      if (!templateSel.value) {
        document.getElementById("preview-subject").textContent = document.getElementById("s-subject").value;
        document.getElementById("preview-body").textContent = document.getElementById("s-body").value;
        pane.hidden = false;
        return;
      }
      const r = await SB.api("POST", "/api/v1/templates/" + Number(templateSel.value) + "/preview", {
        contact_id: contactId,
      });
      if (!r.ok) return SB.showProblem(box, r.data);
      document.getElementById("preview-subject").textContent = r.data.subject || "";
      document.getElementById("preview-body").textContent = r.data.body || "";
      pane.hidden = false;
    });
    sendForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const box = sendForm.querySelector(".problem");
      box.replaceChildren();
      const body = { contact_id: contactId, channel: channelSel.value };
      if (templateSel.value) body.template_id = Number(templateSel.value);
      else {
        body.subject = document.getElementById("s-subject").value;
        body.body = document.getElementById("s-body").value;
      }
      const at = document.getElementById("s-send-at").value;
      if (at) body.send_at = new Date(at).toISOString();
      const r = await SB.api("POST", "/api/v1/messages", body, { "Idempotency-Key": crypto.randomUUID ? crypto.randomUUID() : String(Date.now() + Math.random()) });
      if (!r.ok) return SB.showProblem(box, r.data);
      box.append(SB.el("p", { class: "ok" }, "Message #" + r.data.id + " is " + r.data.status + "."));
      htmx.trigger(document.body, "messages-changed");
    });
  }

  window.addEventListener("pagehide", () => {
    if (live.mode === "poll") {
      live.presenceState = { op: "presence", contact_id: contactId, state: "left" };
      live.postPresence(true);
    } else {
      live.presence(contactId, "left");
    }
  });
  live.start();
})();
