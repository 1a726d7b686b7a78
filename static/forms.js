// Forms that write through the JSON API: <form data-api-method="POST" data-api-url="/api/v1/...">.
// Field types come from data-type (int, float, bool, json, lines: a list of the non-empty lines;
// text by default); an empty field is left out unless it has data-keep-empty (then it is sent as
// "" for text, null for numbers, [] for lines). A dotted name nests: "whatsapp.header.type" is
// body.whatsapp.header.type, and a number in it makes a list that keeps only its filled entries.
// A <fieldset data-object="whatsapp"> that is disabled, or whose fields are all empty, is sent as
// "whatsapp": null; with data-for-channel="whatsapp" it is shown and enabled only while the form's
// channel is that one.
"use strict";

(function () {
  function value(field) {
    const type = field.dataset.type || "text";
    if (type === "bool") return field.checked;
    const raw = field.value;
    if (type === "lines") {
      const lines = raw.split("\n").map((line) => line.trim()).filter((line) => line !== "");
      return lines.length || "keepEmpty" in field.dataset ? lines : undefined;
    }
    if (raw === "") {
      if (!("keepEmpty" in field.dataset)) return undefined;
      return type === "text" ? "" : null;
    }
    if (type === "int") return parseInt(raw, 10);
    if (type === "float") return parseFloat(raw);
    if (type === "json") return JSON.parse(raw);
    return raw;
  }

  function put(body, name, v) {
    const keys = name.split(".");
    let node = body;
    keys.slice(0, -1).forEach((key, i) => {
      if (node[key] === undefined) node[key] = /^[0-9]+$/.test(keys[i + 1]) ? [] : {};
      node = node[key];
    });
    node[keys[keys.length - 1]] = v;
  }

  function compact(v) {
    if (Array.isArray(v)) return v.filter((item) => item !== undefined).map(compact);
    if (v && typeof v === "object") for (const key of Object.keys(v)) v[key] = compact(v[key]);
    return v;
  }

  async function submit(form) {
    const box = form.querySelector(".problem");
    box.replaceChildren();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const method = form.dataset.apiMethod;
    let body;
    if (method !== "DELETE") {
      body = {};
      for (const field of form.querySelectorAll("input[name], select[name], textarea[name]")) {
        if (field.matches(":disabled") || field.name === "csrf_token") continue;
        let v;
        try {
          v = value(field);
        } catch (e) {
          return SB.showProblem(box, { detail: field.name + " is not valid JSON." });
        }
        if (v !== undefined) put(body, field.name, v);
      }
      compact(body);
      for (const group of form.querySelectorAll("fieldset[data-object]")) {
        if (!(group.dataset.object in body)) body[group.dataset.object] = null;
      }
    }
    const r = await SB.api(method, form.dataset.apiUrl, body);
    if (!r.ok) return SB.showProblem(box, r.data);
    if (form.dataset.redirect) {
      const id = r.data && r.data.id !== undefined ? String(Number(r.data.id)) : "";
      location.assign(form.dataset.redirect.replace("{id}", id));
    } else {
      box.append(SB.el("p", { class: "ok" }, form.dataset.done || "Done."));
    }
  }

  document.addEventListener("submit", (e) => {
    const form = e.target;
    if (!form.dataset || !form.dataset.apiMethod) return;
    e.preventDefault();
    submit(form);
  });

  // Fields that belong to one channel: shown, and sent, only while the form's channel is it.
  for (const group of document.querySelectorAll("fieldset[data-for-channel]")) {
    const channel = group.form && group.form.querySelector("select[name=channel]");
    if (!channel || channel.disabled) continue;
    channel.addEventListener("change", () => {
      const off = channel.value !== group.dataset.forChannel;
      group.hidden = off;
      group.disabled = off;
    });
  }

  // Template page: preview for a contact, and test-send to that contact.
  const tryForm = document.getElementById("template-try");
  if (tryForm) {
    const id = Number(tryForm.dataset.templateId);
    const box = tryForm.querySelector(".problem");
    const contact = () => Number(document.getElementById("try-contact").value) || null;
    document.getElementById("try-preview").addEventListener("click", async () => {
      box.replaceChildren();
      const r = await SB.api("POST", "/api/v1/templates/" + id + "/preview", { contact_id: contact() });
      if (!r.ok) return SB.showProblem(box, r.data);
      document.getElementById("preview-subject").textContent = r.data.subject || "";
      document.getElementById("preview-body").textContent = r.data.body || "";
      document.getElementById("preview").hidden = false;
    });
    const send = document.getElementById("try-send");
    if (send) {
      send.addEventListener("click", async () => {
        box.replaceChildren();
        if (!contact()) return SB.showProblem(box, { detail: "Choose a contact to send to." });
        const r = await SB.api("POST", "/api/v1/messages", {
          contact_id: contact(),
          channel: tryForm.dataset.channel,
          template_id: id,
        });
        if (!r.ok) return SB.showProblem(box, r.data);
        box.append(
          SB.el("p", { class: "ok" }, "Sent as ", SB.el("a", { href: "/messages/" + Number(r.data.id) }, "message #" + r.data.id), ".")
        );
      });
    }
  }
})();
