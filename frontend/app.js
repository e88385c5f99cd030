// Fish species page: pick or drop photos, POST them to /predict (one) or /predict_batch (several),
// show one card per photo with its calibrated top three, a "not sure" state when the service answers
// unknown, and the class activation map from /explain behind an on/off switch. Same origin only.
"use strict";

(() => {
  const MAX_UPLOAD_BYTES = 10 * 1024 * 1024; // the service's default FISH_MAX_UPLOAD_BYTES; it re-checks
  const MAX_BATCH_FILES = 32; // the service's default FISH_MAX_BATCH_FILES; it re-checks

  const FRIENDLY = {
    not_an_image: "That file is not an image the service can read. Try a JPEG or PNG photo.",
    corrupt: "The image seems damaged or cut off. Try another copy of the photo.",
    too_many_pixels: "The image has too many pixels. Try a smaller photo.",
    too_large: "The file is too large. Try a photo under 10 MB.",
    too_many_files: `Too many photos at once. Send at most ${MAX_BATCH_FILES}.`,
    empty: "The file is empty.",
    bad_dimensions: "The image has no pixels.",
    model_not_loaded: "The model is not ready yet. Try again in a moment.",
    model_unavailable: "The model is busy or restarting. Try again in a moment.",
    explain_unavailable: "This model version cannot show where it looked.",
    unknown_species: "The model does not know that species.",
    unsupported_media_type: "The upload was not sent as a file.",
    network: "Could not reach the service. Check the connection and try again.",
    unknown_request: "The service no longer has this answer on record; classify the photo again.",
    feedback_unavailable: "This service does not keep corrections.",
    storage_unavailable: "The correction could not be stored right now. Try again in a moment.",
  };
  const OTHER_ANSWERS = [
    ["unknown", "a species the model does not know"],
    ["not_a_fish", "not a fish"],
  ];
  let modelLabels = [];

  // A random id this browser keeps: the service answers one client from one model version when a
  // challenger takes a share of the traffic (the split is sticky per X-Client-ID).
  const CLIENT_ID = (() => {
    try {
      let id = localStorage.getItem("fish-client-id");
      if (!id) {
        id = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
        localStorage.setItem("fish-client-id", id);
      }
      return id;
    } catch {
      return null; // storage disabled: the service falls back to the address
    }
  })();
  const CLIENT_HEADERS = CLIENT_ID ? { "X-Client-ID": CLIENT_ID } : {};

  const $ = (id) => document.getElementById(id);
  const form = $("upload-form");
  const input = $("file-input");
  const dropZone = $("drop-zone");
  const submit = $("submit-button");
  const spinner = $("spinner");
  const cards = $("cards");
  let chosen = [];
  let urls = [];

  function show(el, visible) {
    el.classList.toggle("d-none", !visible);
  }

  function friendly(reason) {
    return FRIENDLY[reason] || "The photo could not be classified.";
  }

  function setModelBadge(name, version) {
    $("model-badge").textContent = version ? `model: ${name} v${version}` : "model: not loaded";
  }

  function showError(reason, detail) {
    $("error-message").textContent = friendly(reason);
    $("error-detail").textContent = detail ? `Details: ${detail}` : "";
    show($("error"), true);
    show($("result-meta"), false);
    show($("placeholder"), false);
  }

  function percent(confidence) {
    return Math.round(confidence * 1000) / 10;
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }

  function newCard(file, index) {
    const node = $("card-template").content.firstElementChild.cloneNode(true);
    node.dataset.index = String(index);
    node.querySelector(".file-title").textContent = file.name || `photo ${index + 1}`;
    const photo = node.querySelector(".photo");
    photo.alt = `Photo ${file.name || index + 1}`;
    if (file.type.startsWith("image/")) {
      const url = URL.createObjectURL(file);
      urls.push(url);
      photo.src = url;
    } else {
      show(node.querySelector(".photo-frame"), false);
    }
    photo.addEventListener("error", () => show(node.querySelector(".photo-frame"), false));
    cards.append(node);
    return node;
  }

  function cardError(card, reason, detail) {
    show(card.querySelector(".card-spinner"), false);
    card.querySelector(".card-error-message").textContent = friendly(reason);
    card.querySelector(".card-error-detail").textContent = detail ? `Details: ${detail}` : "";
    show(card.querySelector(".card-error"), true);
    show(card.querySelector(".results"), false);
    card.querySelector(".photo-card").classList.add("border-danger");
  }

  function cardAnswer(card, file, item) {
    show(card.querySelector(".card-spinner"), false);
    const list = card.querySelector(".results");
    list.replaceChildren();
    const template = $("result-template");
    for (const { species, confidence } of item.top3) {
      const row = template.content.firstElementChild.cloneNode(true);
      const value = percent(confidence);
      row.querySelector(".species").textContent = species.replaceAll("_", " ");
      row.querySelector(".confidence").textContent = `${value.toFixed(1)} %`;
      const bar = row.querySelector(".progress");
      bar.setAttribute("aria-valuenow", String(value));
      bar.setAttribute("aria-label", `${species}: ${value.toFixed(1)} percent`);
      const fill = row.querySelector(".progress-bar");
      fill.style.width = `${value}%`;
      if (item.unknown) fill.classList.add("bg-warning");
      list.append(row);
    }
    show(list, true);
    show(card.querySelector(".not-sure"), Boolean(item.unknown));
    card.querySelector(".photo-card").classList.toggle("border-warning", Boolean(item.unknown));
    card.dataset.unknown = item.unknown ? "true" : "false";
    if (file.type.startsWith("image/")) wireHeatMap(card, file, item.top3[0].species);
    if (item.request_id) wireFeedback(card, item);
  }

  // "Is this right?": yes confirms the top-1 species, no asks for the right one; POST /feedback.
  function wireFeedback(card, item) {
    const form = card.querySelector(".feedback");
    const select = form.querySelector(".feedback-species");
    const status = form.querySelector(".feedback-status");
    const buttons = form.querySelectorAll("button");
    const top = item.top3[0].species;
    const species = modelLabels.length ? modelLabels : item.top3.map((p) => p.species);
    select.replaceChildren();
    for (const [value, text] of [...species.map((s) => [s, s.replaceAll("_", " ")]), ...OTHER_ANSWERS]) {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = text;
      select.append(option);
    }
    const second = item.top3[1] && item.top3[1].species;
    select.value = item.unknown ? "unknown" : second || species[0];

    async function send(label) {
      for (const button of buttons) button.disabled = true;
      try {
        const response = await fetch("feedback", {
          method: "POST",
          headers: { "Content-Type": "application/json", ...CLIENT_HEADERS },
          body: JSON.stringify({ request_id: item.request_id, species: label }),
        });
        const data = await readJson(response);
        if (!response.ok) {
          throw Object.assign(new Error((data && data.error) || `HTTP ${response.status}`), {
            reason: data && data.reason,
          });
        }
        status.textContent = "Thanks, recorded.";
        status.className = "feedback-status small mb-0 mt-1 text-success";
        show(form.querySelector(".feedback-correct"), false);
      } catch (err) {
        status.textContent = `${friendly(err.reason || "network")} ${err.message || ""}`.trim();
        status.className = "feedback-status small mb-0 mt-1 text-danger";
        for (const button of buttons) button.disabled = false;
      }
    }

    form.querySelector(".feedback-yes").addEventListener("click", () => send(top));
    form.querySelector(".feedback-no").addEventListener("click", () => {
      show(form.querySelector(".feedback-correct"), true);
      select.focus();
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      send(select.value);
    });
    show(form, true);
  }

  function wireHeatMap(card, file, species) {
    const toggle = card.querySelector(".heat-toggle");
    const heat = card.querySelector(".heat");
    const note = card.querySelector(".heat-note");
    const id = `heat-${card.dataset.index}`;
    toggle.id = id;
    card.querySelector(".heat-switch label").htmlFor = id;
    show(card.querySelector(".heat-switch"), true);
    let loaded = false;
    toggle.addEventListener("change", async () => {
      if (!toggle.checked) {
        show(heat, false);
        show(note, false);
        return;
      }
      if (!loaded) {
        toggle.disabled = true;
        try {
          const body = new FormData();
          body.append("file", file, file.name || "upload");
          body.append("species", species);
          const response = await fetch("explain", { method: "POST", body });
          if (!response.ok) {
            const data = await readJson(response);
            throw Object.assign(new Error((data && data.error) || `HTTP ${response.status}`), {
              reason: data && data.reason,
            });
          }
          const url = URL.createObjectURL(await response.blob());
          urls.push(url);
          heat.src = url;
          heat.alt = `Where the model looked for ${species.replaceAll("_", " ")}`;
          loaded = true;
        } catch (err) {
          toggle.checked = false;
          note.textContent = `${friendly(err.reason || "network")} ${err.message || ""}`.trim();
          show(note, true);
          return;
        } finally {
          toggle.disabled = false;
        }
      }
      note.textContent = `Red: where the model saw ${species.replaceAll("_", " ")}.`;
      show(heat, true);
      show(note, true);
    });
  }

  function meta(data, count) {
    const cached = data.cached ? " · cached" : "";
    const photos = count > 1 ? `${count} photos · ` : "";
    $("result-meta").textContent =
      `${photos}Model ${data.model_name} v${data.model_version} · ${data.latency_ms.toFixed(1)} ms${cached}`;
    setModelBadge(data.model_name, data.model_version);
    show($("result-meta"), true);
    const answers = Array.isArray(data.results) ? data.results.filter((item) => item.ok) : [data];
    const calibrated = answers.some((item) => item.unknown_score !== null && item.unknown_score !== undefined);
    $("calibration-note").textContent = calibrated
      ? "Percentages are calibrated: 80 % means right about 8 times in 10."
      : "This model version is not calibrated: percentages are its raw scores.";
    show($("calibration-note"), answers.length > 0);
  }

  function reset() {
    for (const url of urls) URL.revokeObjectURL(url);
    urls = [];
    cards.replaceChildren();
    show($("error"), false);
    show($("result-meta"), false);
    show($("calibration-note"), false);
  }

  function choose(files) {
    chosen = Array.from(files || []);
    reset();
    show($("placeholder"), chosen.length === 0);
    $("file-name").textContent = chosen.length === 1
      ? `${chosen[0].name} (${Math.ceil(chosen[0].size / 1024)} kB)`
      : chosen.length > 1 ? `${chosen.length} photos` : "";
    submit.disabled = chosen.length === 0;
    if (chosen.length) classify();
  }

  async function classify() {
    if (!chosen.length) return;
    reset();
    show($("placeholder"), false);
    if (chosen.length > MAX_BATCH_FILES) {
      showError("too_many_files", `${chosen.length} photos chosen`);
      return;
    }
    const files = chosen;
    const cardsFor = files.map((file, index) => newCard(file, index));
    const tooLarge = files.findIndex((file) => file.size > MAX_UPLOAD_BYTES);
    if (files.length === 1 && tooLarge === 0) {
      cardError(cardsFor[0], "too_large", `${files[0].name} has ${files[0].size.toLocaleString()} bytes`);
      return;
    }
    const single = files.length === 1;
    const body = new FormData();
    for (const file of files) body.append(single ? "file" : "files", file, file.name || "upload");
    submit.disabled = true;
    show(spinner, true);
    try {
      const response = await fetch(single ? "predict" : "predict_batch", {
        method: "POST",
        body,
        headers: CLIENT_HEADERS,
      });
      const data = await readJson(response);
      if (response.ok && data && single && Array.isArray(data.top3)) {
        cardAnswer(cardsFor[0], files[0], data);
        meta(data, 1);
      } else if (response.ok && data && Array.isArray(data.results)) {
        for (const item of data.results) {
          const card = cardsFor[item.index];
          if (!card) continue;
          if (item.ok) cardAnswer(card, files[item.index], item);
          else cardError(card, item.reason, item.error);
        }
        meta(data, files.length);
      } else {
        const reason = (data && data.reason) || (response.status === 413 ? "too_large" : "");
        const detail = (data && data.error) || `HTTP ${response.status}`;
        if (single) cardError(cardsFor[0], reason, detail);
        else {
          cards.replaceChildren();
          showError(reason, detail);
        }
      }
    } catch (err) {
      cards.replaceChildren();
      showError("network", String(err));
    } finally {
      submit.disabled = chosen.length === 0;
      show(spinner, false);
    }
  }

  async function loadModel() {
    try {
      const response = await fetch("model");
      const info = await response.json();
      setModelBadge(info.model_name, info.loaded ? info.model_version : null);
      if (Array.isArray(info.labels)) modelLabels = info.labels.map(String);
    } catch {
      setModelBadge(null, null);
    }
  }

  input.addEventListener("change", () => choose(input.files));
  $("choose-button").addEventListener("click", () => input.click());
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    classify();
  });

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
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) choose(files);
  });

  loadModel();
})();
