// Sensorium's page: search the index with words, a dropped image or audio file, or a result (click it);
// chat with the language decoder (attach an image) when the server has one. Plain JS, served by the server itself.
"use strict";
const $ = (id) => document.getElementById(id);
let apiKey = localStorage.getItem("sensorium-key") || "";
let chatHistory = [];
let attachedImage = null;

function headers(json = true) {
  const h = json ? { "Content-Type": "application/json" } : {};
  if (apiKey) h["Authorization"] = "Bearer " + apiKey;
  return h;
}

async function api(path, body) {
  const res = await fetch(path, body === undefined ? { headers: headers(false) }
    : { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (res.status === 401) {
    $("keybox").hidden = false;
    $("apikey").focus();
    throw new Error("this server needs an API key: enter it at the top right");
  }
  if (!res.ok) {
    let message = res.statusText;
    try { message = (await res.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return res;
}

// media behind the API key: fetch with the header, show as blob URLs
async function mediaURL(path) {
  if (!apiKey) return path;
  const res = await api(path);
  return URL.createObjectURL(await res.blob());
}

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function start() {
  try {
    const health = await (await fetch("/health")).json();
    const parts = [`models: ${health.models.join(", ")}`];
    if (health.search) parts.push(`${health.index} items (${Object.entries(health.index_modalities).map(([m, n]) => `${n} ${m}`).join(", ")})`);
    $("status").textContent = parts.join(" · ");
    for (const m of Object.keys(health.index_modalities || {})) {
      const opt = document.createElement("option");
      opt.value = m; opt.textContent = m;
      $("modality").appendChild(opt);
    }
    if (!health.search) $("search-pane").hidden = true;
    if (health.chat) $("chat-pane").hidden = false;
  } catch (e) {
    $("status").textContent = "server not reachable: " + e.message;
  }
}

function showQuery(label, image) {
  const box = $("query-shown");
  box.replaceChildren();
  if (image) { const img = document.createElement("img"); img.src = image; box.appendChild(img); }
  const span = document.createElement("span");
  span.textContent = label;
  box.appendChild(span);
}

async function runSearch(query) {
  const results = $("results");
  results.setAttribute("aria-busy", "true");
  try {
    const body = { query, k: 24 };
    if ($("modality").value) body.modality = $("modality").value;
    const data = await (await api("/v1/search", body)).json();
    await render(data.data, data.took_ms);
  } catch (e) {
    results.replaceChildren();
    const p = document.createElement("p");
    p.className = "error"; p.textContent = e.message;
    results.appendChild(p);
  } finally {
    results.removeAttribute("aria-busy");
  }
}

async function render(hits, took) {
  const results = $("results");
  if (!hits.length) { results.replaceChildren(); results.textContent = "no results"; return; }
  const grid = document.createDocumentFragment();  // built whole, then swapped in at once
  for (const hit of hits) {
    const card = document.createElement("div");
    card.className = "card result";
    card.dataset.id = hit.id;
    card.dataset.modality = hit.modality;
    card.title = "search with this " + hit.modality;
    const media = document.createElement("div");
    media.className = "media";
    if (hit.thumbnail_url) {
      const img = document.createElement("img");
      img.alt = hit.title || "";
      img.src = await mediaURL(hit.thumbnail_url);
      media.appendChild(img);
    } else if (hit.modality === "audio") {
      const audio = document.createElement("audio");
      audio.controls = true; audio.preload = "none";
      audio.src = await mediaURL(hit.content_url);
      audio.addEventListener("click", (ev) => ev.stopPropagation());
      media.appendChild(audio);
    } else {
      const p = document.createElement("p");
      p.textContent = hit.text || hit.title || `${hit.modality} #${hit.id}`;
      media.appendChild(p);
    }
    const meta = document.createElement("div");
    meta.className = "meta";
    const title = document.createElement("span");
    title.className = "title"; title.textContent = `${hit.modality} · ${hit.title || ""}`;
    const score = document.createElement("span");
    score.className = "score"; score.textContent = hit.score.toFixed(3);
    meta.append(title, score);
    card.append(media, meta);
    card.addEventListener("click", () => {
      showQuery(`similar to ${hit.modality} #${hit.id}: ${hit.title || ""}`, hit.thumbnail_url ? card.querySelector("img").src : null);
      runSearch({ id: hit.id });
    });
    grid.appendChild(card);
  }
  results.replaceChildren(grid);
  results.dataset.took = took;
}

async function searchFile(file) {
  const kind = file.type.startsWith("audio") ? "audio" : "image";
  const url = await readAsDataURL(file);
  showQuery(`${kind}: ${file.name}`, kind === "image" ? url : null);
  await runSearch({ [kind]: url });
}

$("search-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("query").value.trim();
  if (!text) return;
  showQuery(`“${text}”`);
  runSearch(text);
});
$("file").addEventListener("change", () => { if ($("file").files[0]) searchFile($("file").files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  const file = ev.dataTransfer.files[0];
  if (file) searchFile(file);
});
$("apikey").addEventListener("change", () => {
  apiKey = $("apikey").value.trim();
  localStorage.setItem("sensorium-key", apiKey);
  start();
});

// chat --------------------------------------------------------------------------------------------------------
function addMessage(role, text, image) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  if (image) { const img = document.createElement("img"); img.src = image; div.appendChild(img); }
  const span = document.createElement("span");
  span.textContent = text;
  div.appendChild(span);
  $("messages").appendChild(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return span;
}

$("chat-file").addEventListener("change", async () => {
  const file = $("chat-file").files[0];
  if (!file) return;
  attachedImage = await readAsDataURL(file);
  $("attached").replaceChildren(Object.assign(document.createElement("img"), { src: attachedImage }));
});

$("chat-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text && !attachedImage) return;
  const content = [];
  if (attachedImage) content.push({ type: "image_url", image_url: { url: attachedImage } });
  content.push({ type: "text", text: attachedImage ? "\n" + text : text });  // "<image>\nquestion", as decoders are trained
  addMessage("user", text, attachedImage);
  chatHistory.push({ role: "user", content });
  $("chat-input").value = ""; attachedImage = null; $("attached").replaceChildren();
  const out = addMessage("assistant", "");
  try {
    const res = await api("/v1/chat/completions", { model: "default", messages: chatHistory, stream: true, max_tokens: 64 });
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", answer = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const delta = JSON.parse(line.slice(6)).choices[0]?.delta?.content || "";
        answer += delta;
        out.textContent = answer;
      }
    }
    chatHistory.push({ role: "assistant", content: answer });
  } catch (e) {
    out.textContent = e.message;
    out.className = "error";
    chatHistory.pop();
  }
});

start();
