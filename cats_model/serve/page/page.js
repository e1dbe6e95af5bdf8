// The page: photos in (picked, dropped or pasted), one request each, top-k bars out (behind a toggle when the
// model says the photo shows no cat). Text is only ever set
// with textContent, so names from files or the model cannot inject markup.
"use strict";

const $ = (id) => document.getElementById(id);

async function showModel() {
  try {
    const about = await (await fetch("/model")).json();
    const accuracy = about.metrics && (about.metrics["test/acc"] ?? about.metrics.accuracy_int8);
    $("model").textContent =
      `${about.backbone} (${about.kind}, ${about.file}), ${about.class_names.length} classes` +
      (accuracy != null ? `, test accuracy ${(accuracy * 100).toFixed(1)}%` : "");
  } catch (err) {
    $("model").textContent = "The model could not be reached: is the server running?";
  }
}

function newCard(file) {
  const card = $("card").content.firstElementChild.cloneNode(true);
  card.querySelector(".name").textContent = file.name || "pasted image";
  const thumb = card.querySelector(".thumb");
  thumb.src = URL.createObjectURL(file);
  thumb.alt = `photo ${file.name || "pasted"}`;
  thumb.onerror = () => { // not an image the browser can show either: an empty frame, no broken-image icon
    const frame = document.createElement("div");
    frame.className = "thumb missing";
    thumb.replaceWith(frame);
  };
  $("results").prepend(card);
  return card;
}

// A photo the model says shows no cat: say so, and keep its breeds behind a "show anyway" toggle.
function showNotACat(card, result) {
  card.classList.add("not-cat");
  const verdict = card.querySelector(".verdict");
  verdict.textContent =
    `This does not look like a cat (cat probability ${(result.cat_probability * 100).toFixed(1)}%).`;
  verdict.hidden = false;
  const bars = card.querySelector(".bars");
  const toggle = card.querySelector(".show-anyway");
  bars.hidden = true;
  toggle.hidden = false;
  toggle.addEventListener("click", () => {
    bars.hidden = !bars.hidden;
    toggle.setAttribute("aria-expanded", String(!bars.hidden));
    toggle.textContent = bars.hidden ? "show anyway" : "hide breeds";
  });
}

function showPredictions(card, answer, seconds) {
  card.querySelector(".message").textContent =
    `${answer.model.backbone}: ${answer.elapsed_ms.toFixed(0)} ms on the server, ${Math.round(seconds * 1000)} ms in all`;
  const result = answer.results[0];
  if (result.is_cat === false) showNotACat(card, result);
  const bars = card.querySelector(".bars");
  for (const { label, probability } of result.predictions) {
    const percent = (probability * 100).toFixed(1);
    const item = document.createElement("li");
    const text = document.createElement("div");
    text.className = "label";
    const name = document.createElement("span");
    name.textContent = label;
    const value = document.createElement("span");
    value.textContent = `${percent}%`;
    text.append(name, value);
    const track = document.createElement("div");
    track.className = "track";
    track.setAttribute("role", "img");
    track.setAttribute("aria-label", `${label} ${percent} percent`);
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${percent}%`;
    track.append(fill);
    item.append(text, track);
    bars.append(item);
  }
}

function showError(card, message) {
  card.classList.add("error");
  card.querySelector(".message").textContent = message;
}

async function classify(file) {
  const card = newCard(file);
  const form = new FormData();
  form.append("file", file, file.name || "pasted.png");
  form.append("top_k", $("top-k").value);
  const started = performance.now();
  try {
    const response = await fetch("/predict", { method: "POST", body: form });
    const answer = await response.json();
    if (!response.ok) return showError(card, answer.error || `the server answered ${response.status}`);
    showPredictions(card, answer, (performance.now() - started) / 1000);
  } catch (err) {
    showError(card, "The server could not be reached.");
  }
}

function classifyAll(files) {
  files = Array.from(files);
  if (!files.length) return;
  $("status").textContent = `${files.length} photo${files.length > 1 ? "s" : ""} sent`;
  files.forEach(classify);
}

function listen() {
  $("files").addEventListener("change", (event) => {
    classifyAll(event.target.files);
    event.target.value = ""; // the same photo can be chosen again
  });
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    document.addEventListener(type, () => drop.classList.remove("over"));
  }
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    classifyAll(event.dataTransfer.files);
  });
  document.addEventListener("paste", (event) => classifyAll(event.clipboardData.files));
}

listen();
showModel();
