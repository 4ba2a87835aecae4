// The cliplens web page: four tabs over the HTTP API. No build step, no dependencies.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
let apiKey = sessionStorage.getItem("cliplens-key") || "";

// --- calling the API ------------------------------------------------------------------------------

class ApiProblem extends Error {}

async function api(path, body) {
  const headers = apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
  let response;
  try {
    response = await fetch(path, { method: body ? "POST" : "GET", body, headers });
  } catch (error) {
    throw new ApiProblem("The service cannot be reached. Is `cliplens serve` still running?");
  }
  let data = null;
  try {
    data = await response.json();
  } catch (error) {
    data = null;
  }
  if (response.status === 401) {
    $("#key-form").hidden = false;
    throw new ApiProblem((data && data.message) || "This service needs an API key: enter it above.");
  }
  if (!response.ok) {
    const message = data && data.message ? data.message : `The service answered ${response.status}.`;
    throw new ApiProblem(message);
  }
  return data;
}

function showError(section, error) {
  const box = $(".error", section);
  box.textContent = error instanceof ApiProblem ? error.message : `Something went wrong: ${error.message}`;
  box.hidden = false;
}

function clearError(section) {
  const box = $(".error", section);
  box.textContent = "";
  box.hidden = true;
}

async function run(section, button, work) {
  clearError(section);
  button.disabled = true;
  section.classList.add("busy");
  try {
    await work();
  } catch (error) {
    showError(section, error);
  } finally {
    button.disabled = false;
    section.classList.remove("busy");
  }
}

const percent = (p) => `${(p * 100).toFixed(1)}%`;

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// --- tabs and image drops -----------------------------------------------------------------------------

function selectTab(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  }
  for (const panel of document.querySelectorAll("[role=tabpanel]")) {
    panel.hidden = panel.id !== `tab-${name}`;
  }
  history.replaceState(null, "", `#${name}`);
}

function setUpDrop(zone) {
  const input = $("input[type=file]", zone);
  const preview = zone.dataset.preview ? document.getElementById(zone.dataset.preview) : null;
  const show = () => {
    const hint = $(".drop-hint", zone);
    if (preview && input.files.length) {
      preview.src = URL.createObjectURL(input.files[0]);
      preview.hidden = false;
      hint.hidden = true;
    } else if (input.files.length > 1 || (!preview && input.files.length)) {
      hint.textContent = `${input.files.length} image(s) chosen`;
    }
  };
  input.addEventListener("change", show);
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      show();
    }
  });
}

function needImage(input, what = "an image") {
  if (!input.files.length) throw new ApiProblem(`Choose or drop ${what} first.`);
}

// --- classify ---------------------------------------------------------------------------------------

function renderClassification(result) {
  const target = $("#classify-results");
  target.replaceChildren();
  const none = result.none_of_these;
  const outside = result.out_of_distribution;
  const parts = outside == null ? "" :
    ` (no label fits ${percent(result.no_label_fits)}, outside the labels' world ${percent(outside)})`;
  const noneLine = element("p", { class: none >= 0.5 ? "none-of-these strong" : "none-of-these" },
    element("strong", {}, "None of these: "), percent(none), parts,
    none >= 0.5 && result.looks_like ? ` — it looks more like “${result.looks_like}”` : "");
  if (none >= 0.5) target.append(noneLine);
  const list = element("ol", { class: "bars" });
  for (const score of result.labels) {
    list.append(element("li", { class: "bar-row", "data-label": score.label, "data-probability": score.probability },
      element("span", { class: "bar-label" }, score.label),
      element("span", { class: "bar" }, element("span", { class: "fill", style: `width:${(score.probability * 100).toFixed(2)}%` })),
      element("span", { class: "bar-value" }, percent(score.probability))));
  }
  target.append(list);
  if (none < 0.5) target.append(noneLine);
}

