// The message page: the timeline reloads when an event about this message arrives.
"use strict";

(function () {
  const root = document.getElementById("message");
  if (!root) return;
  const id = Number(root.dataset.messageId);
  const live = new SB.Live({
    topics: ["board"],
    after: Number(root.dataset.head),
    onEvent(ev) {
      if (ev.data && Number(ev.data.message_id) === id) htmx.trigger(document.body, "message-changed");
    },
  });
  live.start();
})();
