// The demo page: the model's card, one text with a bar per class, and many texts as a table and CSV.
"use strict";

const EXAMPLES = [
  "Thanks for the help, have a wonderful day!",
  "You are a complete idiot and everyone knows it.",
  "That movie was awful, what a waste of an evening.",
  "Shut up, nobody asked for your stupid opinion.",
];
const MAX_TEXTS = 256;
let batchRows = [];

const $ = (id) => document.getElementById(id);

async function predict(body) {
  const response = await fetch("/api/predict", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.detail || response.statusText);
  return answer;
}

function showError(id, error) {
  $(id).textContent = error ? `error: ${error.message}` : "";
  $(id).hidden = !error;
}

const percent = (p) => `${(100 * p).toFixed(1)}%`;

async function classifyOne() {
  showError("error", null);
  $("classify").disabled = true;
  try {
    const answer = await predict({ text: $("text").value });
    $("label").textContent = answer.label;
    $("bars").replaceChildren(...Object.entries(answer.scores).map(([label, p]) => bar(label, p, label === answer.label)));
    $("answer").hidden = false;
  } catch (error) {
    $("answer").hidden = true;
    showError("error", error);
  } finally {
    $("classify").disabled = false;
  }
}

function bar(label, probability, top) {
  const row = document.createElement("div");
  row.className = top ? "bar top" : "bar";
  row.dataset.label = label;
  row.dataset.probability = probability;
  const name = document.createElement("span");
  name.textContent = label;
  const track = document.createElement("div");
  track.className = "track";
  const fill = document.createElement("div");
  fill.className = "fill";
  fill.style.width = percent(probability);
  track.append(fill);
  const value = document.createElement("span");
  value.className = "value";
  value.textContent = percent(probability);
  row.append(name, track, value);
  return row;
}

async function classifyMany() {
  showError("batch-error", null);
  const texts = $("batch-text").value.split("\n").filter((line) => line.trim());
  if (!texts.length || texts.length > MAX_TEXTS) {
    showError("batch-error", new Error(`give 1 to ${MAX_TEXTS} non-empty lines, not ${texts.length}`));
    return;
  }
  $("batch-classify").disabled = true;
  try {
    const answers = await predict({ texts });
    batchRows = texts.map((text, i) => ({ text, ...answers[i] }));
    showTable(Object.keys(answers[0].scores));
    $("download-csv").disabled = false;
  } catch (error) {
    showError("batch-error", error);
  } finally {
    $("batch-classify").disabled = false;
  }
}

function cell(tag, text, className) {
  const element = document.createElement(tag);
  element.textContent = text;
  if (className) element.className = className;
  return element;
}

function showTable(labels) {
  const head = document.createElement("tr");
  head.append(...["text", "label", ...labels].map((name) => cell("th", name)));
  $("batch-table").tHead.replaceChildren(head);
  $("batch-table").tBodies[0].replaceChildren(
    ...batchRows.map((row) => {
      const tr = document.createElement("tr");
      tr.append(cell("td", row.text), cell("td", row.label), ...labels.map((l) => cell("td", row.scores[l].toFixed(4), "number")));
      return tr;
    }),
  );
  $("batch-table").hidden = false;
}

function csvField(value) {
  const text = String(value);
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function downloadCsv() {
  const labels = Object.keys(batchRows[0].scores);
  const lines = [["text", "label", ...labels], ...batchRows.map((r) => [r.text, r.label, ...labels.map((l) => r.scores[l])])];
  const blob = new Blob([lines.map((line) => line.map(csvField).join(",")).join("\r\n") + "\r\n"], { type: "text/csv" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "predictions.csv";
  link.click();
  URL.revokeObjectURL(link.href);
}

function fact(term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  return [dt, dd];
}

function metric(value) {
  const mean = value.mean.toFixed(4);
  return value.ci95 === null ? mean : `${mean} ± ${value.ci95.toFixed(4)} (95% CI, ${value.n} seeds)`;
}

async function loadCard() {
  const [card, health] = await Promise.all([fetch("/api/model"), fetch("/healthz")].map((p) => p.then((r) => r.json())));
  $("nav-dashboard").hidden = !health.parts.dashboard;
  $("nav-report").hidden = !health.parts.report;
  $("model-name").textContent = card.name;
  $("model-facts").replaceChildren(
    ...fact("method", card.method ?? "unknown (no metrics.json beside the model)"),
    ...fact("labels", card.labels.join(", ")),
    ...fact("size", `${card.layers} layers, ${(card.parameters / 1e6).toFixed(2)} M parameters, ${(card.size_bytes / 2 ** 20).toFixed(1)} MiB on disk`),
    ...fact("reads", `${card.max_length} tokens per text; longer texts are truncated`),
    ...Object.entries(card.test).flatMap(([name, value]) => fact(`test ${name.replace("_", "-")}`, metric(value))),
  );
}

function init() {
  $("examples").replaceChildren(
    ...EXAMPLES.map((text) => {
      const button = cell("button", text.length > 28 ? `${text.slice(0, 26)}…` : text, "example");
      button.type = "button";
      button.title = text;
      button.addEventListener("click", () => {
        $("text").value = text;
        classifyOne();
      });
      return button;
    }),
  );
  $("classify").addEventListener("click", classifyOne);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) classifyOne();
  });
  $("batch-text").value = EXAMPLES.join("\n");
  $("batch-classify").addEventListener("click", classifyMany);
  $("download-csv").addEventListener("click", downloadCsv);
  loadCard().catch((error) => showError("error", error));
}

document.addEventListener("DOMContentLoaded", init);
