// The page of `fashion-jax serve`: upload photos to /api/explain and draw what comes back.
// Everything is drawn here (canvas and plain HTML): the page loads nothing from elsewhere.
"use strict";

const state = { model: null };
const $ = (selector, root = document) => root.querySelector(selector);

// A few stops of matplotlib's viridis (its default colour map, used by plots.plot_feature_maps).
const VIRIDIS = [
  [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
];

function viridis(v) {  // v in [0, 1]
  const x = Math.min(Math.max(v, 0), 1) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
  const t = x - i;
  return VIRIDIS[i].map((c, k) => Math.round(c + t * (VIRIDIS[i + 1][k] - c)));
}

function redBlue(v) {  // v in [-1, 1]: negative blue, 0 white, positive red (as RdBu_r)
  const t = Math.min(Math.abs(v), 1);
  const far = v < 0 ? [33, 102, 172] : [178, 24, 43];
  return far.map((c) => Math.round(255 + t * (c - 255)));
}

function bytesOf(base64) {
  const text = atob(base64);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

// One canvas of width x height pixels; colour(i) gives the [r, g, b] of pixel i (row-major).
function paint(canvas, width, height, colour) {
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const [r, g, b] = colour(i);
    image.data.set([r, g, b, 255], 4 * i);
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

function tile(width, height, colour, title) {
  const canvas = paint(document.createElement("canvas"), width, height, colour);
  canvas.title = title;
  return canvas;
}

function showModel(model) {
  state.model = model;
  const cfg = model.config.model || {};
  const shape = model.convolutional && cfg.filters ? `, filters ${cfg.filters.join("/")}` : "";
  $("#model-summary").textContent =
    `model ${model.model}${shape} from ${model.workdir} · ${model.classes.length} classes`;
  if (!model.convolutional) {
    const note = $("#no-conv");
    note.textContent = `Model ${model.model} has no conv layers: there are no filters or feature maps to show.`;
    note.hidden = false;
    return;
  }
  const f = model.filters;
  $("#filters-caption").textContent =
    `${f.layer}, ${f.count} of ${f.height}×${f.width} (red positive, blue negative, ±${f.limit.toFixed(3)})`;
  const box = $("#filters");
  f.weights.forEach((w, k) => {
    const flat = w.flat();
    box.append(tile(f.width, f.height, (i) => redBlue(flat[i] / f.limit), `${f.layer} filter ${k}`));
  });
  $("#filters-panel").hidden = false;
}

function bars(list, probabilities, top) {
  list.replaceChildren();
  state.model.classes.forEach((name, k) => {
    const p = probabilities[k];
    const li = document.createElement("li");
    li.className = "bar" + (k === top ? " top" : "");
    li.dataset.class = name;
    li.dataset.probability = String(p);
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(100 * p).toFixed(2)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(100 * p).toFixed(1)}%`;
    li.append(label, track, value);
    list.append(li);
  });
}

function featureMaps(box, layers) {
  box.replaceChildren();
  for (const layer of layers) {
    const heading = document.createElement("h4");
    heading.textContent = `${layer.layer} feature maps · ${layer.height}×${layer.width}×${layer.channels}`;
    const tiles = document.createElement("div");
    tiles.className = "tiles fmap-layer";
    tiles.dataset.layer = layer.layer;
    const data = bytesOf(layer.data);
    const size = layer.height * layer.width;
    for (let c = 0; c < layer.channels; c++) {
      const colour = (i) => viridis(data[c * size + i] / 255);
      const canvas = tile(layer.width, layer.height, colour, `${layer.layer} channel ${c}`);
      canvas.className = "fmap";
      tiles.append(canvas);
    }
    box.append(heading, tiles);
  }
}

// The map colour and opacity of viz/explain.py's PNGs: the overlay's alpha is the map over its
// maximum, so the browser test can read the API's map back from the canvas.
const OVERLAY_RGB = [255, 89, 0];
const METHOD_NOTES = {
  saliency: "how much each pixel's change moves the class's score (|gradient|)",
  "integrated-gradients": "each pixel's share of the score, summed along the way from a black image",
  occlusion: "how much the score drops when a 4×4 patch is blacked out",
  gradcam: "where the last conv layer's class-weighted features fire. Coarse (14×14): on the " +
    "chapter CNN, blackening its top garment pixels costs the class less than blackening random " +
    "ones (0.54×; integrated gradients and occlusion 3.6×), so read it as where the layer looked, " +
    "not which pixels mattered",
};

function drawAttribution(figure, pixels, item, method) {
  paint($(".base", figure), 28, 28, (i) => [pixels[i] * 0.6, pixels[i] * 0.6, pixels[i] * 0.6]);
  const canvas = $(".overlay", figure);
  overlayOn(canvas, item.maps[method].flat());
  canvas.dataset.method = method;
  canvas.dataset.label = String(item.label);
  const which = figure.dataset.which === "predicted" ? "why" : "why not";
  $("figcaption", figure).textContent =
    `${which} ${item.class} (${(100 * item.probability).toFixed(1)}%) · ${method}`;
}

function showWhy(card, answer, pixels) {
  const items = answer.attributions || [];
  if (!items.length) return;
  const select = $(".method", card);
  select.replaceChildren(...Object.keys(items[0].maps).map((m) => new Option(m, m)));
  const draw = () => {
    const figures = card.querySelectorAll(".attribution");
    items.forEach((item, k) => drawAttribution(figures[k], pixels, item, select.value));
    $(".method-note", card).textContent = METHOD_NOTES[select.value] || "";
  };
  select.addEventListener("change", draw);
  draw();
  $(".why", card).hidden = false;
}

function overlayOn(canvas, flat) {
  const top = Math.max(...flat);
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(28, 28);
  flat.forEach((v, i) => image.data.set([...OVERLAY_RGB, top > 0 ? Math.round(255 * v / top) : 0], 4 * i));
  ctx.putImageData(image, 0, 0);
}

function mistakeTile(item, group) {
  const figure = document.createElement("figure");
  figure.className = "mistake";
  figure.dataset.index = String(item.index);
  const stack = document.createElement("div");
  stack.className = "stack";
  const pixels = bytesOf(item.image);
  const base = paint(document.createElement("canvas"), 28, 28, (i) => Array(3).fill(pixels[i] * 0.6));
  base.className = "base";
  const overlay = document.createElement("canvas");
  overlay.className = "overlay";
  overlay.width = overlay.height = 28;
  overlayOn(overlay, item.map.flat());
  stack.append(base, overlay);
  const caption = document.createElement("figcaption");
  caption.textContent = `#${item.index}: said ${group.predicted} ${(100 * item.confidence).toFixed(0)}%`;
  figure.append(stack, caption);
  return figure;
}

async function showMistakes() {
  const button = $("#show-mistakes");
  button.disabled = true;
  button.textContent = "finding them on the test set…";
  const caption = $("#mistakes-caption");
  try {
    const response = await fetch("api/mistakes");
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    caption.textContent = `The most confused pairs of classes on the 10,000 test images; in each, ` +
      `the wrong answers given with the most confidence, with the ${answer.method} map of the class it said.`;
    const box = $("#mistakes");
    box.replaceChildren();
    for (const group of answer.groups) {
      const row = document.createElement("div");
      row.className = "mistake-row";
      const heading = document.createElement("h4");
      heading.textContent = `${group.true} taken for ${group.predicted} · ${group.count} times`;
      const tiles = document.createElement("div");
      tiles.className = "tiles";
      tiles.append(...group.items.map((item) => mistakeTile(item, group)));
      row.append(heading, tiles);
      box.append(row);
    }
    button.hidden = true;
    document.body.dataset.mistakes = "shown";
  } catch (err) {
    caption.textContent = String(err.message || err);
    button.disabled = false;
    button.textContent = "try again";
  }
  caption.hidden = false;
}

function showResult(card, answer) {
  const row = answer.prediction;
  card.classList.remove("pending");
  $(".status", card).textContent = "";
  $(".predicted-class", card).textContent = row.class;
  $(".predicted-probability", card).textContent = `${(100 * row.probability).toFixed(1)}%`;
  const pixels = bytesOf(answer.image);
  paint($(".model-input", card), 28, 28, (i) => [pixels[i], pixels[i], pixels[i]]);
  bars($(".bars", card), answer.probabilities, row.label);
  const notes = [`preprocessing: ${row.preprocessing}`, ...row.notes];
  $(".notes", card).textContent = notes.join(" · ");
  showWhy(card, answer, pixels);
  featureMaps($(".maps", card), answer.feature_maps);
  card.dataset.state = "done";
}

function showError(card, message) {
  card.classList.remove("pending");
  card.classList.add("error");
  $(".status", card).textContent = message;
  $(".card-body", card).remove();
  card.dataset.state = "error";
}

async function upload(file) {
  const card = $("#card-template").content.firstElementChild.cloneNode(true);
  card.classList.add("pending");
  card.dataset.file = file.name;
  $(".file-name", card).textContent = file.name;
  $(".status", card).textContent = "classifying…";
  $("#results").prepend(card);
  if (!file.name.toLowerCase().endsWith(".npy")) {
    const img = $(".original img", card);
    img.src = URL.createObjectURL(file);
    img.onload = () => URL.revokeObjectURL(img.src);
  }
  const limit = state.model ? state.model.max_upload_bytes : Infinity;
  if (file.size > limit) {
    showError(card, `${file.name}: larger than the server's limit of ${limit} bytes`);
    return;
  }
  const form = new FormData();
  form.append("file", file, file.name);
  const mode = encodeURIComponent($("#preprocess").value);
  try {
    const response = await fetch(`api/explain?preprocess=${mode}`, { method: "POST", body: form });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    showResult(card, answer);
  } catch (err) {
    showError(card, String(err.message || err));
  }
}

function uploadAll(files) {
  for (const file of files) upload(file);
}

async function start() {
  const zone = $("#drop-zone");
  const input = $("#file-input");
  input.addEventListener("change", () => { uploadAll(input.files); input.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    uploadAll(e.dataTransfer.files);
  });
  $("#clear").addEventListener("click", () => $("#results").replaceChildren());
  $("#show-mistakes").addEventListener("click", showMistakes);
  try {
    const response = await fetch("api/model");
    showModel(await response.json());
    document.body.dataset.ready = "true";
  } catch (err) {
    $("#model-summary").textContent = `cannot reach the server: ${err.message || err}`;
  }
}

start();
