// The sertune page: pick a served model, send a file or a microphone recording to POST /predict, and draw
// the answer (class bars, dimensions, a timeline for long audio). Plain JS, no build step, nothing fetched
// from elsewhere: it has to work offline, straight from the package.
"use strict";

// Tableau 10: distinct for up to ten labels and readable for the common kinds of colour blindness.
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
  "#9c755f", "#bab0ac"];
const SVG_NS = "http://www.w3.org/2000/svg";
const TIMELINE_WIDTH = 1000; // the SVG's viewBox width; it is stretched to the page's width
const TIMELINE_HEIGHT = 60;
// The rate recordings are sent at: the encoders' own, so the upload is small and the server need not resample.
const RECORD_RATE = 16000;

const $ = (id) => document.getElementById(id);
const state = {
  models: [],
  audio: null, // the last file or recording (a File), sent again when the model changes
  request: 0, // numbers requests, so that a slow answer never overwrites a newer one
  recorder: null,
  segmentSupported: false,
};

// -- small helpers --------------------------------------------------------------------------------------
function setState(name) {
  document.body.dataset.state = name;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  $("status").textContent = "";
  setState("error");
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

function percent(p) {
  return `${(100 * p).toFixed(1)}%`;
}

function seconds(t) {
  if (t < 60) return `${+t.toFixed(1)} s`;
  const whole = Math.round(t); // rounded before splitting, so 119.7 s reads 2:00, not 1:60
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}

function currentModel() {
  return state.models.find((model) => model.name === $("model").value) || null;
}

function colourOf(model, label) {
  const index = model.labels.indexOf(label);
  return index < 0 ? "#777" : PALETTE[index % PALETTE.length];
}

// The API's errors are {"detail": "..."}; FastAPI's own validation errors carry a list of {loc, msg}.
async function errorMessage(response) {
  let detail = null;
  try {
    detail = (await response.json()).detail;
  } catch {
    // not JSON (a proxy's error page, say): fall back to the status line
  }
  if (Array.isArray(detail)) detail = detail.map((item) => `${(item.loc || []).slice(1).join(".")}: ${item.msg}`).join("; ");
  return `${response.status} ${response.statusText}${detail ? `: ${detail}` : ""}`;
}

// -- models ---------------------------------------------------------------------------------------------
async function loadModels() {
  let response;
  try {
    response = await fetch("/models");
  } catch {
    showError("The server cannot be reached.");
    return;
  }
  if (!response.ok) {
    showError(`GET /models failed: ${await errorMessage(response)}`);
    return;
  }
  state.models = await response.json();
  const select = $("model");
  select.replaceChildren(...state.models.map((model) => element("option", { value: model.name }, model.name)));
  select.disabled = state.models.length === 0;
  describeModel();
}

// The VAD timeline is newer than some servers: offer it only where the schema says /predict takes `segment`.
async function detectSegmentation() {
  try {
    const schema = await (await fetch("/openapi.json")).json();
    const parameters = schema.paths["/predict"].post.parameters || [];
    state.segmentSupported = parameters.some((parameter) => parameter.name === "segment");
  } catch {
    state.segmentSupported = false;
  }
  $("segment-field").hidden = !state.segmentSupported;
}

function describeModel() {
  const model = currentModel();
  if (!model) return;
  const parts = [`${model.backbone}, ${model.method}`];
  if (model.labels.length) parts.push(`${model.labels.length} classes`);
  if (model.dimensions && model.dimensions.length) parts.push(model.dimensions.map((d) => d.name).join(", "));
  $("model-info").textContent = parts.join(" · ");
}

// -- predicting -----------------------------------------------------------------------------------------
async function predict(audio) {
  const model = currentModel();
  if (!model || !audio) return;
  state.audio = audio;
  $("predict").disabled = false;
  const number = ++state.request;
  clearError();
  setState("busy");
  $("status").textContent = `Predicting ${audio.name}…`;
  const query = new URLSearchParams({ model: model.name });
  if (state.segmentSupported && $("segment").checked) query.set("segment", "vad");
  const form = new FormData();
  form.append("file", audio, audio.name);
  let response;
  try {
    response = await fetch(`/predict?${query}`, { method: "POST", body: form });
  } catch {
    if (number === state.request) showError("The server cannot be reached.");
    return;
  }
  if (number !== state.request) return;
  if (!response.ok) {
    showError(await errorMessage(response));
    return;
  }
  const result = await response.json();
  if (number !== state.request) return;
  render(result, model, audio.name);
  $("status").textContent = "";
  setState("done");
}

// -- drawing the answer ---------------------------------------------------------------------------------
// A timeline answer (segment=vad) has no answer for the whole recording: its segments' probabilities and
// dimensions averaged by duration stand in for one, and "no speech" for a recording without speech.
function withOverall(result, model) {
  if (!Array.isArray(result.segments) || result.probabilities) return result;
  const total = result.segments.reduce((sum, s) => sum + (s.end - s.start), 0);
  const mean = (pick) => {
    const keys = Object.keys(pick(result.segments[0] || {}) || {});
    return Object.fromEntries(keys.map((key) => [
      key, result.segments.reduce((sum, s) => sum + pick(s)[key] * (s.end - s.start), 0) / total,
    ]));
  };
  if (!result.segments.length) return { ...result, label: result.message, probabilities: {} };
  const probabilities = mean((s) => s.probabilities);
  const ranked = model.labels.filter((label) => label in probabilities);
  const label = ranked.reduce((best, l) => (best === null || probabilities[l] > probabilities[best] ? l : best), null);
  const dimensions = result.segments[0].dimensions ? mean((s) => s.dimensions) : null;
  const normalized = result.segments[0].dimensions_normalized ? mean((s) => s.dimensions_normalized) : null;
  return { ...result, label, probabilities, dimensions, dimensions_normalized: normalized, silent: false };
}

function render(answer, model, name) {
  const result = withOverall(answer, model);
  $("result").hidden = false;
  $("result").dataset.duration = result.duration;
  $("top-label").textContent = result.label ?? "";
  const facts = [name, seconds(result.duration)];
  const parts = timelineParts(result);
  if (parts) facts.push(`${parts.items.length} ${parts.kind}`);
  if (result.silent) facts.push("silence: the answer says little");
  $("summary").textContent = facts.join(" · ");
  renderBars(result, model);
  renderDimensions(result, model);
  renderTimeline(result, model, parts);
}

function meter(className, attributes, name, fraction, valueText) {
  const row = element("div", { class: className, ...attributes });
  row.append(element("span", { class: "name" }, name));
  const track = element("div", { class: "track" });
  const fill = element("div", { class: "fill" });
  fill.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
  track.append(fill);
  row.append(track, element("span", { class: "value" }, valueText));
  return row;
}

function renderBars(result, model) {
  const probabilities = result.probabilities || {};
  // The model's label order, not sorted by probability: bars keep their place from one clip to the next.
  const labels = model.labels.filter((label) => label in probabilities);
  $("probabilities").hidden = labels.length === 0;
  $("bars").replaceChildren(
    ...labels.map((label) => {
      const p = probabilities[label];
      const row = meter("bar", { "data-label": label, "data-probability": String(p) }, label, p, percent(p));
      row.setAttribute("aria-label", `${label}: ${percent(p)}`);
      // The timeline's colours, so that the bars double as its legend.
      row.querySelector(".fill").style.background = colourOf(model, label);
      if (label === result.label) row.classList.add("top");
      return row;
    }),
  );
}

function renderDimensions(result, model) {
  const dimensions = (model.dimensions || []).filter((d) => result.dimensions && d.name in result.dimensions);
  $("dimensions-box").hidden = dimensions.length === 0;
  $("dimensions").replaceChildren(
    ...dimensions.map((d) => {
      const value = result.dimensions[d.name];
      const normalized = result.dimensions_normalized?.[d.name] ?? (value - d.low) / (d.high - d.low);
      const text = `${value.toFixed(2)} on ${+d.low}–${+d.high}`;
      const attributes = { "data-name": d.name, "data-value": String(value), "data-normalized": String(normalized) };
      return meter("bar dimension", attributes, d.name, normalized, text);
    }),
  );
}

// VAD segments when the server sent them, else the windows of a long clip; null for a clip taken whole.
function timelineParts(result) {
  if (Array.isArray(result.segments) && result.segments.length) return { kind: "segments", items: result.segments };
  if (Array.isArray(result.windows) && result.windows.length) return { kind: "windows", items: result.windows };
  return null;
}

// Windows overlap (hop = half a window), so each is drawn from midway after its predecessor's centre to midway
// before its successor's: every instant goes to the window centred nearest it, the one that heard the most
// around it. Segments do not overlap and are drawn as they are; gaps between them are silence.
function bands(parts) {
  const items = parts.items;
  if (parts.kind === "segments") return items.map((item) => ({ item, from: item.start, to: item.end }));
  const centres = items.map((item) => (item.start + item.end) / 2);
  return items.map((item, i) => ({
    item,
    from: i === 0 ? item.start : (centres[i - 1] + centres[i]) / 2,
    to: i === items.length - 1 ? item.end : (centres[i] + centres[i + 1]) / 2,
  }));
}

function bandColour(model, item) {
  if (item.label != null) return colourOf(model, item.label);
  // A model without classes: shade by its first dimension, light (low) to dark green (high).
  const first = model.dimensions?.[0]?.name;
  const value = item.dimensions_normalized?.[first] ?? 0.5;
  return `hsl(150, 45%, ${Math.round(85 - 55 * Math.max(0, Math.min(1, value)))}%)`;
}

function bandTitle(model, band) {
  const item = band.item;
  const span = `${item.start.toFixed(2)}–${item.end.toFixed(2)} s`;
  if (item.label != null) return `${span}: ${item.label} ${percent(item.probabilities[item.label])}`;
  const values = Object.entries(item.dimensions || {}).map(([name, value]) => `${name} ${value.toFixed(2)}`);
  return `${span}: ${values.join(", ")}`;
}

function renderTimeline(result, model, parts) {
  const svg = $("timeline");
  $("timeline-box").hidden = !parts;
  if (!parts) {
    svg.replaceChildren();
    return;
  }
  const total = Math.max(result.duration, ...parts.items.map((item) => item.end)) || 1;
  const x = (t) => (t / total) * TIMELINE_WIDTH;
  svg.setAttribute("viewBox", `0 0 ${TIMELINE_WIDTH} ${TIMELINE_HEIGHT}`);
  svg.dataset.kind = parts.kind;
  svg.replaceChildren(
    ...bands(parts).map((band) => {
      const rect = document.createElementNS(SVG_NS, "rect");
      rect.setAttribute("class", "band");
      rect.setAttribute("x", x(band.from));
      rect.setAttribute("width", Math.max(0.5, x(band.to) - x(band.from)));
      rect.setAttribute("y", 0);
      rect.setAttribute("height", TIMELINE_HEIGHT);
      rect.setAttribute("fill", bandColour(model, band.item));
      rect.dataset.label = band.item.label ?? "";
      rect.dataset.start = band.item.start;
      rect.dataset.end = band.item.end;
      const title = document.createElementNS(SVG_NS, "title");
      title.textContent = bandTitle(model, band);
      rect.append(title);
      return rect;
    }),
  );
  $("timeline-kind").textContent = parts.kind === "segments" ? "(speech segments)" : "(windows)";
  renderAxis(total);
  renderLegend(model, parts);
}

function renderAxis(total) {
  const steps = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800];
  const step = steps.find((s) => total / s <= 8) || 3600;
  const ticks = [];
  for (let t = 0; t <= total + 1e-9; t += step) ticks.push(t);
  $("axis").replaceChildren(
    ...ticks.map((t) => {
      const tick = element("span", {}, seconds(t));
      tick.style.left = `${(t / total) * 100}%`;
      return tick;
    }),
  );
}

