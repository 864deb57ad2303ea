// segkit web page: upload an image, draw it with its predicted mask, toggle classes.
// The server returns the mask as a palette PNG (pixel value = class index); the page
// decodes it to class indices once and colours it itself, so toggling a class or
// changing the opacity never goes back to the server.
// A server started with an API key answers 401: the page then asks for the key once and
// keeps it in sessionStorage (this tab only, gone when it closes).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "segkit-api-key";

const state = {
  classes: [],        // class names from /info
  palette: [],        // [r, g, b] per class
  visible: [],        // bool per class
  indices: null,      // Uint8Array of class indices, width * height
  width: 0,
  height: 0,
  downloadUrl: null,
  maxBytes: Infinity, // the server's upload limit, checked here to skip a doomed upload
  ready: null,        // promise of /info, awaited before the first mask is decoded
  markReady: null,    // resolves `ready`
};

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function askForKey(message, isError = false) {
  const form = $("key-form");
  form.hidden = false;
  $("key-message").textContent = message;
  $("key-message").classList.toggle("error", isError);
  $("api-key").value = "";
  $("api-key").focus();
}

function useKey(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("key-form").hidden = true;
  loadInfo();
}

function showStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function errorText(detail, status) {
  if (Array.isArray(detail)) return detail.map((item) => item.msg || JSON.stringify(item)).join("; ");
  return detail ? String(detail) : `request failed (HTTP ${status})`;
}

function formatBytes(bytes) {
  return bytes >= 1024 * 1024 ? `${(bytes / (1024 * 1024)).toFixed(0)} MB` : `${(bytes / 1024).toFixed(0)} KB`;
}

async function loadInfo() {
  try {
    const response = await fetch("/info", { headers: authHeaders() });
    if (response.status === 401) {
      const refused = sessionStorage.getItem(KEY_STORAGE) !== null;
      sessionStorage.removeItem(KEY_STORAGE);
      askForKey(refused ? "The server refused this key; try again." : "Kept in this browser tab until you close it.", refused);
      return;
    }
    const info = await response.json();
    if (!response.ok) throw new Error(errorText(info.detail, response.status));
    state.classes = info.classes;
    state.maxBytes = info.max_upload_bytes;
    state.palette = info.palette;
    state.visible = info.classes.map((_, index) => index !== info.background);  // only a class named background starts hidden
    const size = info.input_size ? ` · input ${info.input_size.join("×")}` : "";
    $("model-info").textContent = `${info.model} · ${info.classes.length} classes${size} · ${info.device} · segkit ${info.segkit_version}`;
    $("drop-hint").textContent = `PNG, JPEG, WebP, BMP, TIFF · up to ${formatBytes(info.max_upload_bytes)} · you can also paste`;
    buildLegend();
    state.markReady();
  } catch (error) {
    showStatus(`cannot reach the server: ${error.message}`, true);
  }
}

function buildLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  state.classes.forEach((name, index) => {
    const [r, g, b] = state.palette[index];
    const item = document.createElement("li");
    item.dataset.index = String(index);
    const label = document.createElement("label");
    const checkbox = document.createElement("input");
    checkbox.type = "checkbox";
    checkbox.checked = state.visible[index];
    checkbox.dataset.index = String(index);
    checkbox.setAttribute("aria-label", `show ${name}`);
    checkbox.addEventListener("change", () => {
      state.visible[index] = checkbox.checked;
      drawMask();
    });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${r}, ${g}, ${b})`;
    const title = document.createElement("span");
    title.className = "class-name";
    title.textContent = name;
    const share = document.createElement("span");
    share.className = "share";
    share.textContent = "–";
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.background = `rgb(${r}, ${g}, ${b})`;
    bar.append(fill);
    label.append(checkbox, swatch, title, share, bar);
    item.append(label);
    legend.append(item);
  });
}

function updateLegend(classes) {
  for (const entry of classes) {
    const item = $("legend").querySelector(`li[data-index="${entry.index}"]`);
    if (!item) continue;
    item.querySelector(".share").textContent = `${(entry.share * 100).toFixed(1)}%`;
    item.querySelector(".bar > span").style.width = `${(entry.share * 100).toFixed(2)}%`;
    item.title = `${entry.pixels.toLocaleString()} pixels`;
    item.classList.toggle("absent", entry.pixels === 0);
  }
}

function setVisibleAll(visible) {
  state.visible = state.visible.map(() => visible);
  $("legend").querySelectorAll("input[type=checkbox]").forEach((box) => { box.checked = visible; });
  drawMask();
}

function base64ToBlob(text, type) {
  const bytes = Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
  return new Blob([bytes], { type });
}

// Palette PNG -> class indices: the browser decodes it to RGB, which the palette maps back
// (no colour conversion, so the colours are exact; unknown colours become 255 = ignore).
async function decodeIndices(blob) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const lookup = new Map();
  state.palette.forEach(([r, g, b], index) => {
    const key = (r << 16) | (g << 8) | b;
    if (!lookup.has(key)) lookup.set(key, index);
  });
  const indices = new Uint8Array(bitmap.width * bitmap.height);
  for (let pixel = 0, offset = 0; pixel < indices.length; pixel += 1, offset += 4) {
    const key = (rgba[offset] << 16) | (rgba[offset + 1] << 8) | rgba[offset + 2];
    const index = lookup.get(key);
    indices[pixel] = index === undefined ? 255 : index;
  }
  return { indices, width: bitmap.width, height: bitmap.height };
}

function drawImage(bitmap) {
  const canvas = $("image-canvas");
  canvas.width = state.width;
  canvas.height = state.height;
  const context = canvas.getContext("2d");
  if (bitmap) {
    context.drawImage(bitmap, 0, 0, state.width, state.height);
  } else {
    context.fillStyle = "#808080";
    context.fillRect(0, 0, state.width, state.height);
  }
}

function drawMask() {
  if (!state.indices) return;
  const canvas = $("mask-canvas");
  canvas.width = state.width;
  canvas.height = state.height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(state.width, state.height);
  const pixels = image.data;
  const { indices, palette, visible } = state;
  for (let pixel = 0, offset = 0; pixel < indices.length; pixel += 1, offset += 4) {
    const index = indices[pixel];
    if (!visible[index]) continue;  // stays transparent
    const [r, g, b] = palette[index];
    pixels[offset] = r;
    pixels[offset + 1] = g;
    pixels[offset + 2] = b;
    pixels[offset + 3] = 255;
  }
  context.putImageData(image, 0, 0);
  canvas.dataset.ready = "true";
}

function applyOpacity() {
  const value = Number($("opacity").value);
  $("opacity-value").textContent = `${value}%`;
  $("mask-canvas").style.opacity = String(value / 100);
}

function setBusy(busy) {
  $("busy").hidden = !busy;
  $("file-input").disabled = busy;
}

async function segment(file) {
  if (!file) return;
  await state.ready;
  if (file.size > state.maxBytes) {
    showStatus(`${file.name} is ${formatBytes(file.size)}; the server accepts up to ${formatBytes(state.maxBytes)}`, true);
    return;
  }
  setBusy(true);
  $("stage").hidden = false;
  $("mask-canvas").dataset.ready = "false";
  showStatus(`Segmenting ${file.name || "image"}…`);
  const form = new FormData();
  form.append("file", file, file.name || "image");
  const started = performance.now();
  try {
    const [bitmap, response] = await Promise.all([
      createImageBitmap(file).catch(() => null),  // formats the browser cannot show (TIFF) still get a mask
      fetch("/predict?format=json", { method: "POST", body: form, headers: authHeaders() }),
    ]);
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      askForKey("The server refused the key; enter it again, then the image again.", true);
    }
    if (!response.ok) throw new Error(errorText(body.detail, response.status));
    const maskBlob = base64ToBlob(body.mask_png_base64, "image/png");
    const decoded = await decodeIndices(maskBlob);
    Object.assign(state, decoded);
    drawImage(bitmap);
    drawMask();
    updateLegend(body.classes);
    if (state.downloadUrl) URL.revokeObjectURL(state.downloadUrl);
    state.downloadUrl = URL.createObjectURL(maskBlob);
    const download = $("download");
    download.href = state.downloadUrl;
    download.download = `${(file.name || "image").replace(/\.[^.]+$/, "")}_mask.png`;
    download.classList.remove("disabled");
    download.setAttribute("aria-disabled", "false");
    $("viewer").classList.add("has-result");
    const timing = /inference;dur=([\d.]+)/.exec(response.headers.get("Server-Timing") || "");
    const model = timing ? `, model ${Number(timing[1]).toFixed(0)} ms` : "";
    const note = bitmap ? "" : " (this browser cannot display the image format; mask on grey)";
    showStatus(`${body.width}×${body.height} px · ${(performance.now() - started).toFixed(0)} ms${model}${note}`);
  } catch (error) {
    showStatus(error.message, true);
    if (!state.indices) $("stage").hidden = true;
  } finally {
    setBusy(false);
  }
}

function setUpDropping() {
  const viewer = $("viewer");
  let depth = 0;  // dragenter/leave fire for every child element
  viewer.addEventListener("dragenter", (event) => { event.preventDefault(); depth += 1; viewer.classList.add("dragging"); });
  viewer.addEventListener("dragover", (event) => event.preventDefault());
  viewer.addEventListener("dragleave", () => { depth -= 1; if (depth <= 0) viewer.classList.remove("dragging"); });
  viewer.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    viewer.classList.remove("dragging");
    segment(event.dataTransfer.files[0]);
  });
  window.addEventListener("paste", (event) => {
    const file = [...event.clipboardData.files].find((item) => item.type.startsWith("image/"));
    if (file) segment(file);
  });
}

function init() {
  $("file-input").addEventListener("change", (event) => {
    segment(event.target.files[0]);
    event.target.value = "";  // choosing the same file again still triggers a change
  });
  $("opacity").addEventListener("input", applyOpacity);
  $("show-all").addEventListener("click", () => setVisibleAll(true));
  $("show-none").addEventListener("click", () => setVisibleAll(false));
  $("choose").addEventListener("click", () => $("file-input").click());
  $("key-form").addEventListener("submit", useKey);
  setUpDropping();
  applyOpacity();
  state.ready = new Promise((resolve) => { state.markReady = resolve; });
  loadInfo();
}

init();