async function classify(event) {
  event.preventDefault();
  const section = $("#tab-classify");
  await run(section, $("#classify-run"), async () => {
    const input = $("#classify-image");
    needImage(input);
    const labels = $("#classify-labels").value.split("\n").map((l) => l.trim()).filter(Boolean);
    if (!labels.length) throw new ApiProblem("Write at least one caption, one per line.");
    const form = new FormData();
    form.append("image", input.files[0]);
    for (const label of labels) form.append("labels", label);
    form.append("template", $("#classify-template").value.trim() || "none");
    form.append("multi_label", $("#classify-multi").checked ? "true" : "false");
    form.append("ignore_text", $("#classify-ignore-text").checked ? "true" : "false");
    const result = await api("/v1/classify", form);
    renderClassification(result);
    if (result.text_covered != null) {
      $("#classify-results").append(element("p", { class: "muted", id: "classify-text-covered" },
        result.text_covered ? `Covered ${result.text_covered} text region(s) before classifying: ` +
          result.text_found.map((t) => `“${t}”`).join(", ") : "No text found in the image."));
    }
  });
}

// --- caption ----------------------------------------------------------------------------------------

function renderCaption(result) {
  const target = $("#caption-results");
  target.replaceChildren(element("pre", { class: "llm", id: "caption-llm" }, result.llm));
  for (const [bank, labels] of Object.entries(result.banks)) {
    const chips = element("div", { class: "chips" });
    for (const label of labels) {
      const title = label.typographic_suspect ? "looks read from text in the image, not seen" : "";
      chips.append(element("span", { class: label.typographic_suspect ? "chip suspect" : "chip", title },
        `${label.label} ${percent(label.score)}${label.typographic_suspect ? " (text?)" : ""}`));
    }
    if (!labels.length) chips.append(element("span", { class: "muted" }, "nothing fits"));
    target.append(element("div", { class: "bank" }, element("h3", {}, bank), chips));
  }
}

async function caption(event) {
  event.preventDefault();
  const section = $("#tab-caption");
  await run(section, $("#caption-run"), async () => {
    const input = $("#caption-image");
    needImage(input);
    const form = new FormData();
    form.append("image", input.files[0]);
    for (const bank of $("#caption-banks").value.split(",").map((b) => b.trim()).filter(Boolean)) form.append("banks", bank);
    form.append("keep_typographic", $("#caption-typographic").checked ? "true" : "false");
    form.append("read_text", $("#caption-read-text").checked ? "true" : "false");
    form.append("ignore_text", $("#caption-ignore-text").checked ? "true" : "false");
    const result = await api("/v1/caption", form);
    renderCaption(result);
    if (result.text_found != null) {
      $("#caption-results").append(element("p", { class: "muted" }, result.text_found.length
        ? `Text in the image${result.text_covered ? " (covered before captioning)" : ""}: ` +
          result.text_found.map((t) => `“${t}”`).join(", ") : "No text found in the image."));
    }
  });
}

// --- search -----------------------------------------------------------------------------------------

async function thumbnailURL(path) {
  if (!apiKey) return path;
  const response = await fetch(path, { headers: { Authorization: `Bearer ${apiKey}` } });
  return URL.createObjectURL(await response.blob());
}

// a video's moment as a player shows it: 1:23, 1:02:03
function clock(seconds) {
  const whole = Math.floor(seconds), h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
}