function renderLegend(model, parts) {
  const legend = $("legend");
  if (!model.labels.length) {
    const first = model.dimensions?.[0]?.name ?? "";
    legend.replaceChildren(element("li", {}, `darker: higher ${first}`));
    return;
  }
  const shown = new Set(parts.items.map((item) => item.label));
  legend.replaceChildren(
    ...model.labels
      .filter((label) => shown.has(label))
      .map((label) => {
        const entry = element("li", { "data-label": label });
        const swatch = element("span", { class: "swatch", "aria-hidden": "true" });
        swatch.style.background = colourOf(model, label);
        entry.append(swatch, document.createTextNode(label));
        return entry;
      }),
  );
}

// -- the microphone -------------------------------------------------------------------------------------
// MediaRecorder gives WebM/Opus (Chrome) or Ogg/Opus (Firefox); the server reads WAV, FLAC and Ogg but not
// WebM, so the recording is decoded here and sent as 16-bit PCM WAV, which every server build reads.
async function startRecording() {
  clearError();
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    showError(`The microphone is not available: ${error.message || error.name}`);
    return;
  }
  const recorder = new MediaRecorder(stream);
  const chunks = [];
  recorder.ondataavailable = (event) => {
    if (event.data.size) chunks.push(event.data);
  };
  recorder.onstop = async () => {
    stream.getTracks().forEach((track) => track.stop());
    $("record").classList.remove("recording");
    $("record").disabled = false;
    $("stop").disabled = true;
    state.recorder = null;
    try {
      const wav = await toWav(new Blob(chunks, { type: recorder.mimeType }));
      await predict(new File([wav], "recording.wav", { type: "audio/wav" }));
    } catch (error) {
      showError(`The recording could not be read: ${error.message || error}`);
    }
  };
  recorder.start();
  state.recorder = recorder;
  $("record").classList.add("recording");
  $("record").disabled = true;
  $("stop").disabled = false;
  $("status").textContent = "Recording…";
  setState("recording");
}

