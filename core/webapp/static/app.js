// skycrawl web app: progressive enhancement only; every page works without it.
// - [data-poll]: refresh crawl status and progress from the JSON list, until all are finished
// - [data-copy]: copy a shown-once secret to the clipboard
// - [data-refresh-ms]: reload an operator page periodically (paused while a form has focus)

const TERMINAL = new Set(["completed", "failed", "cancelled", "dead-lettered"]);

function updateRow(el, crawl) {
  const status = el.querySelector("[data-role=status]");
  if (status && status.textContent !== crawl.status) {
    status.textContent = crawl.status;
    status.className = `badge s-${crawl.status}`;
  }
  const done = crawl.counts.fetched + crawl.counts.failed;
  const bar = el.querySelector("[data-role=progress]");
  if (bar) {
    const cap = Number(el.dataset.maxPages) || done || 1;
    bar.max = TERMINAL.has(crawl.status) && done ? done : cap;
    bar.value = done;
    bar.textContent = String(done);
  }
  const counts = el.querySelector("[data-role=counts]");
  if (counts) {
    const c = crawl.counts;
    counts.textContent = `${c.fetched} fetched · ${c.failed} failed · ${c.queued} queued`;
  }
  if (TERMINAL.has(crawl.status)) {
    for (const form of el.querySelectorAll("[data-role=cancel]")) form.remove();
  }
}

async function poll(container) {
  const url = container.dataset.poll;
  const every = Number(container.dataset.pollMs) || 2000;
  const rows = () => [...container.querySelectorAll("[data-crawl]")];
  const tick = async () => {
    let unfinished = false;
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
      const type = response.headers.get("content-type") || "";
      if (!response.ok || !type.includes("json")) return; // signed out, or the server is down
      const data = await response.json();
      const byId = new Map(data.items.map((c) => [c.id, c]));
      for (const el of rows()) {
        const crawl = byId.get(el.dataset.crawl);
        if (!crawl) continue;
        updateRow(el, crawl);
        if (!TERMINAL.has(crawl.status)) unfinished = true;
      }
    } catch {
      unfinished = true; // a network blip: try again
    }
    if (unfinished) setTimeout(tick, every);
    else finished();
  };
  // seen ending while the page was open: a crawl page reloads to list its pages
  const finished = () => {
    container.dataset.pollDone = "true";
    if (container.dataset.reloadOnFinish !== undefined) location.reload();
  };
  const anyUnfinished = rows().some((el) => {
    const s = el.querySelector("[data-role=status]");
    return s && !TERMINAL.has(s.textContent.trim());
  });
  if (anyUnfinished) setTimeout(tick, every);
  else container.dataset.pollDone = "true";
}

function copyButtons() {
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      const input = document.getElementById(button.dataset.copy);
      if (!input) return;
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Press Ctrl+C";
      }
    });
  }
}

function autoRefresh() {
  const el = document.querySelector("[data-refresh-ms]");
  if (!el) return;
  const every = Number(el.dataset.refreshMs) || 6000;
  setInterval(() => {
    const active = document.activeElement;
    if (active && active.closest("form")) return;
    window.location.reload();
  }, every);
}

for (const el of document.querySelectorAll("[data-poll]")) poll(el);
copyButtons();
autoRefresh();
