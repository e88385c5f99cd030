// Fish species page: pick or drop a photo, POST it to /predict (same origin), show the top three.
"use strict";

(() => {
  const MAX_UPLOAD_BYTES = 10 * 1024 * 1024; // the service's default FISH_MAX_UPLOAD_BYTES; it re-checks

  const FRIENDLY = {
    not_an_image: "That file is not an image the service can read. Try a JPEG or PNG photo.",
    corrupt: "The image seems damaged or cut off. Try another copy of the photo.",
    too_many_pixels: "The image has too many pixels. Try a smaller photo.",
    too_large: "The file is too large. Try a photo under 10 MB.",
    empty: "The file is empty.",
    bad_dimensions: "The image has no pixels.",
    model_not_loaded: "The model is not ready yet. Try again in a moment.",
    model_unavailable: "The model is busy or restarting. Try again in a moment.",
    unsupported_media_type: "The upload was not sent as a file.",
    network: "Could not reach the service. Check the connection and try again.",
  };

  const $ = (id) => document.getElementById(id);
  const form = $("upload-form");
  const input = $("file-input");
  const dropZone = $("drop-zone");
  const preview = $("preview");
  const submit = $("submit-button");
  const spinner = $("spinner");
  let chosen = null;
  let previewUrl = null;

  function show(el, visible) {
    el.classList.toggle("d-none", !visible);
  }

  function setModelBadge(name, version) {
    $("model-badge").textContent = version ? `model: ${name} v${version}` : "model: not loaded";
  }

  function showError(reason, detail) {
    $("error-message").textContent = FRIENDLY[reason] || "The photo could not be classified.";
    $("error-detail").textContent = detail ? `Details: ${detail}` : "";
    show($("error"), true);
    show($("results"), false);
    show($("result-meta"), false);
    show($("placeholder"), false);
  }

  function clearStatus() {
    show($("error"), false);
    show($("results"), false);
    show($("result-meta"), false);
  }

  function showResults(data) {
    const list = $("results");
    list.replaceChildren();
    const template = $("result-template");
    for (const { species, confidence } of data.top3) {
      const item = template.content.firstElementChild.cloneNode(true);
      const percent = Math.round(confidence * 1000) / 10;
      item.querySelector(".species").textContent = species.replaceAll("_", " ");
      item.querySelector(".confidence").textContent = `${percent.toFixed(1)} %`;
      const bar = item.querySelector(".progress");
      bar.setAttribute("aria-valuenow", String(percent));
      bar.setAttribute("aria-label", `${species}: ${percent.toFixed(1)} percent`);
      item.querySelector(".progress-bar").style.width = `${percent}%`;
      list.append(item);
    }
    const cached = data.cached ? " · cached" : "";
    $("result-meta").textContent =
      `Model ${data.model_name} v${data.model_version} · ${data.latency_ms.toFixed(1)} ms${cached}`;
    setModelBadge(data.model_name, data.model_version);
    show($("error"), false);
    show($("placeholder"), false);
    show(list, true);
    show($("result-meta"), true);
  }

  function choose(file) {
    chosen = file || null;
    clearStatus();
    show($("placeholder"), !chosen);
    $("file-name").textContent = chosen ? `${chosen.name} (${Math.ceil(chosen.size / 1024)} kB)` : "";
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    show(preview, false);
    if (chosen && chosen.type.startsWith("image/")) {
      previewUrl = URL.createObjectURL(chosen);
      preview.src = previewUrl;
      show(preview, true);
    }
    show($("drop-hint"), !previewUrl);
    submit.disabled = !chosen;
    if (chosen) classify();
  }

  async function classify() {
    if (!chosen) return;
    if (chosen.size > MAX_UPLOAD_BYTES) {
      showError("too_large", `${chosen.name} has ${chosen.size.toLocaleString()} bytes`);
      return;
    }
    const body = new FormData();
    body.append("file", chosen, chosen.name || "upload");
    submit.disabled = true;
    show(spinner, true);
    try {
      const response = await fetch("predict", { method: "POST", body });
      let data = null;
      try {
        data = await response.json();
      } catch {
        data = null;
      }
      if (response.ok && data && Array.isArray(data.top3)) {
        showResults(data);
      } else {
        const reason = (data && data.reason) || (response.status === 413 ? "too_large" : "");
        showError(reason, (data && data.error) || `HTTP ${response.status}`);
      }
    } catch (err) {
      showError("network", String(err));
    } finally {
      submit.disabled = !chosen;
      show(spinner, false);
    }
  }

  async function loadModel() {
    try {
      const response = await fetch("model");
      const info = await response.json();
      setModelBadge(info.model_name, info.loaded ? info.model_version : null);
    } catch {
      setModelBadge(null, null);
    }
  }

  input.addEventListener("change", () => choose(input.files[0]));
  $("choose-button").addEventListener("click", () => input.click());
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    classify();
  });
  preview.addEventListener("error", () => show(preview, false));

  for (const name of ["dragenter", "dragover"]) {
    dropZone.addEventListener(name, (event) => {
      event.preventDefault();
      dropZone.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    dropZone.addEventListener(name, (event) => {
      event.preventDefault();
      dropZone.classList.remove("dragging");
    });
  }
  dropZone.addEventListener("drop", (event) => {
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) choose(file);
  });

  loadModel();
})();