function stopRecording() {
  if (state.recorder && state.recorder.state !== "inactive") state.recorder.stop();
}

async function toWav(blob) {
  // An OfflineAudioContext decodes and resamples to its own rate without opening an audio output.
  const context = new OfflineAudioContext(1, 1, RECORD_RATE);
  const decoded = await context.decodeAudioData(await blob.arrayBuffer());
  const mono = new Float32Array(decoded.length);
  for (let channel = 0; channel < decoded.numberOfChannels; channel++) {
    const samples = decoded.getChannelData(channel);
    for (let i = 0; i < samples.length; i++) mono[i] += samples[i] / decoded.numberOfChannels;
  }
  return encodeWav(mono, decoded.sampleRate);
}

function encodeWav(samples, rate) {
  const buffer = new ArrayBuffer(44 + 2 * samples.length);
  const view = new DataView(buffer);
  const text = (offset, value) => [...value].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + 2 * samples.length, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true); // fmt chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, 2 * rate, true); // bytes per second
  view.setUint16(32, 2, true); // bytes per frame
  view.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  view.setUint32(40, 2 * samples.length, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + 2 * i, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([buffer], { type: "audio/wav" });
}

function setUpMicrophone() {
  // getUserMedia exists only in a secure context: https, or http on localhost / 127.0.0.1.
  const available = window.isSecureContext && navigator.mediaDevices?.getUserMedia && window.MediaRecorder;
  if (!available) {
    $("record").disabled = true;
    $("mic-note").textContent = window.isSecureContext
      ? "this browser cannot record audio"
      : "recording needs https or localhost";
  }
  $("record").addEventListener("click", startRecording);
  $("stop").addEventListener("click", stopRecording);
}

// -- wiring ---------------------------------------------------------------------------------------------
function setUp() {
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) predict(file);
  });
  $("model").addEventListener("change", () => {
    describeModel();
    if (state.audio) predict(state.audio);
  });
  $("segment").addEventListener("change", () => {
    if (state.audio) predict(state.audio);
  });
  $("predict").addEventListener("click", () => predict(state.audio));
  setUpMicrophone();
  // "ready" once the models and the schema are in, unless loading failed (the error stays on show).
  Promise.all([detectSegmentation(), loadModels()]).then(() => {
    if (document.body.dataset.state === "loading") setState("ready");
  });
}

setUp();
