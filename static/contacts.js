// The contacts list: create a contact, import a CSV with live progress and rejected rows, and
// reload the list when a bulk action finishes.
"use strict";

(function () {
  const root = document.getElementById("contacts");
  if (!root) return;

  const newForm = document.getElementById("new-contact");
  if (newForm) {
    newForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const box = newForm.querySelector(".problem");
      const data = new FormData(newForm);
      const body = { name: data.get("name") || "" };
      if (data.get("email")) body.email = data.get("email");
      if (data.get("phone")) body.phone = data.get("phone");
      const tags = String(data.get("tags") || "").split(",").map((t) => t.trim()).filter(Boolean);
      if (tags.length) body.tags = tags;
      const r = await SB.api("POST", "/api/v1/contacts", body);
      if (!r.ok) return SB.showProblem(box, r.data);
      location.assign("/contacts/" + Number(r.data.id));
    });
  }

  let jobId = null;
  const early = []; // progress that arrived before the 202 answer named our job
  const rejected = document.getElementById("import-rejected");
  function progress(d) {
    if (!jobId || d.job_id !== jobId) return;
    const bar = document.getElementById("import-progress");
    bar.max = Math.max(1, d.total || 0);
    bar.value = d.processed || 0;
    const parts = [d.processed + " of " + d.total + " rows", d.created + " imported", d.rejected_count + " rejected"];
    if (d.done) parts.push(d.error ? "stopped: " + d.error : "done");
    document.getElementById("import-summary").textContent = parts.join(", ") + ".";
    for (const r of d.rejected || []) {
      const msg = (r.errors || []).map((e) => (e.field ? e.field + ": " : "") + e.message).join("; ");
      rejected.append(SB.el("tr", {}, SB.el("td", {}, String(r.row)), SB.el("td", {}, msg)));
    }
    if (d.done) htmx.ajax("GET", "/contacts/list", { target: "#contact-results" });
  }

  const live = new SB.Live({
    topics: ["contacts"],
    after: Number(root.dataset.head),
    onEvent(ev) {
      // A bulk action's last chunk: show the list as it is now.
      if (ev.type === "bulk.progress" && ev.data && ev.data.done) {
        htmx.ajax("GET", "/contacts/list" + location.search, { target: "#contact-results" });
        return;
      }
      if (ev.type !== "import.progress") return;
      if (jobId) progress(ev.data || {});
      else early.push(ev.data || {});
    },
  });
  live.start();

  const importForm = document.getElementById("import-form");
  if (importForm) {
    importForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const box = importForm.querySelector(".problem");
      box.replaceChildren();
      const send = () =>
        fetch("/api/v1/contacts/import", {
          method: "POST",
          credentials: "same-origin",
          headers: { Accept: "application/json", "X-CSRF-Token": SB.csrf() },
          body: new FormData(importForm),
        });
      let r = await send();
      if (r.status === 401 && (await SB.refresh())) r = await send();
      const data = await r.json().catch(() => null);
      if (r.status !== 202) return SB.showProblem(box, data);
      jobId = data.job_id;
      rejected.replaceChildren();
      document.getElementById("import-status").hidden = false;
      document.getElementById("import-summary").textContent = "Started: " + data.total + " rows.";
      for (const d of early.splice(0)) progress(d);
    });
  }
})();