async function search(event, like = null) {
  if (event) event.preventDefault();
  const section = $("#tab-search");
  await run(section, $("#search-run"), async () => {
    const query = like == null ? $("#search-query").value.trim() : "";
    const image = $("#search-image");
    const filters = ["after", "before", "camera", "near", "within", "kind", "contains-text"]
      .map((name) => [name === "within" ? "within_km" : name.replace("-", "_"), $(`#search-${name}`).value.trim()])
      .filter(([, value]) => value);
    if (like == null && !query && !image.files.length && !filters.length) {
      throw new ApiProblem("Type a query, drop an example image, or say when, which camera or where.");
    }
    const form = new FormData();
    if (query) form.append("query", query);
    for (const [name, value] of filters) form.append(name, value);
    if (like != null) form.append("like", String(like));
    else if (image.files.length) form.append("image", image.files[0]);
    form.append("top", $("#search-top").value || "24");
    const result = await api("/v1/search", form);
    const target = $("#search-results");
    target.replaceChildren();
    if (!result.results.length) target.append(element("p", { class: "muted" }, "No results."));
    // a query of one text gives each photo its match, P(it shows the query): draw the line at 50%
    const judged = result.results.length && result.results[0].match != null;
    if (judged && result.results.every((h) => h.match < 0.5)) {
      target.append(element("p", { class: "match-line none-of-these strong" },
        "No photo matches this query; the closest follow."));
    }
    let lineDrawn = !judged || result.results.every((h) => h.match < 0.5);
    const hits = judged  // probable matches first, each side in the order of its scores
      ? [...result.results.filter((h) => h.match >= 0.5), ...result.results.filter((h) => h.match < 0.5)]
      : result.results;
    for (const hit of hits) {
      if (!lineDrawn && hit.match < 0.5) {
        target.append(element("p", { class: "match-line muted" }, "Below: probably not what you asked for."));
        lineDrawn = true;
      }
      const name = hit.path.split(/[\\/]/).pop() + (hit.time != null ? ` @ ${clock(hit.time)}` : "");
      const img = element("img", { alt: name, loading: "lazy" });
      img.src = await thumbnailURL(hit.thumbnail);
      const match = hit.match != null ? element("span", { class: "match" }, `match ${percent(hit.match)}`) : "";
      const taken = hit.taken ? element("span", { class: "match" }, hit.taken.slice(0, 10)) : "";
      const words = hit.text ? element("span", { class: "match" }, `“${hit.text.replace(/\s+/g, " ")}”`) : "";
      const more = element("button", { type: "button", class: "more-like" }, "More like this");
      more.addEventListener("click", () => search(null, hit.id));  // by id: the page never names server files
      target.append(element("figure", { title: hit.path, "data-match": hit.match ?? "", "data-id": hit.id }, img,
        element("figcaption", {}, element("span", {}, name),
          result.score_kind === "none" ? "" : element("span", { class: "score" }, hit.score.toFixed(3)), match, taken,
          words),
        more));
    }
  });
}

// --- rank -------------------------------------------------------------------------------------------

async function rank(event) {
  event.preventDefault();
  const section = $("#tab-rank");
  await run(section, $("#rank-run"), async () => {
    const prompt = $("#rank-prompt").value.trim();
    if (!prompt) throw new ApiProblem("Write the prompt the images should match.");
    const input = $("#rank-images");
    needImage(input, "some images");
    const files = Array.from(input.files);
    const form = new FormData();
    form.append("prompt", prompt);
    const negative = $("#rank-negative").value.trim();
    if (negative) form.append("negative", negative);
    form.append("ignore_text", $("#rank-ignore-text").checked ? "true" : "false");
    for (const file of files) form.append("images", file);
    const result = await api("/v1/rank", form);
    const target = $("#rank-results");
    target.replaceChildren();
    result.results.forEach((item, position) => {
      const img = element("img", { alt: item.path });
      img.src = URL.createObjectURL(files[item.index]);
      target.append(element("figure", { "data-name": item.path }, img,
        element("figcaption", {}, element("span", {}, `${position + 1}. ${item.path}`),
          element("span", { class: "score" }, item.score.toFixed(3)))));
    });
  });
}

// --- start ------------------------------------------------------------------------------------------

async function connect() {
  try {
    const health = await api("/healthz");
    $("#model").textContent = `model: ${health.model}`;
  } catch (error) {
    $("#model").textContent = error.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => selectTab(tab.dataset.tab));
  }
  const start = location.hash.slice(1);
  if (["classify", "caption", "search", "rank"].includes(start)) selectTab(start);
  for (const zone of document.querySelectorAll(".drop")) setUpDrop(zone);
  $("#classify-form").addEventListener("submit", classify);
  $("#caption-form").addEventListener("submit", caption);
  $("#search-form").addEventListener("submit", search);
  $("#rank-form").addEventListener("submit", rank);
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey = $("#api-key").value.trim();
    sessionStorage.setItem("cliplens-key", apiKey);
    $("#key-form").hidden = true;
    connect();
  });
  connect();
});
